"""Tiny Hugging Face checkpoints written to disk with a real WordPiece tokenizer trained on People's Daily."""

from __future__ import annotations

from pathlib import Path

import torch

BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
GPT2 = dict(n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=64, resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0)


def train_wordpiece(n_sentences: int = 400, vocab_size: int = 300):
    """lmforge's BERT-style WordPiece pipeline ([CLS] ... [SEP] template) on real sentences."""
    import itertools

    from lmforge.corpora import get_corpus
    from lmforge.tokenize.tokenizer import build_tokenizer, canonical_wordpiece_ids, make_tokenizer_config

    texts = [r.text for r in itertools.islice(get_corpus("peoples-daily").records(), n_sentences) if r.text]
    tok, trainer = build_tokenizer(make_tokenizer_config({"kind": "wordpiece", "vocab_size": vocab_size,
                                                          "progress": False}))
    tok.train_from_iterator(texts, trainer)
    return canonical_wordpiece_ids(tok)  # reproducible ids


def write_tokenizer(tok, out: Path) -> None:
    tok.save(str(out / "tokenizer.json"))


def hf_bert(arch: str, vocab: int, out: Path, tok=None, seed: int = 0, **extra) -> torch.nn.Module:
    import transformers

    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=vocab, **BERT, **extra)
    model = getattr(transformers, arch)(config).eval()
    with torch.no_grad():  # HF zero-initialises biases and LayerNorms: randomise so the map is really tested
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out)
    if tok is not None:
        write_tokenizer(tok, out)
    return model


def hf_gpt2(arch: str, vocab: int, out: Path, tok=None, seed: int = 0) -> torch.nn.Module:
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, arch)(transformers.GPT2Config(vocab_size=vocab, **GPT2)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out)
    if tok is not None:
        write_tokenizer(tok, out)
    return model
