"""An imported Hugging Face tokenizer's own padding and truncation are removed on import, so that
lmforge's data.max_length, dynamic padding and length bucketing govern batch shapes: the real
all-MiniLM-L6-v2 ships a tokenizer.json that pads every text to 128 tokens, which made each
fine-tuning example cost 128 tokens at data.max_length=32 (and let the model attend to the pads)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from lmforge.finetune.build import load_base
from lmforge.finetune.data import encoding_tokenizer as load_tokenizer
from lmforge.model.modeldir import read_json
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.heads import TaskModel
from lmforge.model.hf import import_hf
from lmforge.model.transformer import TransformerConfig
from tests.finetune.conftest import ft_layers
from tests.utils import minilm_dir


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return import_hf(minilm_dir(), tmp_path_factory.mktemp("minilm") / "minilm")


def test_imported_minilm_fine_tunes_at_data_max_length(tmp_path, base, reviews_small):
    shipped = json.loads((minilm_dir() / "tokenizer.json").read_text(encoding="utf-8"))
    assert shipped["padding"]["strategy"] == {"Fixed": 128}  # what the package ships, the case at hand

    saved = json.loads((base / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["padding"] is None and saved["truncation"] is None
    removed = json.loads((base / "config.json").read_text(encoding="utf-8"))["tokenizer"]["removed"]
    assert removed["padding"]["strategy"] == {"Fixed": 128} and removed["truncation"]["max_length"] == 128

    # a model directory imported before the fix still carries them: every loader drops them too
    assert len(Tokenizer.from_str(json.dumps(shipped)).encode("short").ids) == 128
    assert load_tokenizer(minilm_dir()).encode("short").tokens == ["[CLS]", "short", "[SEP]"]

    out = tmp_path / "ft"
    finetune(make_finetune_config(*ft_layers(out, base, reviews_small, epochs=1, method="full",
                                             train={"batch_size": 48}), source="t"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seen = [r["tokens"] for r in rows if "tokens" in r]  # attention-mask ones, cumulative per logged step
    per_step = [b - a for a, b in zip([0, *seen], seen)]
    assert len(per_step) == 144 // 48
    assert all(0 < n <= 48 * 32 for n in per_step), per_step  # <= data.max_length tokens per example


def test_a_cls_classifier_starts_from_the_imported_pooler(base):
    arch = TransformerConfig(**read_json(base / "config.json")["model"])
    pretrained = load_file(str(base / "model.safetensors"))
    cls = TaskModel(arch, "classification", ["a", "b"], pooling="first")
    load_base(cls, base)
    torch.testing.assert_close(cls.head.pooler.weight, pretrained["pooler.weight"], rtol=0, atol=0)
    torch.testing.assert_close(cls.head.pooler.bias, pretrained["pooler.bias"], rtol=0, atol=0)
    mean = TaskModel(arch, "classification", ["a", "b"], pooling="mean")  # no pooler: nothing to start
    load_base(mean, base)
    assert mean.head.pooler is None
