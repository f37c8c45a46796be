"""PII scrubbing: e-mail addresses, phone numbers, Chinese resident IDs and IP addresses become
typed placeholders (``<EMAIL>``, ``<PHONE>``, ``<CN_ID>``, ``<IP>``), and every replacement is counted.

Patterns are checked before they replace: a Chinese ID must pass its ISO 7064 check digit and
an IP address must parse, so order numbers and version strings survive.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from typing import Callable

from lmforge.data.config import PIIConfig

_EMAIL = re.compile(r"(?<![0-9A-Za-z_.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![0-9A-Za-z_-])")
# 18-character resident ID: 6-digit region (first digit 1-9), 8-digit birth date, 3-digit sequence, check char.
_CN_ID = re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx](?![0-9A-Za-z])")
_CN_MOBILE = re.compile(r"(?<![\d+])(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}(?!\d)")
# Boundaries are ASCII classes on purpose: CJK characters count as \w, and Chinese text puts
# numbers right next to them ("手机13812345678").
# International (+CC ...), North-American (555) 123-4567 / 555-123-4567, and Chinese landlines 010-12345678.
_PHONE = re.compile(
    r"(?<![0-9A-Za-z_+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4}"
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"
    r"|\d{3}[.-]\d{3}[.-]\d{4}"
    r"|0\d{2,3}-\d{7,8}"
    r")(?![0-9A-Za-z_])"
)
_IPV4 = re.compile(r"(?<![0-9A-Za-z_.])(?:\d{1,3}\.){3}\d{1,3}(?![0-9A-Za-z_.]|\.\d)")
_IPV6 = re.compile(r"(?<![0-9A-Za-z_:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Za-z_:])")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def valid_cn_id(number: str) -> bool:
    """True if an 18-character Chinese resident ID has the right ISO 7064 MOD 11-2 check character."""
    if len(number) != 18 or not number[:17].isdigit():
        return False
    total = sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS))
    return _ID_CHECK[total % 11] == number[17].upper()


def _valid_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


class PIIScrubber:
    """Replaces PII in a text; ``scrub`` returns the new text and counts per placeholder type."""

    def __init__(self, config: PIIConfig) -> None:
        # Order matters: IDs before phone numbers (an ID contains mobile-like digit runs),
        # e-mails before anything that could match inside them.
        candidates: list[tuple[bool, str, re.Pattern[str], Callable[[str], bool]]] = [
            (config.email, "EMAIL", _EMAIL, lambda s: True),
            (config.cn_id, "CN_ID", _CN_ID, valid_cn_id),
            (config.ip, "IP", _IPV4, _valid_ip),
            (config.ip, "IP", _IPV6, lambda s: s.count(":") >= 2 and _valid_ip(s)),
            (config.cn_mobile, "PHONE", _CN_MOBILE, lambda s: True),
            (config.phone, "PHONE", _PHONE, lambda s: sum(c.isdigit() for c in s) >= 7),
        ]
        self._patterns = [(kind, pattern, valid) for on, kind, pattern, valid in candidates if on]

    def scrub(self, text: str) -> tuple[str, Counter[str]]:
        counts: Counter[str] = Counter()
        for kind, pattern, valid in self._patterns:

            def replace(match: re.Match[str], kind: str = kind, valid: Callable[[str], bool] = valid) -> str:
                if not valid(match.group(0)):
                    return match.group(0)
                counts[kind] += 1
                return f"<{kind}>"

            text = pattern.sub(replace, text)
        return text, counts
