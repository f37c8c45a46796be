"""Sentence boundaries in Chinese and Latin-script text, as character offsets.

A sentence ends at 。！？ (full-width, or the ASCII !? that NFKC folds them into), at an ellipsis,
or at . ! ? followed by whitespace; closing quotes and brackets stay with the sentence they close.
A full stop with no space after it (3.14, U.S.A., www.example.com) is not an end.
"""

from __future__ import annotations

import re

_CLOSERS = "\"'”’」』)）》】"
_END = re.compile(f"(?:[。！？!?]+|…+|\\.{{3,}}|[.!?](?=\\s))[{re.escape(_CLOSERS)}]*\\s*")


def sentence_starts(text: str) -> list[int]:
    """Character offsets where sentences start: always 0, then after each sentence end that has text after it."""
    starts = [0]
    for match in _END.finditer(text):
        end = match.end()
        if end < len(text):
            starts.append(end)
    return starts


def split_sentences(text: str) -> list[str]:
    starts = sentence_starts(text) + [len(text)]
    return [text[a:b] for a, b in zip(starts, starts[1:]) if text[a:b].strip()]
