"""Typed configuration of `lmforge evaluate`."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from lmforge.config import Section


class TfidfConfig(Section):
    analyzer: Literal["auto", "char", "word"] = Field(
        "auto", description="auto: character n-grams when most training text is CJK, word n-grams otherwise."
    )
    ngram_min: int = Field(1, ge=1, description="Shortest n-gram (characters or words).")
    ngram_max: Optional[int] = Field(None, ge=1, description="Default 3 for characters, 2 for words.")
    C: float = Field(
        4.0, gt=0, description="Inverse regularisation of the logistic regression (C=4 measured in data.md)."
    )
    max_iter: int = Field(1000, gt=0, description="Solver iterations of the logistic regression.")

    @model_validator(mode="after")
    def _ngram_order(self) -> "TfidfConfig":
        if self.ngram_max is not None and self.ngram_max < self.ngram_min:
            raise ValueError(f"ngram_max ({self.ngram_max}) is below ngram_min ({self.ngram_min})")
        return self


class BaselinesConfig(Section):
    enabled: bool = Field(
        False, description="Score the majority-class and TF-IDF baselines on the same split."
    )
    max_train_examples: Optional[int] = Field(
        None, gt=0, description="Train the baselines on a seeded random subset of this size (quick checks)."
    )
    seed: int = Field(0, description="Seed of the training subset and the solver.")
    tfidf: TfidfConfig = Field(default_factory=TfidfConfig)


class EvaluateConfig(Section):
    """Score systems on one split of a prepared directory and write report.json/md/html with plots."""

    data: Optional[str] = Field(None, description="A `lmforge data prepare` output directory.")
    models: list[str] = Field(
        default_factory=list, description="Fine-tuned model dirs; several are averaged into one ensemble row."
    )
    split: Literal["test", "validation"] = Field(
        "test", description="The split every row of the report is scored on."
    )
    out: Optional[str] = Field(None, description="Report directory (default: DATA/evaluation).")
    curves: Optional[str] = Field(None, description="A metrics.jsonl of training/validation losses to plot.")
    ece_bins: int = Field(
        15, ge=1, description="Equal-width confidence bins of the expected calibration error."
    )
    task: Optional[Literal["classification", "multilabel", "regression", "retrieval"]] = Field(
        None, description="What the labels are, for the baselines: one class, a set of classes (a JSON list), or "
        "a number; retrieval: each query of a text-pair split searches the split's passages (recall@k, MRR, BM25). "
        "None: that of the first model given; else multilabel when the train labels are lists, "
        "classification otherwise (a number is a class name unless task=regression).")
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    progress: bool = Field(True, description="Print the summary on the terminal.")
