"""Count-based embedding init (PPMI + SVD): the counts, the PMI, what the vectors capture, and the
pretrain stage starting from them on real People's Daily shards."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lmforge.config import ConfigError
from lmforge.train.embedding_init import (
    cooccurrence,
    init_token_embeddings,
    ppmi,
    ppmi_svd_embeddings,
    shard_documents,
)
from lmforge.train.pretrain import make_pretrain_config, pretrain
from tests.tokenize.conftest import pd_prepared, pd_shards, wordpiece_dir  # noqa: F401  (session fixtures)


def test_cooccurrence_counts_pairs_within_the_window_and_the_document():
    counts = cooccurrence([np.array([5, 6, 7]), np.array([8])], vocab_size=10, window=1).toarray()
    expected = np.zeros((10, 10))
    for a, b in ((5, 6), (6, 7)):
        expected[a, b] = expected[b, a] = 1
    assert np.array_equal(counts, expected)  # 7 and 8 are in different documents: no pair
    wider = cooccurrence([np.array([5, 6, 7])], vocab_size=10, window=2).toarray()
    assert wider[5, 7] == wider[7, 5] == 1
    with pytest.raises(ValueError, match="outside the vocabulary of 10"):
        cooccurrence([np.array([3, 12])], vocab_size=10, window=1)


def test_ppmi_matches_the_dense_formula():
    rng = np.random.default_rng(0)
    dense = rng.integers(0, 4, (6, 6)).astype(float)
    dense = dense + dense.T
    import scipy.sparse as sp

    got = ppmi(sp.csr_matrix(dense), context_power=0.75).toarray()
    total = dense.sum()
    p_word = dense.sum(1) / total
    p_context = dense.sum(0) ** 0.75 / (dense.sum(0) ** 0.75).sum()
    with np.errstate(divide="ignore"):
        expected = np.maximum(np.log(dense / total / np.outer(p_word, p_context)), 0)
    assert np.allclose(got, np.nan_to_num(expected, neginf=0.0))


def test_tokens_used_alike_get_similar_vectors():
    """Two generated 'topics': documents draw from tokens 10-29 or from 30-49 only."""
    rng = np.random.default_rng(0)
    docs = [rng.integers(10, 30, 40) if i % 2 else rng.integers(30, 50, 40) for i in range(400)]
    vectors, seen = ppmi_svd_embeddings(docs, vocab_size=60, dim=8, window=3)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)
    cos = unit @ unit.T
    same = np.mean([cos[a, b] for a in range(10, 30) for b in range(10, 30) if a != b])
    across = np.mean([cos[a, b] for a in range(10, 30) for b in range(30, 50)])
    assert same > across + 0.5, (same, across)
    assert seen[10:50].all() and not seen[:10].any() and not seen[50:].any()


def test_only_seen_tokens_are_replaced_at_the_model_scale():
    torch.manual_seed(0)
    table = nn.Embedding(6, 4)
    before = table.weight.detach().clone()
    vectors = np.arange(24, dtype=float).reshape(6, 4)
    seen = np.array([False, True, True, True, False, False])
    assert init_token_embeddings(table, vectors, seen, std=0.02) == 3
    assert torch.equal(table.weight[[0, 4, 5]], before[[0, 4, 5]])
    assert abs(float(table.weight.detach()[1:4].std(unbiased=False)) - 0.02) < 1e-6


def _config(shards, out, **init):
    return make_pretrain_config({
        "out": str(out), "data": {"shards": str(shards), "seq_len": 32},
        "model": {"n_layers": 1, "d_model": 32, "n_heads": 2, "d_ff": 64, "max_positions": 32},
        "embedding_init": init,
        "train": {"steps": 2, "batch_size": 4, "eval_every": 2, "eval_batches": 1, "precision": "fp32",
                  "progress": False, "tensorboard": False, "peak_flops": 1e12, "device": "cpu",
                  "optim": {"lr": 1e-9}},
    }, source="test")


def test_pretraining_starts_from_the_count_based_vectors(pd_shards, tmp_path):  # noqa: F811
    pretrain(_config(pd_shards, tmp_path / "svd", kind="ppmi-svd", window=2))
    pretrain(_config(pd_shards, tmp_path / "random"))
    svd = load_file(str(tmp_path / "svd" / "model.safetensors"))["backbone.embed.tokens.weight"]
    rand = load_file(str(tmp_path / "random" / "model.safetensors"))["backbone.embed.tokens.weight"]
    vectors, seen = ppmi_svd_embeddings(shard_documents(str(pd_shards)), svd.shape[0], 32, window=2)
    expected = torch.from_numpy(vectors[seen] / vectors[seen].std() * 0.02).float()
    assert torch.allclose(svd[torch.from_numpy(seen)], expected, atol=1e-5)  # two steps at lr 1e-9 move nothing
    assert torch.allclose(svd[torch.from_numpy(~seen)], rand[torch.from_numpy(~seen)], atol=1e-5)
    assert 0.5 * len(seen) < seen.sum() < len(seen)  # most of the vocabulary occurs in the train split


def test_count_based_init_needs_shards(tmp_path):
    with pytest.raises(ConfigError, match="embedding_init.kind=ppmi-svd counts the training shards: set data.shards"):
        make_pretrain_config({"out": str(tmp_path), "embedding_init": {"kind": "ppmi-svd"}}, source="test")
