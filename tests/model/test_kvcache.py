"""The KV cache: feeding a sequence in chunks with a cache gives the hidden states of one full pass."""

import pytest
import torch

from lmforge.model.transformer import KVCache, Transformer, TransformerConfig


@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_chunked_cached_forward_equals_full_forward(positions, device):
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=60, max_positions=16, n_layers=2, d_model=32, n_heads=4, d_ff=64, causal=True,
                            norm="pre", positions=positions, type_vocab_size=0, dropout=0.0, attn_dropout=0.0)
    model = Transformer(cfg).eval().to(device)
    ids = torch.randint(0, 60, (2, 12)).to(device)
    cache = KVCache(cfg.n_layers)
    with torch.no_grad():
        full = model(ids)
        parts = [model(ids[:, a:b], cache=cache) for a, b in ((0, 5), (5, 8), (8, 9), (9, 12))]
    assert cache.length == 12
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="exceeds max_positions=16"):
        model(ids[:, :5], cache=cache)
    with pytest.raises(ValueError, match="unpadded"):
        model(ids[:, :1], attention_mask=torch.ones(2, 1, device=device), cache=KVCache(cfg.n_layers))
