"""The record every reader yields: text, label and fields with the file and line it came from, or the
reason it could not be read. A leaf module, so built-in corpora and readers both use it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

__all__ = ["RawRecord"]


@dataclass
class RawRecord:
    source: str
    line: int  # 1-based line (or row) where the record starts; 0 for a whole-file record
    text: Optional[str] = None
    label: Any = None
    pair: Optional[str] = None  # the second text of a text pair (input.pair_field)
    fields: dict[str, Any] = field(default_factory=dict)
    error: Optional[str] = None  # reason the record could not be read
    detail: str = ""
    json_line: Optional[str] = None  # a JSON line not parsed yet (parsing is left to worker processes)
