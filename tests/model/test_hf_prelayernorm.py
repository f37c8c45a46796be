"""`export --to hf` of the models lmforge's shipped recipes train: pre-LN encoders with learned positions
(the quickstart's and configs/pretrain-tiny.yaml's) as XLM-RoBERTa-XL, mean-pooled classifiers through
the sentence-transformers files; parity with `transformers` and `sentence-transformers` within 1e-5,
and back into lmforge unchanged. What no native class computes is refused in one line naming the option."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge.config import ConfigError
from lmforge.model.heads import TaskModel
from lmforge.model.hf import export_hf
from lmforge.model.modeldir import model_dir_config, save_model_dir
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.tokenizer import load_tokenizer
from tests.model.hf_helpers import train_wordpiece
from tests.serve.conftest import review_texts


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    train_wordpiece().save(str(path))
    return load_tokenizer(path)


def _model_dir(tmp_path, tokenizer, norm: str, task=None, pooling=None, heads=("mlm",), **arch):
    cfg = TransformerConfig(vocab_size=tokenizer.vocab_size, max_positions=40, n_layers=2, d_model=32, n_heads=4,
                            d_ff=64, norm=norm, norm_eps=1e-5, dropout=0.0, attn_dropout=0.0, **arch)
    torch.manual_seed(0)
    labels = {"classification": ["negative", "neutral", "positive"], "tagging": ["B", "E", "M", "S"]}.get(task, [])
    model = TaskModel(cfg, task, labels, heads, pooling).eval()
    with torch.no_grad():  # away from the init, so that every tensor's mapping matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return save_model_dir(model, model_dir_config(model, max_length=32), tmp_path / "ours", tokenizer), model


def _batch(tokenizer, n=4):
    from tokenizers import Tokenizer

    texts = [t[:k] for t, k in zip(review_texts(n), (40, 9, 25, 4))]  # real reviews, cut to mixed lengths
    tok = Tokenizer.from_str(tokenizer.json_text)
    tok.enable_truncation(32)
    encs = tok.encode_batch(texts)
    width = max(len(e.ids) for e in encs)
    ids = torch.zeros(len(encs), width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, e in enumerate(encs):
        ids[i, :len(e.ids)], attn[i, :len(e.ids)] = torch.tensor(e.ids), 1
    assert attn.sum(1).min() < width, "the batch needs a padded row"
    return texts, ids, attn


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_a_mean_pooled_classifier_exports_through_sentence_transformers(norm, tmp_path, tokenizer):
    from sentence_transformers import SentenceTransformer

    src, model = _model_dir(tmp_path, tokenizer, norm, "classification", "mean")
    out = export_hf(src, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == ("xlm-roberta-xl" if norm == "pre" else "bert")
    assert config["id2label"]["2"] == "positive" and config["lmforge"]["classifier"]
    texts, ids, attn = _batch(tokenizer)
    with torch.no_grad():
        ours = model.classify(ids, attn)  # (B, 3)
    st = SentenceTransformer(str(out), device="cpu")
    theirs = st.encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    back = lmforge.load(out)  # and home again: the head comes back from the Dense layers
    assert back.model.pooling == "mean" and back.labels == ["negative", "neutral", "positive"]
    torch.testing.assert_close(back.model.classify(ids, attn), ours, rtol=0, atol=1e-6)


def test_a_pre_ln_pretrained_encoder_is_xlm_roberta_xl_for_transformers_and_sentence_transformers(tmp_path, tokenizer):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoModelForMaskedLM

    src, model = _model_dir(tmp_path, tokenizer, "pre")
    out = export_hf(src, tmp_path / "hf")
    texts, ids, attn = _batch(tokenizer)
    with torch.no_grad():
        hidden = model.backbone(ids, attn)  # (B, T, C)
        mlm = AutoModelForMaskedLM.from_pretrained(out).eval()
        assert type(mlm).__name__ == "XLMRobertaXLForMaskedLM"
        real = attn.bool()
        torch.testing.assert_close(mlm(input_ids=ids, attention_mask=attn).logits[real], model.mlm(hidden)[real],
                                   rtol=0, atol=1e-5)
        base = AutoModel.from_pretrained(out).eval()
        torch.testing.assert_close(base(input_ids=ids, attention_mask=attn).last_hidden_state[real], hidden[real],
                                   rtol=0, atol=1e-5)
    embeddings = SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(embeddings, torch.tensor(lmforge.load(src).embed(texts)), rtol=0, atol=1e-5)
    back = lmforge.load(out)
    assert back.model.config.norm == "pre" and back.model.config.max_positions == 40
    with torch.no_grad():
        torch.testing.assert_close(back.model.backbone(ids, attn)[real], hidden[real], rtol=0, atol=1e-6)


@pytest.mark.parametrize("task", ["classification", "tagging"])
def test_pre_ln_task_models_export_to_the_xlm_roberta_xl_task_classes(task, tmp_path, tokenizer):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    src, model = _model_dir(tmp_path, tokenizer, "pre", task, "first" if task == "classification" else None, heads=())
    out = export_hf(src, tmp_path / "hf")
    Auto = AutoModelForSequenceClassification if task == "classification" else AutoModelForTokenClassification
    hf = Auto.from_pretrained(out).eval()
    _, ids, attn = _batch(tokenizer)
    with torch.no_grad():
        theirs, ours = hf(input_ids=ids, attention_mask=attn).logits, model.task_logits(ids, attn)
    if task == "tagging":
        theirs, ours = theirs[attn.bool()], ours[attn.bool()]
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(lmforge.load(out).model.task_logits(ids, attn), model.task_logits(ids, attn),
                                   rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch, option", [({"positions": "rotary"}, "model.positions=rotary in an encoder"),
                                          ({"activation": "gated_gelu"}, "model.activation=gated_gelu in an encoder")])
def test_what_no_native_class_computes_is_one_line_naming_the_option(arch, option, tmp_path, tokenizer):
    src, _ = _model_dir(tmp_path, tokenizer, "pre", **arch)
    with pytest.raises(ConfigError, match=f"cannot export to Hugging Face: {option}") as refused:
        export_hf(src, tmp_path / "hf")
    assert "\n" not in str(refused.value) and not (tmp_path / "hf").exists()


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_a_bias_free_encoder_exports_with_zero_biases(norm, tmp_path, tokenizer):
    from transformers import AutoModelForMaskedLM

    src, model = _model_dir(tmp_path, tokenizer, norm, bias=False)
    out = export_hf(src, tmp_path / "hf")
    _, ids, attn = _batch(tokenizer)
    real = attn.bool()
    with torch.no_grad():
        theirs = AutoModelForMaskedLM.from_pretrained(out).eval()(input_ids=ids, attention_mask=attn).logits
        ours = model.mlm(model.backbone(ids, attn))
        torch.testing.assert_close(theirs[real], ours[real], rtol=0, atol=1e-5)
        back = lmforge.load(out).model  # home again as a model whose biases are zeros
        torch.testing.assert_close(back.mlm(back.backbone(ids, attn))[real], ours[real], rtol=0, atol=1e-5)
