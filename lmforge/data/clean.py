"""Text normalisation applied to every record before any rule looks at it."""

from __future__ import annotations

import re
import unicodedata

from lmforge.data.config import CleanConfig

# C0/C1 controls except tab and newline; zero-width and direction marks; BOM; soft hyphen.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_LINE_SEPARATORS = re.compile("\r\n?|[\u2028\u2029\x85]")
_BLANK_LINES = re.compile(r"\n{3,}")
# Full-width ASCII variants U+FF01..U+FF5E map to U+0021..U+007E; U+3000 is the ideographic space.
_FULLWIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


def clean_text(text: str, config: CleanConfig) -> str:
    """Normalise Unicode, drop invisible characters and tidy whitespace (paragraph breaks survive)."""
    text = _LINE_SEPARATORS.sub("\n", text)
    if config.nfkc and not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    if config.fullwidth_to_halfwidth:
        text = text.translate(_FULLWIDTH)
    if config.remove_control:
        text = _INVISIBLE.sub("", text)
    if config.normalize_whitespace:
        # str.split() knows every Unicode space and is several times faster than a regex here.
        text = "\n".join(" ".join(line.split()) for line in text.split("\n"))
        if "\n\n\n" in text:
            text = _BLANK_LINES.sub("\n\n", text)
        text = text.strip()
    return text
