"""Prompt templates: how a prompt-based classifier reads its input (PET, Schick & Schuetze 2021;
LM-BFF, Gao et al. 2021). A template such as ``"{text}总之很[MASK]。"`` wraps each text around a
mask; the model's MLM head scores one label word per class at that mask (the verbalizer,
lmforge.model.heads.VerbalizerHead), so a pretrained encoder starts classifying with what it already
knows about words instead of a randomly initialised head.

A template holds ``{text}`` once, optionally ``{pair}`` (the second text of a pair task) once, and
``[MASK]`` once: the placeholder of the tokenizer's own mask token, whatever it is called. Fine-tuning,
evaluation, serving and explanations all encode through ``PromptTemplate.encode``, so the model sees the
same input everywhere. Only the texts are ever cut, never the template: a long review loses its end
(or its middle, with ``head+tail``), not the mask. A mask token typed inside a text is read as the
unknown token, so the template's mask is the only one the head can find. The work is linear in the
texts' length (each is tokenized once alone, for its cut, and once inside the template).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from tokenizers import Encoding, Tokenizer

from lmforge.tokenize.tokenizer import special_token_ids
from lmforge.tokenize.truncate import HEAD_SHARE, Truncation

__all__ = ["MASK", "PromptTemplate", "Prompted", "verbalizer_ids"]

MASK = "[MASK]"
_PARTS = re.compile(r"(\{text\}|\{pair\}|\[MASK\])")


@dataclass(frozen=True)
class Prompted:
    """One encoded input (special tokens added, one segment) and, per position, whether the template put
    it there (special tokens included): explanations attribute only the texts' tokens."""

    ids: list[int]
    tokens: list[str]
    template_mask: list[int]


class PromptTemplate:
    def __init__(self, template: str) -> None:
        parts = [p for p in _PARTS.split(template) if p]
        for slot, least in (("{text}", 1), ("{pair}", 0), (MASK, 1)):
            n = parts.count(slot)
            if n > 1 or n < least:
                raise ValueError(f"prompt template {template!r}: needs {slot} {'exactly' if least else 'at most'} once "
                                 f"(found {n})")
        self.template = template
        self.parts = parts
        self.paired = "{pair}" in parts

    def __repr__(self) -> str:
        return f"PromptTemplate({self.template!r})"

    def fill(self, text: str, pair: Optional[str], mask_token: str) -> tuple[str, list[tuple[int, int]]]:
        """The template with its slots filled, and the character spans of its own parts (words and mask)."""
        out: list[str] = []
        spans: list[tuple[int, int]] = []
        at = 0
        for part in self.parts:
            piece = {"{text}": text, "{pair}": pair or "", MASK: mask_token}.get(part, part)
            if part not in ("{text}", "{pair}"):
                spans.append((at, at + len(piece)))
            out.append(piece)
            at += len(piece)
        return "".join(out), spans

    def encode(self, tok: Tokenizer, texts: Sequence[str], pairs: Optional[Sequence[Optional[str]]],
               max_length: int, truncation: Truncation = "head") -> list[Prompted]:
        """Each text (and pair) inside the template, within ``max_length`` tokens (special tokens
        included). The filled template is tokenized as one string, as pretraining saw running text (a
        tokenizer that marks word starts, such as SentencePiece's, would mark each piece tokenized
        apart); to fit, the texts are cut at token boundaries first: longest first for pairs, and a
        single text's head (or, with ``head+tail``, its first quarter and last three quarters)."""
        if self.paired and (pairs is None or any(p is None for p in pairs)):
            raise ValueError(f"prompt template {self.template!r} has {{pair}}: every example needs a second text")
        if not self.paired and pairs is not None and any(p is not None for p in pairs):
            raise ValueError(f"prompt template {self.template!r} has no {{pair}}, but the examples are text pairs")
        special = special_token_ids(tok)
        if special["mask"] is None:
            raise ValueError("prompt templates need a tokenizer with a mask token; this one has none")
        mask_id = int(special["mask"])
        mask_token = tok.id_to_token(mask_id)
        unk = "" if special["unk"] is None else tok.id_to_token(special["unk"])
        clean = lambda s: s.replace(mask_token, unk)  # noqa: E731  (the template's mask stays the only one)
        texts = [clean(t) for t in texts]
        seconds = [clean(str(p)) for p in pairs] if self.paired and pairs is not None else None
        literal = len(tok.encode(self.fill("", "", mask_token)[0], add_special_tokens=False).ids)
        room = max_length - tok.num_special_tokens_to_add(False) - literal
        if room < (2 if self.paired else 1):
            raise ValueError(f"prompt template {self.template!r}: its tokens leave no room for the text within "
                             f"max_length={max_length}")
        first = tok.encode_batch(texts, add_special_tokens=False)
        second = tok.encode_batch(seconds, add_special_tokens=False) if seconds is not None else None

        def filled(i: int, fit: int) -> tuple[str, list[tuple[int, int]]]:
            b = second[i] if second is not None else None
            keep_a, keep_b = _longest_first(len(first[i].ids), len(b.ids) if b is not None else 0, fit)
            text = _cut(texts[i], first[i], keep_a, truncation if b is None else "head")
            pair = _cut(seconds[i], b, keep_b, "head") if seconds is not None and b is not None else None
            return self.fill(text, pair, mask_token)

        strings = [filled(i, room) for i in range(len(texts))]
        encs = tok.encode_batch([s for s, _ in strings])
        out = []
        for i, enc in enumerate(encs):
            fit = room
            while len(enc.ids) > max_length and fit > 0:  # tokens merged differently in context: cut more
                fit -= len(enc.ids) - max_length
                strings[i] = filled(i, max(fit, 0))
                enc = tok.encode(strings[i][0])
            spans = strings[i][1]
            mask = [1 if special_token or any(a <= start and end <= b for a, b in spans) else 0
                    for special_token, (start, end) in zip(enc.special_tokens_mask, enc.offsets)]
            if enc.ids.count(mask_id) != 1 or len(enc.ids) > max_length:
                raise ValueError(f"prompt template {self.template!r}: example {i} did not encode to one mask within "
                                 f"max_length={max_length}")
            out.append(Prompted(enc.ids, enc.tokens, mask))
        return out


def _longest_first(a: int, b: int, room: int) -> tuple[int, int]:
    """How many tokens of two texts of ``a`` and ``b`` tokens to keep in ``room``: the longer is cut
    first, down to the shorter's length, then both alike (the first keeps the odd one)."""
    if a + b <= room:
        return a, b
    if b == 0:
        return room, 0
    small = min(a, b)
    if small <= room // 2:
        return (room - b, b) if a > b else (a, room - a)
    half = room // 2
    return room - half, half


def _cut(text: str, enc: Encoding, keep: int, truncation: Truncation) -> str:
    """``text`` (encoded as ``enc``) cut at token boundaries to its first ``keep`` tokens, or to its
    first quarter and last three quarters of them (``head+tail``), by the tokens' character offsets."""
    n = len(enc.ids)
    if n <= keep:
        return text
    if keep <= 0:
        return ""
    offsets = enc.offsets
    if truncation == "head":
        return text[: offsets[keep - 1][1]]
    head = round(keep * HEAD_SHARE)
    tail_start = offsets[n - (keep - head)][0]
    front = text[: offsets[head - 1][1]] if head else ""
    # the tail's first word keeps the space that separated it (texts with spaces between words)
    gap = " " if front and not front[-1].isspace() and tail_start > 0 and text[tail_start - 1].isspace() else ""
    return front + gap + text[tail_start:]


def verbalizer_ids(tok: Tokenizer, verbalizer: dict[str, str], labels: Sequence[str]) -> list[int]:
    """The token id of each label's word, in ``labels`` order; every label needs a word that the
    tokenizer reads as one ordinary token of its vocabulary (not [UNK], not a special token; a bare
    word-start mark that a SentencePiece tokenizer puts before a word on its own is dropped), and no two
    labels the same token. Byte-level BPE (GPT-2, RoBERTa) marks a word's leading space in the token:
    give such words with it (" great")."""
    missing = [name for name in labels if name not in verbalizer]
    if missing:
        raise ValueError(f"prompt.verbalizer has no word for label(s) {missing} (labels: {list(labels)})")
    extra = sorted(set(verbalizer) - set(labels))
    if extra:
        raise ValueError(f"prompt.verbalizer names label(s) {extra} that the data does not have (labels: {list(labels)})")
    special = {i for i in special_token_ids(tok).values() if i is not None}
    ids = []
    for name in labels:
        enc = tok.encode(verbalizer[name], add_special_tokens=False)
        found = list(enc.ids)
        while len(found) > 1 and not tok.decode([found[0]]).strip():  # SentencePiece's lone word-start mark
            found.pop(0)
        if len(found) != 1:
            raise ValueError(f"prompt.verbalizer: {name!r} -> {verbalizer[name]!r} is {len(found)} tokens "
                             f"{enc.tokens} for this tokenizer; a label word must be one token")
        if found[0] in special:
            raise ValueError(f"prompt.verbalizer: {name!r} -> {verbalizer[name]!r} is the tokenizer's "
                             f"{tok.id_to_token(found[0])} (unknown or special), not a word of its vocabulary")
        ids.append(found[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"prompt.verbalizer: two labels share a token ({dict(zip(labels, ids))})")
    return ids
