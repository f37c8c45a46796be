"""Typed configuration of `lmforge data prepare`, and the presets that choose its rules by purpose.

Every threshold defaults to its published reference value (Gopher: Rae et al. 2021, appendix A;
C4: Raffel et al. 2020, section 2.2) so a user can cite what ran.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from lmforge.config import Section

PresetName = Literal["web", "clean", "labelled"]


class InputConfig(Section):
    paths: list[str] = Field(default_factory=list, description="Files, folders, globs or corpus:NAME.")
    text_field: str = Field("text", description="Field holding the text in JSON/CSV/Parquet (dots for nesting).")
    label_field: Optional[str] = Field(None, description="Field holding the label, if the data is labelled.")
    pair_field: Optional[str] = Field(
        None, description="Field holding the second text of a text pair (question matching, NLI), written as "
        "`pair`; dedup and label conflicts key on the pair, split groups on its sides (split.pair_sides).")
    txt_mode: Literal["line", "block"] = Field("line", description="A .txt document per line or per blank-line block.")
    max_record_chars: int = Field(1_000_000, gt=0, description="Longer records are rejected as record_too_long.")


class CleanConfig(Section):
    nfkc: bool = True
    remove_control: bool = Field(True, description="Drop control and invisible characters (zero-width, BOM...).")
    normalize_whitespace: bool = True
    fullwidth_to_halfwidth: bool = Field(False, description="Fold full-width ASCII forms and U+3000 to half-width.")


class LengthRule(Section):
    enabled: bool = True
    min_chars: int = Field(1, ge=0)
    max_chars: Optional[int] = Field(None, gt=0)
    min_units: int = Field(0, ge=0, description="Units: CJK characters plus words of other scripts.")
    max_units: Optional[int] = Field(None, gt=0)


class EncodingRule(Section):
    enabled: bool = True
    max_replacement_ratio: float = Field(0.01, ge=0, le=1, description="Share of U+FFFD characters tolerated.")


class GopherQualityRule(Section):
    enabled: bool = False
    min_words: int = Field(50, ge=0)
    max_words: int = Field(100_000, gt=0)
    min_avg_word_length: float = Field(3.0, ge=0, description="Skipped for CJK text, where a unit is one character.")
    max_avg_word_length: float = Field(10.0, gt=0)
    max_symbol_word_ratio: float = Field(0.1, ge=0, description="Hash signs and ellipses per word.")
    max_bullet_lines_ratio: float = Field(0.9, ge=0, le=1)
    max_ellipsis_lines_ratio: float = Field(0.3, ge=0, le=1)
    min_alpha_words_ratio: float = Field(0.8, ge=0, le=1)
    min_stop_words: int = Field(2, ge=0, description="English stop words; skipped for CJK text; set 0 for other languages.")


class GopherRepetitionRule(Section):
    enabled: bool = False
    min_units: int = Field(50, ge=0, description="Shorter texts hold too few n-grams to judge (Gopher: 50 words).")
    max_dup_line_ratio: float = Field(0.3, ge=0, le=1)
    max_dup_para_ratio: float = Field(0.3, ge=0, le=1)
    max_dup_line_char_ratio: float = Field(0.2, ge=0, le=1)
    max_dup_para_char_ratio: float = Field(0.2, ge=0, le=1)
    max_top_ngram_char_ratio: dict[int, float] = Field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    max_dup_ngram_char_ratio: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )


class C4Rule(Section):
    enabled: bool = False
    drop_lines_without_terminal_punct: bool = True
    min_words_per_line: int = Field(3, ge=0, description="CJK lines count characters.")
    min_sentences: int = Field(5, ge=0)
    max_word_length: int = Field(1000, gt=0)
    drop_javascript_lines: bool = True
    drop_policy_lines: bool = True
    reject_lorem_ipsum: bool = True
    reject_curly_bracket: bool = True


class LanguageRule(Section):
    enabled: bool = False
    languages: list[str] = Field(default_factory=lambda: ["en", "zh"], description="ISO 639-1 codes to keep.")
    min_confidence: float = Field(0.5, ge=0, le=1)


class PIIConfig(Section):
    enabled: bool = False
    email: bool = True
    phone: bool = True
    cn_mobile: bool = True
    cn_id: bool = True
    ip: bool = True


class FilterConfig(Section):
    encoding: EncodingRule = Field(default_factory=EncodingRule)
    length: LengthRule = Field(default_factory=LengthRule)
    c4: C4Rule = Field(default_factory=C4Rule)
    gopher_quality: GopherQualityRule = Field(default_factory=GopherQualityRule)
    gopher_repetition: GopherRepetitionRule = Field(default_factory=GopherRepetitionRule)
    language: LanguageRule = Field(default_factory=LanguageRule)


LSH_PRESETS: dict[str, tuple[int, int, int]] = {
    # name: (num_perm, bands, rows). A pair of similarity J becomes a candidate with probability
    # 1 - (1 - J**rows)**bands; tuned so pairs at the split-grouping level (0.5) are found:
    "fast": (64, 21, 3),  # P(J=0.5) = 0.94, P(J=0.8) = 1.00
    "default": (128, 42, 3),  # P(J=0.5) = 0.996
    "thorough": (256, 64, 4),  # P(J=0.5) = 0.98, fewer low-similarity candidates to verify
}


class DedupConfig(Section):
    exact: bool = True
    near: bool = True
    lsh_preset: Optional[Literal["fast", "default", "thorough"]] = Field(
        "default", description="Sets num_perm/bands/rows; set it to null to give them explicitly."
    )
    num_perm: int = Field(128, gt=0, le=1024)
    bands: int = Field(42, gt=0)
    rows: int = Field(3, gt=0)
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard at or above which near duplicates are removed.")
    word_ngram: int = Field(5, gt=0, description="Shingle size in words for space-separated scripts.")
    char_ngram: int = Field(5, gt=0, description="Shingle size in characters for CJK text.")
    verify: Literal["signature", "exact"] = Field(
        "exact", description="Check LSH candidates by exact shingle Jaccard (re-reads candidates) or the signature estimate."
    )
    seed: int = 1

    @model_validator(mode="after")
    def _apply_preset(self) -> "DedupConfig":
        explicit = {"num_perm", "bands", "rows"} & self.model_fields_set
        if explicit and self.lsh_preset is not None:
            preset_values = dict(zip(("num_perm", "bands", "rows"), LSH_PRESETS[self.lsh_preset]))
            if all(getattr(self, key) == preset_values[key] for key in explicit):
                pass  # a resolved config written back: the values agree with the preset
            elif "lsh_preset" in self.model_fields_set:
                raise ValueError("give either lsh_preset or num_perm/bands/rows, not both")
            else:
                object.__setattr__(self, "lsh_preset", None)  # explicit parameters win over the default preset
        if self.lsh_preset is not None:
            num_perm, bands, rows = LSH_PRESETS[self.lsh_preset]
            object.__setattr__(self, "num_perm", num_perm)
            object.__setattr__(self, "bands", bands)
            object.__setattr__(self, "rows", rows)
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands*rows ({self.bands}*{self.rows}) must not exceed num_perm ({self.num_perm})")
        return self


class SplitConfig(Section):
    train: float = Field(0.8, ge=0, le=1)
    validation: float = Field(0.1, ge=0, le=1)
    test: float = Field(0.1, ge=0, le=1)
    seed: int = 0
    stratify: bool = Field(True, description="Keep label proportions equal across splits when labels exist.")
    group_threshold: float = Field(
        0.5, gt=0, le=1, description="Texts at or above this Jaccard stay in one split even if not removed."
    )
    pair_sides: Literal["text", "both"] = Field(
        "text", description="Text pairs: which sides keep their pairs in one split. text: the same question "
        "never sits in two splits (answer templates and candidates may recur); both: no text on either side "
        "does, which joins every question that shares a candidate.")

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> "SplitConfig":
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + validation + test must be 1.0, got {total:g}")
        return self


class OutputConfig(Section):
    format: Literal["jsonl", "parquet"] = "jsonl"
    rejected_text_chars: int = Field(2000, ge=0, description="How much of a rejected text to keep in rejected.jsonl.")


class PrepareConfig(Section):
    """Configuration of `lmforge data prepare`."""

    input: InputConfig = Field(default_factory=InputConfig)
    out: Optional[str] = Field(None, description="Output directory (required).")
    preset: Optional[PresetName] = Field(None, description="Default: labelled with a label or pair field (task data), else clean.")
    workers: int = Field(1, ge=1, le=256, description="Processes for reading, cleaning and hashing; output is identical for any count.")
    chunk_size: int = Field(1000, ge=1, description="Records per work unit sent to a worker.")
    clean: CleanConfig = Field(default_factory=CleanConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    pii: PIIConfig = Field(default_factory=PIIConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    progress: bool = Field(True, description="Progress bar (on a terminal) and the summary table.")

    @field_validator("out")
    @classmethod
    def _out_not_empty(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not value.strip():
            raise ValueError("must be a directory path")
        return value

    @model_validator(mode="after")
    def _group_below_removal(self) -> "PrepareConfig":
        if self.split.group_threshold > self.dedup.threshold:
            raise ValueError(
                f"split.group_threshold ({self.split.group_threshold}) must not exceed "
                f"dedup.threshold ({self.dedup.threshold})"
            )
        return self


# What each preset switches on; laid under the user's own file and overrides.
PRESETS: dict[str, dict[str, Any]] = {
    "web": {
        "filters": {
            "length": {"min_units": 50},
            "c4": {"enabled": True},
            "gopher_quality": {"enabled": True},
            "gopher_repetition": {"enabled": True},
            "language": {"enabled": True},
        },
        "pii": {"enabled": True},
    },
    "clean": {
        "filters": {
            "length": {"min_units": 5},
            # Light: duplicated lines, paragraphs and long n-grams only; the top-n-gram shares also
            # flag ordinary news sentences that repeat a name or slogan.
            "gopher_repetition": {"enabled": True, "max_top_ngram_char_ratio": {}},
        },
        "pii": {"enabled": True},
    },
    "labelled": {
        "filters": {"length": {"max_chars": 20_000}},
    },
}


def resolve_preset(layers: list[dict[str, Any]]) -> str:
    """The preset the user asked for, or the default for their data: labelled if a label or a pair field
    is set (task data: a retrieval query of one word is a query, not a fragment to filter out)."""
    preset: Optional[str] = None
    task_field: Optional[str] = None
    for layer in layers:
        preset = layer.get("preset", preset)
        given = layer.get("input") or {}
        task_field = given.get("label_field") or given.get("pair_field") or task_field
    if preset is None:
        preset = "labelled" if task_field else "clean"
    return preset
