"""Script-aware text measures: CJK text has no spaces, so a "unit" there is one character.

A unit is one CJK character (Han, kana) or one whitespace-free run of other characters.
Length and repetition rules count units, so the same thresholds work for Chinese and English.
"""

from __future__ import annotations

import re
from functools import cached_property

# Han (incl. extension A and compatibility), kana, CJK punctuation-free ideographs.
CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_UNIT = re.compile(f"[{CJK_CHARS}]|[^\\s{CJK_CHARS}]+")
_CJK = re.compile(f"[{CJK_CHARS}]")
_LETTER = re.compile(r"[^\W\d_]")
TERMINAL_PUNCT = (".", "!", "?", '"', "'", "”", "’", "。", "！", "？", "…", "」", "』", "；")


def units(text: str) -> list[str]:
    """Split into units: each CJK character alone, other scripts by whitespace."""
    return _UNIT.findall(text)


def cjk_ratio(text: str) -> float:
    """Share of CJK characters among letters (0 for text without letters)."""
    letters = len(_LETTER.findall(text))
    return len(_CJK.findall(text)) / letters if letters else 0.0


def is_cjk(text: str) -> bool:
    return cjk_ratio(text) >= 0.3


class TextStats:
    """Measures of one text, computed once and shared by the rules that need them."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def units(self) -> list[str]:
        return units(self.text)

    @cached_property
    def cjk(self) -> bool:
        return is_cjk(self.text)

    @cached_property
    def lines(self) -> list[str]:
        return [line for line in self.text.split("\n") if line.strip()]

    @cached_property
    def paragraphs(self) -> list[str]:
        return [p for p in re.split(r"\n\s*\n", self.text) if p.strip()]
