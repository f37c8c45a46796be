"""Typed configuration of `lmforge tokenizer train` and `lmforge data tokenize`."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from lmforge.config import Section

TokenizerKind = Literal["wordpiece", "bpe", "bpe-bert", "unigram"]
UnicodeForm = Literal["nfc", "nfd", "nfkc", "nfkd"]

# Lower-casing by kind when the user says nothing: BERT's uncased WordPiece and the BERT-style BPE
# lower-case, GPT-2's byte-level BPE and SentencePiece-style Unigram keep case.
_DEFAULT_LOWERCASE = {"wordpiece": True, "bpe": False, "bpe-bert": True, "unigram": False}


class TokenizerTrainConfig(Section):
    """Configuration of `lmforge tokenizer train` (train one, or adopt an existing one with `from_file`)."""

    data: Optional[str] = Field(None, description="A prepared directory (train/validation.jsonl) or one text/jsonl file.")
    out: Optional[str] = Field(None, description="Directory for tokenizer.json, meta.json, coverage.json.")
    kind: TokenizerKind = "wordpiece"
    vocab_size: int = Field(8000, ge=100, le=1_000_000)
    min_frequency: int = Field(2, ge=1, description="Pairs (BPE) / words (WordPiece) seen fewer times are not merged.")
    special_tokens: list[str] = Field(default_factory=list, description="Extra special tokens added after the kind's own.")
    lowercase: Optional[bool] = Field(None, description="Default: true for wordpiece, false otherwise.")
    strip_accents: Optional[bool] = Field(None, description="Default: follows lowercase, as in BERT.")
    unicode_normalization: Optional[UnicodeForm] = Field(
        "nfkc", description="Applied before the kind's own rules; nfkc matches `data prepare`, so raw text at inference is normalised as the training text was."
    )
    split_cjk: bool = Field(
        True, description="WordPiece: split off every CJK character as BERT does (Chinese becomes characters); "
                          "false learns multi-character Chinese pieces (words and phrases) like any other script.")
    text_field: str = Field("text", description="Field holding the text in JSON lines input.")
    from_file: Optional[str] = Field(None, description="Use this tokenizer.json or BERT vocab.txt instead of training.")
    progress: bool = True

    @field_validator("special_tokens")
    @classmethod
    def _tokens_not_empty(cls, value: list[str]) -> list[str]:
        if any(not token.strip() for token in value):
            raise ValueError("special tokens must be non-empty strings")
        if len(set(value)) != len(value):
            raise ValueError("special tokens must be distinct")
        return value

    @field_validator("min_frequency")
    @classmethod
    def _not_for_unigram(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("kind") == "unigram":
            raise ValueError("the unigram trainer has no minimum frequency; leave it out for kind=unigram")
        return value

    @model_validator(mode="after")
    def _resolve_defaults(self) -> "TokenizerTrainConfig":
        if self.lowercase is None:
            object.__setattr__(self, "lowercase", _DEFAULT_LOWERCASE[self.kind])
        if self.strip_accents is None:
            object.__setattr__(self, "strip_accents", self.lowercase)
        return self


class TokenizeConfig(Section):
    """Configuration of `lmforge data tokenize`: prepared splits -> packed token shards."""

    data: Optional[str] = Field(None, description="A prepared directory holding train/validation/test splits.")
    tokenizer: Optional[str] = Field(None, description="A tokenizer directory, tokenizer.json or BERT vocab.txt.")
    out: Optional[str] = None
    splits: list[str] = Field(default_factory=lambda: ["train", "validation", "test"], min_length=1)
    text_field: str = "text"
    workers: int = Field(1, ge=1, le=256)
    chunk_docs: int = Field(512, ge=1, description="Documents per unit of work sent to a worker.")
    shard_bytes: int = Field(128 * 2**20, ge=1024, description="Cap on one shard file; documents never straddle shards.")
    overwrite: bool = Field(False, description="Replace shards made with another tokenizer in --out.")
    progress: bool = True
