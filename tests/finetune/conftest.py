"""Tiny fine-tuning fixtures: small prepared directories cut from the real built-in corpora, a WordPiece
trained here on a few hundred real sentences, and random-init lmforge model dirs (2 layers, width 32)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch


from lmforge.config import build_config
from lmforge.corpora import get_corpus
from lmforge.model.heads import LanguageModel
from lmforge.model.modeldir import save_model_dir
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.config import TokenizerTrainConfig
from lmforge.tokenize.tokenizer import _add_pair_template, build_tokenizer, canonical_wordpiece_ids, load_tokenizer


def write_prepared(out: Path, rows: list[dict], n_val: int, n_test: int) -> Path:
    """train/validation/test.jsonl + DONE, as `data prepare` leaves them."""
    out.mkdir(parents=True, exist_ok=True)
    splits = {"test": rows[:n_test], "validation": rows[n_test : n_test + n_val], "train": rows[n_test + n_val :]}
    for name, part in splits.items():
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for row in part:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "DONE").write_text(json.dumps({"format_version": 1}))
    return out


def corpus_rows(name: str, n: int, seed: int = 0, max_chars: int = 60) -> list[dict]:
    records = [r for r in get_corpus(name).records() if r.text and len(r.text) <= max_chars]
    random.Random(seed).shuffle(records)
    return [{"text": r.text, **({"label": r.label} if r.label else {}), **(r.fields or {})} for r in records[:n]]


@pytest.fixture(scope="session")
def reviews_small(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("reviews_small"), corpus_rows("reviews", 240), 48, 48)


@pytest.fixture(scope="session")
def seg_small(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("seg_small"), corpus_rows("peoples-daily-seg", 120), 24, 24)


@pytest.fixture(scope="session")
def pos_small(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("pos_small"), corpus_rows("peoples-daily-pos", 120), 24, 24)


@pytest.fixture(scope="session")
def tokenizer_file(tmp_path_factory) -> Path:
    """WordPiece (vocab 700) trained on 400 real sentences (reviews + People's Daily)."""
    texts = [r["text"] for r in corpus_rows("reviews", 200, max_chars=200) + corpus_rows("peoples-daily", 200, max_chars=200)]
    cfg = build_config(TokenizerTrainConfig, {"kind": "wordpiece", "vocab_size": 700, "min_frequency": 1,
                                              "progress": False}, source="test")
    tok, trainer = build_tokenizer(cfg)
    tok.train_from_iterator(texts, trainer)
    tok = canonical_wordpiece_ids(tok)  # the same ids every session (the trainer's tail order is random)
    _add_pair_template(tok)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def tiny_arch(vocab: int, causal: bool = False) -> TransformerConfig:
    return TransformerConfig(vocab_size=vocab, max_positions=64, n_layers=2, d_model=32, n_heads=4, d_ff=64,
                             causal=causal, norm="pre" if causal else "post", type_vocab_size=0 if causal else 2,
                             dropout=0.1, attn_dropout=0.1)


def make_base(out: Path, tokenizer_file: Path, causal: bool = False, seed: int = 0) -> Path:
    """A model dir as `lmforge pretrain` writes it (config.json, model.safetensors, tokenizer.json), random init."""
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer_file)).get_vocab_size()
    torch.manual_seed(seed)
    arch = tiny_arch(vocab, causal)
    heads = ("lm",) if causal else ("mlm",)
    model = LanguageModel(arch, heads)
    return save_model_dir(model, {"heads": list(heads), "model": arch.model_dump(mode="json")}, out,
                          load_tokenizer(tokenizer_file))


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory, tokenizer_file) -> Path:
    return make_base(tmp_path_factory.mktemp("base"), tokenizer_file)


@pytest.fixture(scope="session")
def decoder_base_dir(tmp_path_factory, tokenizer_file) -> Path:
    return make_base(tmp_path_factory.mktemp("decoder_base"), tokenizer_file, causal=True)


def ft_layers(out: Path, base: Path, data: Path, **over) -> list[dict]:
    """Config layers of a tiny, quiet fine-tuning run."""
    base_layer = {"out": str(out), "init_from": str(base), "epochs": 2, "data": {"path": str(data), "max_length": 32},
                  "report": {"baselines": False},
                  "train": {"batch_size": 16, "log_every": 1, "progress": False, "tensorboard": False,
                            "peak_flops": 1e12, "device": "cpu", "optim": {"lr": 3e-3}, "keep_last": 10}}
    return [base_layer, over]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared, loaded machine their spin-waits
    cost more than the matmuls: one thread keeps these tests fast and their timings steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
