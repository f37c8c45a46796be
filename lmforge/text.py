"""Checks that a string is text a model can read, shared by data preparation and serving."""

from __future__ import annotations

import unicodedata
from typing import Optional

# Control, format (zero-width, BOM) and separator characters: a text made only of these carries
# nothing a model could read.
_INVISIBLE = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})


def lone_surrogate(text: str) -> Optional[str]:
    """Where ``text`` holds a lone surrogate (what a JSON escape like "\\ud800" decodes to: not text,
    and not writable as UTF-8), as a short description; None for proper text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"lone surrogate U+{ord(exc.object[exc.start]):04X} at character {exc.start} (not valid Unicode text)"
    return None


def text_problem(text: str) -> Optional[str]:
    """Why ``text`` cannot be given to a model (empty, a lone surrogate, nothing visible), or None."""
    if not text.strip():
        return "empty text"
    surrogate = lone_surrogate(text)
    if surrogate:
        return surrogate
    if all(unicodedata.category(ch) in _INVISIBLE for ch in text):
        return "no visible characters (only control, zero-width or space characters)"
    return None
