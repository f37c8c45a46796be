"""`export --to hf` of lmforge's decoders: rotary + gated GELU (configs/pretrain-gpt-tiny.yaml's choices)
as StableLM, rotary + GELU as GPT-NeoX, learned positions as GPT-2, bias-free ones included; logits of
`transformers`' native classes within 1e-5 of lmforge's, head-pruned ones too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmforge.config import ConfigError, load_config_file
from lmforge.model.heads import TaskModel
from lmforge.model.hf import export_hf
from lmforge.model.modeldir import model_dir_config, save_model_dir
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.tokenizer import load_tokenizer
from tests.model.hf_helpers import train_wordpiece
from tests.model.test_hf_prelayernorm import _batch

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "pretrain-gpt-tiny.yaml"
# the recipe's architecture choices, at a test's size
RECIPE = {k: v for k, v in load_config_file(SHIPPED)["model"].items()
          if k in ("causal", "norm", "positions", "activation", "type_vocab_size", "bias")}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_wordpiece().save(str(path))
    return load_tokenizer(path)


def _decoder_dir(tmp_path, tokenizer, heads=("lm",), **arch):
    options = {**RECIPE, **arch}
    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size, max_positions=40, n_layers=2, d_model=32, n_heads=4,
                            d_ff=48, norm_eps=1e-5, dropout=0.0, attn_dropout=0.0, rotary_base=500.0, **options)
    torch.manual_seed(0)
    model = TaskModel(cfg, heads=heads).eval()
    with torch.no_grad():  # away from the init, so that every tensor's mapping matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return save_model_dir(model, model_dir_config(model, max_length=32), tmp_path / "ours", tokenizer), model


@pytest.mark.parametrize("arch, model_type", [
    ({}, "stablelm"),  # the shipped recipe: rotary, gated GELU, no biases
    ({"activation": "gelu", "bias": True}, "gpt_neox"),
    ({"activation": "gelu_tanh"}, "gpt_neox"),  # bias-free: zero biases
    ({"positions": "learned", "activation": "gelu_tanh"}, "gpt2"),  # bias-free GPT-2
    # after head pruning (lmforge compress --head-keep): the removed heads go out as zeros
    ({"kept_heads": 2}, "stablelm"),
    ({"activation": "gelu", "bias": True, "kept_heads": 3}, "gpt_neox"),
    ({"positions": "learned", "activation": "gelu", "bias": True, "kept_heads": 1}, "gpt2"),
])
def test_decoders_export_to_the_native_class_that_computes_them(arch, model_type, tmp_path, tokenizer):
    from transformers import AutoModel, AutoModelForCausalLM

    src, model = _decoder_dir(tmp_path, tokenizer, **arch)
    out = export_hf(src, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == model_type
    _, ids, attn = _batch(tokenizer)
    real = attn.bool()  # padding is on the right: a causal model's real positions never see it
    with torch.no_grad():
        hidden = model.backbone(ids, attn)  # (B, T, C)
        lm = AutoModelForCausalLM.from_pretrained(out).eval()
        assert type(lm).__name__ == config["architectures"][0]
        torch.testing.assert_close(lm(input_ids=ids, attention_mask=attn).logits[real], model.lm(hidden)[real],
                                   rtol=0, atol=1e-5)
        base = AutoModel.from_pretrained(out).eval()
        torch.testing.assert_close(base(input_ids=ids, attention_mask=attn).last_hidden_state[real], hidden[real],
                                   rtol=0, atol=1e-5)


def test_a_pretrained_decoder_without_lm_head_exports_as_the_base_class(tmp_path, tokenizer):
    from transformers import AutoModel

    src, model = _decoder_dir(tmp_path, tokenizer, heads=())
    out = export_hf(src, tmp_path / "hf")
    assert json.loads((out / "config.json").read_text())["architectures"] == ["StableLmModel"]
    _, ids, attn = _batch(tokenizer)
    real = attn.bool()
    with torch.no_grad():
        theirs = AutoModel.from_pretrained(out).eval()(input_ids=ids, attention_mask=attn).last_hidden_state
        torch.testing.assert_close(theirs[real], model.backbone(ids, attn)[real], rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch, option", [
    ({"bias": True}, "model.bias=true with rotary positions and gated GELU"),
    ({"positions": "learned"}, "model.activation=gated_gelu with learned positions"),
])
def test_a_decoder_no_native_class_computes_is_one_line_naming_the_option(arch, option, tmp_path, tokenizer):
    src, _ = _decoder_dir(tmp_path, tokenizer, **arch)
    with pytest.raises(ConfigError, match=f"cannot export to Hugging Face: {option}") as refused:
        export_hf(src, tmp_path / "hf")
    assert "\n" not in str(refused.value) and not (tmp_path / "hf").exists()


@pytest.mark.parametrize("arch, family", [({}, "StableLm"), ({"activation": "gelu"}, "GPTNeoX"),
                                          ({"positions": "learned", "activation": "gelu_tanh"}, "GPT2")])
def test_a_decoder_classifier_exports_to_the_native_sequence_classifier(arch, family, tmp_path, tokenizer):
    from transformers import AutoModelForSequenceClassification

    import lmforge

    labels = ["negative", "neutral", "positive"]
    options = {**RECIPE, **arch}
    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size, max_positions=40, n_layers=2, d_model=32, n_heads=4,
                            d_ff=48, norm_eps=1e-5, dropout=0.0, attn_dropout=0.0, **options)
    torch.manual_seed(0)
    model = TaskModel(cfg, "classification", labels).eval()  # the decoder's default head: last token, no bias
    assert model.pooling == "last" and model.head.pooler is None and model.head.classifier.bias is None
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    src = save_model_dir(model, model_dir_config(model, max_length=32), tmp_path / "ours", tokenizer)
    out = export_hf(src, tmp_path / "hf")
    _, ids, attn = _batch(tokenizer)
    ids = ids.masked_fill(~attn.bool(), tokenizer.special_tokens["pad"])  # HF finds the last token by the pad id
    hf = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(hf).__name__ == f"{family}ForSequenceClassification"
    assert hf.config.id2label[2] == "positive"
    with torch.no_grad():
        ours = model.classify(ids, attn)  # (B, 3)
        torch.testing.assert_close(hf(input_ids=ids, attention_mask=attn).logits, ours, rtol=0, atol=1e-5)
        torch.testing.assert_close(lmforge.load(src).model.classify(ids, attn), ours, rtol=0, atol=0)


def test_a_decoder_classifier_with_the_old_pooler_head_still_loads_and_is_refused_in_one_line(tmp_path, tokenizer):
    import lmforge

    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size, max_positions=40, n_layers=1, d_model=32, n_heads=4,
                            d_ff=48, **RECIPE)
    model = TaskModel(cfg, "classification", ["a", "b"], pooler=True, classifier_bias=True).eval()
    src = save_model_dir(model, model_dir_config(model), tmp_path / "ours", tokenizer)
    config = json.loads((src / "config.json").read_text())
    del config["classifier_bias"]  # as written before the key existed
    (src / "config.json").write_text(json.dumps(config))
    back = lmforge.load(src).model
    assert back.head.pooler is not None and back.head.classifier.bias is not None
    with pytest.raises(ConfigError, match="cannot export to Hugging Face: a transformers decoder classifier") as e:
        export_hf(src, tmp_path / "hf")
    assert "\n" not in str(e.value)
