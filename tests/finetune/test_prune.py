"""Structured pruning of attention heads and feed-forward units: the pruned directory is smaller and
loads everywhere (predict, serve's predictor, ONNX, HF export with parity: pruned heads come back as
zeros), pruning nothing changes nothing, the Taylor scores rank units and heads as zeroing them changes
the loss, gated blocks prune their gate and value rows together, and a head-pruned rotary decoder
exports to StableLM with parity."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.finetune.prune import _batches, importance, prune_units
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.heads import TaskModel
from lmforge.model.hf import export_hf
from lmforge.model.modeldir import load_model_dir, model_dir_config, save_model_dir
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.tokenizer import load_tokenizer
from tests.finetune.conftest import ft_layers


@pytest.fixture(scope="module")
def classifier(tmp_path_factory, base_dir, reviews_small):
    out = tmp_path_factory.mktemp("prune") / "cls"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=2), source="t"))
    return out


def _texts(data, split="test"):
    return [json.loads(line)["text"] for line in open(data / f"{split}.jsonl", encoding="utf-8")]


def _train_loss(model_dir, data) -> float:
    loaded = load_model_dir(model_dir)
    total = 0.0
    for batch in _batches(loaded.model, loaded.config, loaded.tokenizer.tokenizer, str(data), 32, 2000):
        with torch.no_grad():
            logits = loaded.model.task_logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            total += float(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum"))
    return total


def test_pruning_nothing_changes_nothing_and_half_the_units_make_a_smaller_working_model(classifier, reviews_small,
                                                                                          tmp_path, capsys):
    full = lmforge.load(classifier)
    texts = _texts(reviews_small)[:30]
    prune_units(classifier, str(reviews_small), tmp_path / "all", ffn_keep=1.0, head_keep=1.0)
    torch.testing.assert_close(lmforge.load(tmp_path / "all").class_probabilities(texts),
                               full.class_probabilities(texts), rtol=0, atol=0)

    assert main(["compress", "--model", str(classifier), "--out", str(tmp_path / "half"), "--ffn-keep", "0.5",
                 "--head-keep", "0.5", "--data", str(reviews_small), "--vocab-from", str(reviews_small)]) == 0
    assert "attention heads 4 -> 2 and feed-forward units 64 -> 32" in capsys.readouterr().out
    half = lmforge.load(tmp_path / "half")
    c = half.model.config
    assert (c.d_ff, c.heads, c.head_size) == (32, 2, 8) and half.model.backbone.blocks[0].mlp.fc.weight.shape[0] == 32
    assert half.model.backbone.blocks[0].attn.qkv.weight.shape == (3 * 16, 32)
    size = lambda d: (d / "model.safetensors").stat().st_size  # noqa: E731
    assert size(tmp_path / "half") < size(classifier)
    answers = half.classify(texts)
    assert len(answers) == 30 and all(a["label"] in full.labels for a in answers)
    from transformers import AutoModelForSequenceClassification

    hf = AutoModelForSequenceClassification.from_pretrained(export_hf(tmp_path / "half", tmp_path / "hf")).eval()
    ids = torch.tensor([half.tokenizer.encode(texts[0]).ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids).logits, half.model.classify(ids), rtol=0, atol=1e-5)
    assert hf.config.num_attention_heads == 4  # the two pruned heads are zeros there

    from lmforge.serve.export import export_model
    onnx = lmforge.load(export_model(tmp_path / "half", "onnx", tmp_path / "onnx"))
    torch.testing.assert_close(onnx.class_probabilities(texts), half.class_probabilities(texts), rtol=0, atol=1e-5)


def _per_example_losses(model, batches, module, zero=None):
    """Each example's loss, with the channels ``zero`` of ``module``'s input set to 0."""
    def hook(_, args):
        h = args[0].clone()
        h[..., zero] = 0
        return (h,)
    handle = module.register_forward_pre_hook(hook) if zero is not None else None
    out = []
    with torch.no_grad():
        for batch in batches:
            logits = model.task_logits(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            out.append(torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none"))
    if handle is not None:
        handle.remove()
    return torch.cat(out)


def test_the_importance_ranks_units_and_heads_as_removing_them_does(classifier, reviews_small):
    """The Taylor score of each unit of the first block, and of every head of every block, against the
    measured effect of zeroing it: the summed |change of each example's loss|; ranks must agree (Spearman)."""
    from scipy.stats import spearmanr

    loaded = load_model_dir(classifier)
    model = loaded.model.eval()
    batches = _batches(model, loaded.config, loaded.tokenizer.tokenizer, str(reviews_small), 32, 96)
    scores = importance(model, batches)
    assert len(scores.ffn) == len(model.backbone.blocks) and all(s.shape == (64,) and s.sum() > 0 for s in scores.ffn)
    assert all(s.shape == (4,) and s.sum() > 0 for s in scores.heads)

    base = _per_example_losses(model, batches, None)
    first = model.backbone.blocks[0].mlp.proj
    effect = [float((_per_example_losses(model, batches, first, j) - base).abs().sum()) for j in range(64)]
    assert spearmanr(scores.ffn[0].numpy(), effect).statistic > 0.8
    head_effect = [float((_per_example_losses(model, batches, block.attn.proj, slice(8 * h, 8 * h + 8)) - base)
                         .abs().sum()) for block in model.backbone.blocks for h in range(4)]
    assert spearmanr(torch.cat(scores.heads).numpy(), head_effect).statistic > 0.8


def test_dropping_the_top_blocks_keeps_the_lower_blocks_and_the_head(classifier, reviews_small, tmp_path, capsys):
    """`compress --layers 1`: the model computes what the original's first block and its head compute."""
    assert main(["compress", "--model", str(classifier), "--out", str(tmp_path / "one"), "--layers", "1"]) == 0
    assert "blocks 2 -> 1" in capsys.readouterr().out
    one = lmforge.load(tmp_path / "one")
    assert one.model.config.n_layers == len(one.model.backbone.blocks) == 1
    original = load_model_dir(classifier).model.eval()
    original.backbone.blocks = original.backbone.blocks[:1]
    texts = _texts(reviews_small)[:10]
    enc = one.tokenizer.encode_batch(texts)
    ids = torch.tensor([e.ids[:24] for e in enc if len(e.ids) >= 24])  # (B, 24), no padding
    assert len(ids) >= 3
    with torch.no_grad():
        torch.testing.assert_close(one.model.classify(ids), original.classify(ids), rtol=0, atol=0)
    assert main(["compress", "--model", str(classifier), "--out", str(tmp_path / "x"), "--layers", "3"]) == 2
    assert "layers=3: the blocks to keep, 1 to the model's 2" in capsys.readouterr().err


def test_gated_blocks_keep_gate_and_value_rows_together(tmp_path, tokenizer_file, reviews_small):
    tok = load_tokenizer(tokenizer_file)
    cfg = TransformerConfig(vocab_size=tok.vocab_size, max_positions=64, n_layers=2, d_model=32, n_heads=4, d_ff=48,
                            norm="pre", activation="gated_gelu", dropout=0.0, attn_dropout=0.0)
    torch.manual_seed(0)
    model = TaskModel(cfg, "classification", ["negative", "positive"], pooling="mean").eval()
    src = save_model_dir(model, model_dir_config(model, max_length=32), tmp_path / "gated", tok)
    prune_units(src, str(reviews_small), tmp_path / "same")
    texts = _texts(reviews_small)[:10]
    torch.testing.assert_close(lmforge.load(tmp_path / "same").class_probabilities(texts),
                               lmforge.load(src).class_probabilities(texts), rtol=0, atol=0)
    prune_units(src, str(reviews_small), tmp_path / "third", ffn_keep=1 / 3)
    pruned = load_model_dir(tmp_path / "third").model
    assert pruned.config.d_ff == 16 and pruned.backbone.blocks[0].mlp.fc.weight.shape == (32, 32)
