"""The model directory's one writer and one reader: format 2 round trips, and directories of the
previous layouts (format 1 of this file; format 1 fine-tuning directories, PEFT adapters over their
base) still load and predict what they predicted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lmforge.config import ConfigError
from lmforge.model.heads import TaskModel
from lmforge.model.modeldir import load_model_dir, model_dir_config, save_model_dir
from lmforge.model.methods import apply_method
from lmforge.model.peft import peft_state
from lmforge.model.transformer import TransformerConfig

CFG = TransformerConfig(vocab_size=60, max_positions=16, n_layers=2, d_model=16, n_heads=2, d_ff=32,
                        dropout=0.0, attn_dropout=0.0)
IDS = torch.randint(5, 60, (3, 9), generator=torch.Generator().manual_seed(0))


def _spread(model: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():  # zero-initialised method tensors and heads get values, so outputs differ
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _write_v1(out: Path, config: dict, tensors: dict) -> Path:
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"format_version": 1, **config}))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "model.safetensors"))
    return out


def test_a_format_1_classifier_and_tagger_load_with_their_head_names_mapped(tmp_path):
    torch.manual_seed(1)
    cls = _spread(TaskModel(CFG, "classification", ["a", "b"], ("mlm",), "first", pooler=True))
    tag = _spread(TaskModel(CFG, "tagging", ["B", "E", "M", "S"]))
    old = {"head.pooler.": "pooler.", "head.classifier.": "classifier."}
    renamed = {next((old[p] + k[len(p):] for p in old if k.startswith(p)), k): v for k, v in cls.state_dict().items()
               if k != "mlm.decoder.weight"}  # tied to the embedding: format 1 left it out too
    _write_v1(tmp_path / "cls", {"architecture": "lmforge.LanguageModel", "heads": ["mlm"], "task": "classification",
                                 "labels": ["a", "b"], "pooling": "pooler", "model": CFG.model_dump()}, renamed)
    tagger = {k.replace("head.classifier.", "tagger."): v for k, v in tag.state_dict().items()}
    _write_v1(tmp_path / "tag", {"architecture": "lmforge.LanguageModel", "task": "tagging",
                                 "labels": ["B", "E", "M", "S"], "model": CFG.model_dump()}, tagger)
    loaded_cls, loaded_tag = load_model_dir(tmp_path / "cls"), load_model_dir(tmp_path / "tag")
    assert torch.equal(loaded_cls.model.classify(IDS), cls.classify(IDS))
    assert torch.equal(loaded_tag.model.tag(IDS), tag.tag(IDS))
    assert loaded_cls.config["format_version"] == 2 and loaded_cls.config["pooler"] is True


@pytest.mark.parametrize("method, settings", [("full", {}), ("lora", {"rank": 2, "alpha": 4.0, "dropout": 0.0,
                                                                       "targets": ["attn.qkv"]}),
                                              ("prefix", {"length": 2})])
def test_a_format_1_fine_tuning_directory_loads_full_or_over_its_base(method, settings, tmp_path):
    torch.manual_seed(2)
    base = TaskModel(CFG, heads=("mlm",))
    base_dir = save_model_dir(base, model_dir_config(base), tmp_path / "base")
    model = TaskModel(CFG, "classification", ["neg", "pos"])
    model.load_state_dict({k: v for k, v in base.state_dict().items() if k.startswith("backbone.")}, strict=False)
    apply_method(model, method, settings)
    with torch.no_grad():  # the new tensors and the head train; the backbone stays the base's
        for name, p in model.named_parameters():
            if not name.startswith("backbone.") or "lora_" in name or "prefix." in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    out = tmp_path / "ft"
    out.mkdir()
    meta = {"format_version": 1, "architecture": "lmforge.TaskModel", "task": "classification",
            "labels": ["neg", "pos"], "method": method, "settings": settings, "pooling": "first",
            "model": CFG.model_dump(), "base": str(base_dir), "pad_id": 0, "data": {"max_length": 12}}
    (out / "config.json").write_text(json.dumps(meta))
    if method == "full":
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    else:  # format 1 kept only the method's tensors and the head
        save_file(peft_state(model), str(out / "adapter.safetensors"))
    loaded = load_model_dir(out)
    assert torch.equal(loaded.model.classify(IDS), model.classify(IDS))
    assert loaded.config["max_length"] == 12 and loaded.model.method == method

    save_model_dir(loaded.model, loaded.config, out)  # rewritten in format 2, in place
    assert not (out / "adapter.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["format_version"] == 2
    assert torch.equal(load_model_dir(out).model.classify(IDS), model.classify(IDS))


def test_writing_into_a_run_directory_keeps_its_other_files_and_bad_versions_are_refused(tmp_path):
    torch.manual_seed(3)
    model = _spread(TaskModel(CFG, "classification", ["a", "b"], pooling="mean"))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    save_model_dir(model, model_dir_config(model, max_length=8), run)
    assert (run / "metrics.jsonl").read_text() == "{}\n" and (run / "checkpoints").is_dir()
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary left behind
    assert set(load_file(str(run / "model.safetensors"))) == set(model.state_dict())
    config = json.loads((run / "config.json").read_text())
    assert (config["pooling"], config["pooler"], config["method"], config["max_length"]) == ("mean", False, "full", 8)
    assert torch.equal(load_model_dir(run).model.classify(IDS), model.classify(IDS))

    (run / "config.json").write_text(json.dumps({**config, "format_version": 3}))
    with pytest.raises(ConfigError, match="format_version 3; this lmforge reads 1 and 2"):
        load_model_dir(run)
    (run / "config.json").write_text(json.dumps({**config, "method": "lora", "settings": {"rank": 2}}))
    with pytest.raises(ConfigError, match="'settings' of method 'lora' lacks 'targets'"):
        load_model_dir(run)


def test_an_onnx_directory_exported_from_format_1_still_serves(tmp_path):
    """A deployed directory keeps its source's config.json: one written under format 1 still loads."""
    import lmforge
    from lmforge.serve.export import export_model
    from lmforge.tokenize.tokenizer import load_tokenizer
    from tests.model.hf_helpers import train_wordpiece

    torch.manual_seed(4)
    train_wordpiece().save(str(tmp_path / "tokenizer.json"))
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json")
    cfg = CFG.model_copy(update={"vocab_size": tokenizer.vocab_size})
    model = _spread(TaskModel(cfg, "classification", ["a", "b"], pooling="first", pooler=True))
    src = save_model_dir(model, model_dir_config(model), tmp_path / "src", tokenizer)
    out = export_model(src, "onnx", tmp_path / "onnx")
    config = json.loads((out / "config.json").read_text())
    old = {k: v for k, v in config.items() if k not in ("pooler", "method", "settings")}
    (out / "config.json").write_text(json.dumps({**old, "format_version": 1, "pooling": "pooler"}))
    text = "质量很好，物流也快"
    assert lmforge.load(out).classify(text)["score"] == pytest.approx(lmforge.load(src).classify(text)["score"], abs=1e-4)
