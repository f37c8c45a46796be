import pytest
import torch
import torch.nn.functional as F

from lmforge.model import transformer
from lmforge.model.heads import LanguageModel
from lmforge.model.transformer import Transformer, TransformerConfig, count_parameters


def tiny(**kw) -> TransformerConfig:
    base = dict(
        vocab_size=500,
        max_positions=16,
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_ff=64,
        dropout=0.0,
        attn_dropout=0.0,
    )
    return TransformerConfig(**{**base, **kw})


def ids_from(corpus, B=3, T=16):
    return corpus.tokens[: B * T].view(B, T).clamp(max=499)


@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "gated_gelu"])
@pytest.mark.parametrize("positions", ["learned", "rotary"])
def test_shapes_and_options(corpus, norm, activation, positions):
    cfg = tiny(norm=norm, activation=activation, positions=positions, bias=positions == "learned")
    model = Transformer(cfg)
    ids = ids_from(corpus)
    h = model(ids, torch.ones_like(ids))
    assert h.shape == (3, 16, 32) and torch.isfinite(h).all()
    assert (model.final_norm is None) == (norm == "post") and (model.embed.norm is None) == (norm == "pre")
    assert (model.embed.positions is None) == (positions == "rotary")
    assert model.blocks[0].mlp.fc.out_features == (128 if activation == "gated_gelu" else 64)


def test_padding_mask_hides_padded_keys(corpus, device):
    torch.manual_seed(0)
    model = Transformer(tiny()).eval().to(device)
    ids = ids_from(corpus, B=1).to(device)
    mask = torch.ones_like(ids)
    mask[:, 10:] = 0
    other = ids.clone()
    other[:, 10:] = 7  # different content behind the padding must not change real positions
    a = model(ids, mask)[:, :10]
    b = model(other, mask)[:, :10]
    torch.testing.assert_close(a, b)
    c = model(other)[:, :10]  # without the mask the content does leak in
    assert not torch.allclose(a, c)


def test_causal_decoder_does_not_see_the_future(corpus, device):
    model = Transformer(tiny(causal=True, norm="pre", type_vocab_size=0)).eval().to(device)
    ids = ids_from(corpus, B=1).to(device)
    changed = ids.clone()
    changed[:, 8:] = 5
    torch.testing.assert_close(model(ids)[:, :8], model(changed)[:, :8])
    # padding combined with causality: same result for the prefix, and finite everywhere
    mask = torch.ones_like(ids)
    mask[:, 12:] = 0
    out = model(ids, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, :12], model(ids)[:, :12])


def test_rotary_is_relative(corpus):
    """Rotary attention scores depend on offsets only: a causal model sees a shifted prefix the same."""
    model = Transformer(tiny(causal=True, norm="pre", positions="rotary", type_vocab_size=0)).eval()
    ids = ids_from(corpus, B=1)
    first = model(ids[:, 4:12])
    again = model(ids[:, 4:16])[:, :8]
    torch.testing.assert_close(first, again)


@pytest.mark.parametrize(
    "init,check",
    [
        ("normal", lambda w: abs(w.std().item() - 0.02) < 0.004),
        ("xavier", lambda w: abs(w.std().item() - (2 / (32 + 96)) ** 0.5) < 0.02),
        ("kaiming", lambda w: abs(w.std().item() - (2 / 32) ** 0.5) < 0.05),
    ],
)
def test_init_schemes(init, check):
    torch.manual_seed(0)
    model = Transformer(tiny(init=init))
    w = model.blocks[0].attn.qkv.weight  # (96, 32)
    assert check(w), (init, w.std().item())
    assert torch.all(model.blocks[0].attn.qkv.bias == 0) and torch.all(model.blocks[0].norm1.weight == 1)


def test_names_map_onto_bert_and_gpt2():
    names = set(LanguageModel(tiny(), heads=("mlm", "sentence")).state_dict())
    for name in [
        "backbone.embed.tokens.weight",
        "backbone.embed.positions.weight",
        "backbone.embed.types.weight",
        "backbone.embed.norm.weight",
        "backbone.blocks.1.attn.qkv.weight",
        "backbone.blocks.1.attn.proj.bias",
        "backbone.blocks.1.norm1.weight",
        "backbone.blocks.1.mlp.fc.weight",
        "backbone.blocks.1.mlp.proj.weight",
        "backbone.blocks.1.norm2.bias",
        "mlm.transform.weight",
        "mlm.norm.weight",
        "mlm.bias",
        "sentence.pooler.weight",
        "sentence.classifier.weight",
    ]:
        assert name in names, name
    gpt = set(LanguageModel(tiny(causal=True, norm="pre", type_vocab_size=0), heads=("lm",)).state_dict())
    assert "backbone.final_norm.weight" in gpt and "backbone.embed.types.weight" not in gpt


def test_tied_embeddings_and_masked_only_mlm_head(corpus):
    model = LanguageModel(tiny(), heads=("mlm",))
    assert model.mlm.decoder.weight is model.backbone.embed.tokens.weight
    assert count_parameters(model) < sum(p.numel() for p in model.state_dict().values())
    untied = LanguageModel(tiny(tie_embeddings=False), heads=("mlm",))
    assert untied.mlm.decoder.weight is not untied.backbone.embed.tokens.weight
    ids = ids_from(corpus)
    positions = torch.zeros_like(ids, dtype=torch.bool)
    positions[0, 3] = positions[2, 5] = True
    model.eval()
    out = model(ids, masked_positions=positions)
    assert out["mlm_logits"].shape == (2, 500)
    # the same logits as projecting every position and picking the masked ones (HF's way)
    full = model.mlm(model.backbone(ids))  # (B, T, V)
    torch.testing.assert_close(out["mlm_logits"], full[positions])


class _Wrapped(torch.nn.Module):  # what LoRA makes of a projection: no longer a plain nn.Linear
    def __init__(self, inner: torch.nn.Linear) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("norm, positions, wrapped", [("post", "learned", False), ("pre", "rotary", False),
                                                       ("post", "learned", True)])
def test_last_block_at_the_masked_positions_only_gives_the_full_outputs_there(corpus, norm, positions, wrapped):
    """MLM pretraining's last block computes only the masked positions (and the first, for the sentence
    head): logits, sentence logits and every gradient equal the full computation's."""
    torch.manual_seed(0)
    model = LanguageModel(tiny(norm=norm, positions=positions), heads=("mlm", "sentence"))
    if wrapped:
        model.backbone.blocks[-1].attn.qkv = _Wrapped(model.backbone.blocks[-1].attn.qkv)
    ids = ids_from(corpus)
    attn = torch.ones_like(ids)
    attn[1, 11:] = 0  # a padded row
    positions_ = torch.rand(ids.shape) < 0.2
    positions_[0] = False  # a row with nothing masked
    positions_[2, 7] = True
    out = model(ids, attn, masked_positions=positions_)
    hidden = model.backbone(ids, attn)  # (B, T, C): every position
    full = {"mlm_logits": model.mlm(hidden, positions_), "sentence_logits": model.sentence(hidden)}
    for key in full:
        torch.testing.assert_close(out[key], full[key], rtol=1e-5, atol=1e-5)
    grads = []
    for logits in (out, full):
        model.zero_grad()
        (logits["mlm_logits"].square().sum() + logits["sentence_logits"].sum()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5, msg=name)
    index, valid = transformer.query_index(positions_)
    assert index.shape == (3, int(positions_.sum(1).max())) and (index[valid] == positions_.nonzero()[:, 1]).all()


def test_heads_shapes(corpus):
    ids = ids_from(corpus)
    out = LanguageModel(tiny(), heads=("mlm", "sentence"))(ids, masked_positions=ids > 100)
    assert out["sentence_logits"].shape == (3, 2) and out["mlm_logits"].shape == ((ids > 100).sum(), 500)
    lm = LanguageModel(tiny(causal=True, norm="pre", type_vocab_size=0), heads=("lm",))(ids)
    assert lm["lm_logits"].shape == (3, 16, 500)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="not divisible"):
        tiny(d_model=30)
    with pytest.raises(ValueError, match="exceeds max_positions"):
        Transformer(tiny())(torch.zeros(1, 20, dtype=torch.long))


def test_dropout_only_in_training(corpus):
    model = Transformer(tiny(dropout=0.5, attn_dropout=0.5))
    ids = ids_from(corpus)
    model.eval()
    torch.testing.assert_close(model(ids), model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))


@pytest.mark.parametrize("case", ["full", "padding", "causal", "causal+padding", "cached"])
def test_explicit_attention_matches_sdpa(case):
    # The CPU bf16 path (explicit matmuls) must compute what SDPA computes: values and gradients.
    torch.manual_seed(0)
    B, nh, T, hs = 3, 4, 10, 8
    S = 14 if case == "cached" else T  # 4 past keys before the 10 new queries
    q, k, v = (torch.randn(B, nh, n, hs, dtype=torch.float64, requires_grad=True) for n in (T, S, S))
    keep = torch.ones(B, S, dtype=torch.bool)
    keep[1, 6:] = False
    keep[2, 2:] = False
    mask = None  # full and causal
    if case in ("padding", "causal+padding"):
        mask = keep[:, None, None, :] | torch.eye(T, dtype=torch.bool)  # (B, 1, T, S); no empty rows
    elif case == "cached":
        mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)  # query i sees keys up to past + i
    is_causal = case.startswith("causal")
    ours = transformer.explicit_attention(q, k, v, mask, is_causal, 0.0)
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    sdpa_mask = mask & torch.ones(T, S, dtype=torch.bool).tril() if case == "causal+padding" else mask
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask, is_causal=case == "causal")
    ref_grads = torch.autograd.grad(ref.square().sum(), (q, k, v))
    assert torch.allclose(ours, ref, atol=1e-10)
    for got, want in zip(grads, ref_grads):
        assert torch.allclose(got, want, atol=1e-10)


def test_cpu_bf16_short_sequences_take_the_explicit_path(monkeypatch):
    calls: list[torch.dtype] = []
    real_sdpa = F.scaled_dot_product_attention

    def counting_sdpa(q, *args, **kwargs):
        calls.append(q.dtype)
        return real_sdpa(q, *args, **kwargs)

    monkeypatch.setattr(transformer.F, "scaled_dot_product_attention", counting_sdpa)
    x = torch.randn(2, 4, 16, 8)
    out32 = transformer.attention(x, x, x, None, False, 0.0)
    assert calls == [torch.float32]  # fp32 keeps the fused kernel, which is the faster one there
    out16 = transformer.attention(*(x.bfloat16(),) * 3, None, False, 0.0)
    assert calls == [torch.float32] and out16.dtype == torch.bfloat16
    assert torch.allclose(out16.float(), out32, atol=0.05)
    long = torch.randn(1, 4, transformer.EXPLICIT_ATTENTION_MAX_KEYS + 1, 8).bfloat16()
    transformer.attention(long, long, long, None, False, 0.0)
    assert calls == [torch.float32, torch.bfloat16]  # long sequences: SDPA's kernel wins again


def test_bf16_autocast_model_matches_fp32(corpus, device):
    torch.manual_seed(0)
    model = LanguageModel(tiny(), ("mlm",)).eval().to(device)
    ids = ids_from(corpus).to(device)
    attn = torch.ones_like(ids)
    attn[1, 9:] = 0
    with torch.no_grad():
        ref = model.backbone(ids, attn)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            low = model.backbone(ids, attn)
    assert low.dtype in (torch.bfloat16, torch.float32)
    assert (low.float() - ref).abs().max() < 0.1 * ref.abs().max()
