"""Typed configuration of fine-tuning components (augmentation so far; task and method configs join here)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from lmforge.config import Section

Operation = Literal["synonym_replacement", "random_insertion", "random_swap", "random_deletion"]


class AugmentConfig(Section):
    """EDA-style augmentation of training texts (Wei & Zou 2019); their suggested ratio is 0.1."""

    enabled: bool = False
    copies: int = Field(
        4, ge=1, description="Augmented copies per training example (EDA: 4 for small, 1-2 for large sets)."
    )
    operations: list[Operation] = Field(
        default_factory=lambda: ["random_insertion", "random_swap", "random_deletion"],
        min_length=1,
        description="Edits taken in turn; add synonym_replacement when a synonym file is given.",
    )
    synonyms: Optional[str] = Field(
        None, description="Synonym file: one group of synonyms per line, words separated by spaces or tabs."
    )
    synonym_ratio: float = Field(0.1, ge=0, le=1, description="Share of words replaced by a synonym.")
    insertion_ratio: float = Field(
        0.1, ge=0, le=1, description="Words inserted, as a share of the text's words."
    )
    swap_ratio: float = Field(0.1, ge=0, le=1, description="Swaps, as a share of the text's words.")
    deletion_prob: float = Field(0.1, ge=0, le=1, description="Probability of deleting each word.")
    seed: int = 0
