"""LoRA merge equivalence, adapter save/load round trips, AdaLoRA's shrinking budget, prefix tuning
touching only the prefix, and exact resume of a LoRA run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from lmforge.finetune.build import load_base
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.adalora import AdaLoRALinear, RankAllocator
from lmforge.model.heads import TaskModel
from lmforge.model.modeldir import load_model_dir, model_dir_config, save_model_dir
from lmforge.model.methods import apply_method
from lmforge.model.peft import LoRAEmbedding, LoRALinear, freeze_for_peft, merge_lora, trainable_summary
from lmforge.model.transformer import TransformerConfig
from lmforge.tokenize.tokenizer import load_tokenizer
from lmforge.train import checkpoint as ckpt
from tests.finetune.conftest import ft_layers, tiny_arch

SETTINGS = {
    "lora": {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["attn.qkv", "attn.proj", "mlp.fc"]},
    "adalora": {"rank": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["attn.qkv"]},
    "adapter": {"placement": "houlsby", "bottleneck": 8},
    "prefix": {"length": 3},
}


def build_task_model(arch, task, labels, method, settings):
    model = TaskModel(TransformerConfig(**arch), task, labels)
    apply_method(model, method, settings)
    if method != "full":
        freeze_for_peft(model)
    return model


def save_and_load(model, out, tokenizer_file):
    """The model directory round trip every lmforge command goes through."""
    save_model_dir(model, model_dir_config(model), out, load_tokenizer(tokenizer_file))
    return load_model_dir(out).model


def _randomise(model, seed=1):
    """Give the (zero-initialised) new tensors and the head values, so the tests compare something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


@pytest.mark.parametrize("task", ["classification", "tagging"])
def test_lora_merged_and_unmerged_give_the_same_logits(task):
    arch = tiny_arch(120).model_dump()
    model = build_task_model(arch, task, ["a", "b", "c"], "lora", SETTINGS["lora"]).eval()
    _randomise(model)
    ids = torch.randint(5, 120, (4, 10))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    before = model(ids, mask)
    assert merge_lora(model) == 2 * 3  # 3 targets x 2 blocks
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    after = model(ids, mask)
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()
    assert not torch.allclose(before, build_task_model(arch, task, ["a", "b", "c"], "full", {}).eval()(ids, mask))


def test_lora_on_the_embedding_table_trains_rows_saves_and_merges(tmp_path, base_dir, tokenizer_file):
    meta_in = json.loads((base_dir / "config.json").read_text())
    settings = {**SETTINGS["lora"], "embedding_rank": 2}
    model = build_task_model(meta_in["model"], "classification", ["negative", "positive"], "lora", settings)
    load_base(model, base_dir)
    tokens = model.backbone.embed.tokens
    assert isinstance(tokens, LoRAEmbedding) and not tokens.base.weight.requires_grad
    vocab, width = tokens.base.weight.shape
    without = build_task_model(meta_in["model"], "classification", ["negative", "positive"], "lora", SETTINGS["lora"])
    assert trainable_summary(model)[0] - trainable_summary(without)[0] == 2 * (vocab + width)
    assert torch.count_nonzero(tokens.delta_weight()) == 0  # A starts at zero: the table starts as pretrained
    ids = torch.randint(5, vocab, (3, 12))
    # one step moves only the A rows of the tokens in the batch
    model.train()
    torch.nn.functional.cross_entropy(model(ids), torch.tensor([0, 1, 0])).backward()
    touched = (tokens.lora_A.grad.abs().sum(-1) > 0).nonzero().flatten().tolist()
    assert touched and set(touched) <= set(ids.flatten().tolist())
    _randomise(model)
    model.eval()
    loaded = save_and_load(model, tmp_path / "emb", tokenizer_file)
    before = model(ids)
    assert torch.equal(before, loaded(ids))  # the directory restores the exact predictions
    assert merge_lora(model) == 2 * 3 + 1
    assert isinstance(model.backbone.embed.tokens, torch.nn.Embedding)
    torch.testing.assert_close(model(ids), before, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["lora", "adalora", "adapter", "prefix"])
def test_only_new_tensors_train_and_the_directory_round_trip_is_exact(method, tmp_path, base_dir, tokenizer_file):
    base_meta = json.loads((base_dir / "config.json").read_text())
    model = build_task_model(base_meta["model"], "classification", ["negative", "positive"], method, SETTINGS[method])
    load_base(model, base_dir)
    trainable, total = trainable_summary(model)
    assert 0 < trainable < 0.1 * total
    for name, p in model.named_parameters():
        assert p.requires_grad == (name.startswith("head.") or any(k in name for k in ("lora_", "adapter.", "prefix."))), name
    _randomise(model)
    model.eval()
    out = tmp_path / method
    loaded = save_and_load(model, out, tokenizer_file)
    saved = load_file(str(out / "model.safetensors"))  # the base weights too: the directory stands alone
    assert set(saved) == set(model.state_dict())
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == method and config["settings"] == SETTINGS[method] and config["format_version"] == 2
    assert loaded.method == method and trainable_summary(build_task_model(
        base_meta["model"], "classification", ["negative", "positive"], method, SETTINGS[method]))[0] == trainable
    ids = torch.randint(5, base_meta["model"]["vocab_size"], (3, 12))
    assert torch.equal(model(ids), loaded(ids))


def test_lora_merge_export_predicts_like_the_adapter(tmp_path, base_dir, reviews_small):
    for merge in (True, False):
        finetune(make_finetune_config(*ft_layers(tmp_path / f"lora-{merge}", base_dir, reviews_small, method="lora",
                                                 epochs=1, lora={"merge": merge}), source="test"))
    merged, adapter = load_model_dir(tmp_path / "lora-True").model, load_model_dir(tmp_path / "lora-False").model
    config = json.loads((tmp_path / "lora-True" / "config.json").read_text())
    assert config["method"] == "full" and config["merged_from"] == "lora"
    assert any(isinstance(m, LoRALinear) for m in adapter.modules())
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    ids = torch.randint(5, 600, (4, 16))
    assert torch.allclose(merged(ids), adapter(ids), atol=1e-5)


def test_adalora_budget_shrinks_inside_the_loop(tmp_path, base_dir, reviews_small):
    out = tmp_path / "adalora"
    run = finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, method="adalora", epochs=2,
                                                   lora={"rank": 4, "targets": ["attn.qkv", "mlp.fc"]},
                                                   adalora={"target_rank": 1, "warmup": 0.1, "final": 0.2}),
                                        source="test"))
    steps = run["result"].step
    model = load_model_dir(out).model
    layers = [m for m in model.modules() if isinstance(m, AdaLoRALinear)]
    assert len(layers) == 4
    allocator = RankAllocator(model, 1, steps, int(0.1 * steps), int(0.2 * steps))
    budgets = [allocator.budget(s) for s in range(steps + 1)]
    assert budgets[0] == 16 and budgets[-1] == 4 and budgets == sorted(budgets, reverse=True)
    kept = sum(int(m.lora_rank_mask.sum()) for m in layers)
    assert kept <= budgets[-1] < budgets[0]  # the loop actually pruned to the target budget
    for m in layers:  # pruned singular values are zero, kept ones trained away from their zero init
        e = m.lora_E.squeeze(1)
        assert torch.all(e[m.lora_rank_mask == 0] == 0)
    assert any(torch.any(m.lora_E != 0) for m in layers)
    # mid-run checkpoints hold a larger budget than the end: the allocation moved during training
    first = load_file(str(ckpt.complete_checkpoints(out / "checkpoints")[0] / "model.safetensors"))
    assert sum(int(v.sum()) for k, v in first.items() if k.endswith("lora_rank_mask")) >= kept


def _backbone(state):
    return {k: v for k, v in state.items() if k.startswith("backbone.") and not any(
        m in k for m in ("lora_", "adapter.", "prefix."))}


@pytest.mark.parametrize("method", ["prefix", "lora"])
def test_peft_training_changes_only_the_new_tensors(method, tmp_path, base_dir, reviews_small):
    out = tmp_path / method
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, method=method, epochs=2,
                                             train={"early_stopping": {"patience": None}}), source="test"))
    base = load_file(str(base_dir / "model.safetensors"))
    a, b = (load_file(str(p / "model.safetensors")) for p in ckpt.complete_checkpoints(out / "checkpoints")[-2:])
    for key, value in _backbone(b).items():
        plain = key.replace(".base.", ".")  # LoRA wraps the Linear as .base
        assert torch.equal(value, base[plain]), key
    changed = [k for k in b if k not in _backbone(b) and not torch.equal(a[k], b[k])]
    assert any(("prefix." if method == "prefix" else "lora_") in k for k in changed)
    assert any(k.startswith("head.") for k in changed)


def test_lora_run_resumes_exactly(tmp_path, base_dir, reviews_small):
    def run(out, resume=None, **train):
        layers = ft_layers(out, base_dir, reviews_small, method="lora", epochs=2, resume=resume,
                           lora={"dropout": 0.1}, train={"checkpoint_every": 3, **train})
        return finetune(make_finetune_config(*layers, source="test"))

    straight = run(tmp_path / "a")
    run(tmp_path / "b", stop_at_step=7)
    resumed = run(tmp_path / "b", resume="auto")
    assert resumed["result"].step == straight["result"].step
    for step in range(8, straight["result"].step + 1):
        assert resumed["result"].losses[step] == straight["result"].losses[step], step
    x, y = (load_file(str(tmp_path / run_dir / "model.safetensors")) for run_dir in ("a", "b"))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_peft_library_lora_matches_ours(tmp_path, base_dir, tokenizer_file):
    """lora.backend=peft (the `peft` library's layers on our modules) computes what our LoRALinear does,
    merges the same way, and round-trips through its model directory."""
    arch = json.loads((base_dir / "config.json").read_text())["model"]
    ours = build_task_model(arch, "classification", ["a", "b"], "lora", SETTINGS["lora"]).eval()
    theirs = build_task_model(arch, "classification", ["a", "b"], "lora", {**SETTINGS["lora"], "backend": "peft"}).eval()
    assert trainable_summary(ours) == trainable_summary(theirs)
    load_base(ours, base_dir)
    _randomise(ours)
    mine = ours.state_dict()
    with torch.no_grad():
        for name, value in theirs.state_dict().items():
            key = name.replace(".base_layer.", ".base.").replace(".default.weight", "")
            value.copy_(mine[key] if key in mine else mine[key.replace(".base.", ".")])
    ids = torch.randint(5, arch["vocab_size"], (3, 12))
    assert torch.allclose(ours(ids), theirs(ids), atol=1e-6)
    loaded = save_and_load(theirs, tmp_path / "p", tokenizer_file)
    assert torch.equal(loaded(ids), theirs(ids))
    expected = ours(ids)
    merge_lora(theirs)
    assert torch.allclose(theirs(ids), expected, atol=1e-5)
