"""`lmforge compress`: a smaller model directory from a fine-tuned one, by dropping the top blocks and
pruning attention heads and feed-forward units (lmforge.finetune.prune) and/or pruning the vocabulary
(lmforge.model.vocab_prune), in that order; the result is a model directory like any other (predict, serve, export)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator, Optional

from lmforge.config import ConfigError
from lmforge.data.prepared import find_split, iter_split
from lmforge.finetune.prune import prune_units
from lmforge.model.vocab_prune import prune_vocabulary

__all__ = ["compress", "corpus_texts"]


def corpus_texts(data: str) -> Iterator[str]:
    """Every text (and second text of a pair) of every split of a prepared directory."""
    for split in ("train", "validation", "test"):
        if find_split(data, split) is not None:
            for row in iter_split(data, split):
                yield row["text"]
                if isinstance(row.get("pair"), str):
                    yield row["pair"]


def compress(model: str, out: str, *, ffn_keep: Optional[float] = None, head_keep: Optional[float] = None,
             layers: Optional[int] = None, data: Optional[str] = None, vocab_from: Optional[str] = None) -> list[str]:
    """Write ``out``; returns what was done, one line each."""
    structured = ffn_keep is not None or head_keep is not None
    if not structured and layers is None and vocab_from is None:
        raise ConfigError("compress: give --layers N, --ffn-keep/--head-keep FRACTION --data DATA and/or "
                          "--vocab-from DATA")
    if structured and not data:
        raise ConfigError("compress --ffn-keep/--head-keep: give --data DATA, the labelled data to rank them on")
    done = []
    source = model
    Path(out).resolve().parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=Path(out).resolve().parent) as scratch:
        if structured or layers is not None:
            target = Path(scratch) / "pruned" if vocab_from else Path(out)
            sizes = prune_units(source, data, target, ffn_keep=1.0 if ffn_keep is None else ffn_keep,
                                head_keep=1.0 if head_keep is None else head_keep, layers=layers)
            done.append(f"pruned {source}: blocks {sizes['layers'][0]} -> {sizes['layers'][1]}, attention heads "
                        f"{sizes['heads'][0]} -> {sizes['heads'][1]} and feed-forward units {sizes['d_ff'][0]} -> "
                        f"{sizes['d_ff'][1]} per block, parameters {sizes['parameters'][0]:,} -> "
                        f"{sizes['parameters'][1]:,}")
            source = str(target)
        if vocab_from is not None:
            counts = prune_vocabulary(source, corpus_texts(vocab_from), out)
            done.append(f"vocabulary {counts['of']:,} -> {counts['kept']:,} tokens (the tokens of {vocab_from} "
                        f"and {counts['special']} special ones)")
    done.append(f"compressed {model} -> {out}")
    return done
