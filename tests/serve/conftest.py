"""Tiny model directories for the serving tests: random weights, real tokenizers trained on real corpora."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from lmforge.corpora import get_corpus
from lmforge.model.heads import TaskModel
from lmforge.model.modeldir import model_dir_config, save_model_dir
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.tokenizer import build_tokenizer, canonical_wordpiece_ids, load_tokenizer, make_tokenizer_config

TAGS = ["B-PER", "I-PER", "O"]


def review_texts(n: int) -> list[str]:
    return [r.text for r in itertools.islice(get_corpus("reviews").records(), n) if r.text]


def _tokenizer(kind: str, out: Path):
    tok, trainer = build_tokenizer(make_tokenizer_config({"kind": kind, "vocab_size": 400, "progress": False}))
    tok.train_from_iterator(review_texts(400), trainer)
    tok = canonical_wordpiece_ids(tok)  # reproducible ids (WordPiece; other kinds unchanged)
    path = out / f"{kind}.json"
    tok.save(str(path))
    return load_tokenizer(path)


def tiny_config(vocab: int, decoder: bool = False) -> TransformerConfig:
    return TransformerConfig(vocab_size=vocab, max_positions=64, n_layers=2, d_model=32, n_heads=4, d_ff=64,
                             causal=decoder, norm="pre" if decoder else "post",
                             activation="gelu_tanh" if decoder else "gelu", type_vocab_size=0 if decoder else 2,
                             dropout=0.0, attn_dropout=0.0)


def make_model_dir(out: Path, tokenizer, kind: str, seed: int = 0) -> Path:
    """kind: classifier (mlm + classification with BERT's pooler), tagger (tagging) or decoder (causal LM)."""
    torch.manual_seed(seed)
    cfg = tiny_config(tokenizer.vocab_size, decoder=kind == "decoder")
    if kind == "classifier":
        model = TaskModel(cfg, "classification", ["negative", "positive"], ("mlm",), "first", pooler=True)
    elif kind == "tagger":
        model = TaskModel(cfg, "tagging", TAGS)
    else:
        model = TaskModel(cfg, heads=("lm",))
    with torch.no_grad():  # spread the logits so that answers are not ties
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return save_model_dir(model, model_dir_config(model), out, tokenizer)


@pytest.fixture(scope="session")
def serve_models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve_models")
    wordpiece, bpe = _tokenizer("wordpiece", root), _tokenizer("bpe", root)
    return {"classifier": make_model_dir(root / "classifier", wordpiece, "classifier"),
            "tagger": make_model_dir(root / "tagger", wordpiece, "tagger"),
            "decoder": make_model_dir(root / "decoder", bpe, "decoder")}
