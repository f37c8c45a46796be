"""Task heads, label maps, pooling, pair inputs and sub-token alignment of tags."""

from __future__ import annotations

import json

import torch
from tokenizers import Tokenizer

from lmforge.finetune.data import collate, encode_classification, encode_tagging
from lmforge.model.modeldir import load_model_dir
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.heads import TaskModel, pool
from lmforge.train.objectives import IGNORE
from tests.finetune.conftest import ft_layers, tiny_arch


def test_classification_and_tagging_heads_shapes():
    arch = tiny_arch(100).model_copy(update={"dropout": 0.0, "attn_dropout": 0.0})
    ids = torch.randint(5, 100, (3, 7))
    cls = TaskModel(arch, "classification", ["negative", "positive"]).eval()
    tag = TaskModel(arch, "tagging", ["B", "E", "M", "S"]).eval()
    assert cls(ids).shape == (3, 2) and tag(ids).shape == (3, 7, 4)
    assert cls.label_to_id == {"negative": 0, "positive": 1}


def test_last_token_pooling_ignores_right_padding():
    """A decoder classifies from its last real token: padding the batch must not change a prediction."""
    arch = tiny_arch(100, causal=True).model_copy(update={"dropout": 0.0, "attn_dropout": 0.0})
    torch.manual_seed(0)
    model = TaskModel(arch, "classification", ["a", "b", "c"]).eval()
    assert model.head.pooling == "last"
    short = torch.randint(5, 100, (1, 5))
    padded = torch.cat([short, torch.zeros(1, 4, dtype=torch.long)], 1)
    mask = torch.tensor([[1] * 5 + [0] * 4])
    assert torch.allclose(model(short), model(padded, mask), atol=1e-6)
    hidden = torch.arange(2 * 4 * 1.0).view(2, 4, 1)
    assert pool(hidden, torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]), "last").flatten().tolist() == [1.0, 7.0]


def test_pair_inputs_get_segment_ids(tokenizer_file):
    tok = Tokenizer.from_file(str(tokenizer_file))
    enc = encode_classification(tok, ["质量很好"], ["物流很快"], ["positive"], {"negative": 0, "positive": 1}, 32)
    types = enc.token_type_ids[0]
    assert types[0] == 0 and types[-1] == 1 and 0 < sum(types) < len(types)
    assert enc.labels == [1]


def test_tags_sit_on_first_sub_token(tokenizer_file):
    tok = Tokenizer.from_file(str(tokenizer_file))
    units = [["unbelievably", "好", "的"]]  # the English word splits into several WordPieces
    enc = encode_tagging(tok, units, [["B-X", "O", "O"]], {"B-X": 0, "O": 1}, 32)
    first, labels = enc.first_token[0], enc.labels[0]
    assert first[1] - first[0] > 1, "the test needs a unit cut into several sub-tokens"
    assert labels[first[0]] == 0 and labels[first[1]] == 1 and labels[first[2]] == 1
    assert all(labels[i] == IGNORE for i in range(first[0] + 1, first[1]))  # continuation pieces ignored
    assert labels[0] == IGNORE and labels[-1] == IGNORE  # [CLS], [SEP]
    batch = collate(enc, [0], 0)
    assert batch["labels"].shape == batch["input_ids"].shape


def test_label_names_travel_in_config_json(tmp_path, base_dir, reviews_small):
    out = tmp_path / "run"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=1), source="test"))
    meta = json.loads((out / "config.json").read_text())
    assert meta["task"] == "classification" and meta["labels"] == ["negative", "positive"] and meta["method"] == "full"
    model = load_model_dir(out).model
    assert model.labels == ["negative", "positive"]
    for name in ("model.safetensors", "tokenizer.json", "metrics.jsonl", "report/report.json"):
        assert (out / name).is_file(), name


def test_long_tagged_texts_are_windowed_not_truncated(tmp_path, base_dir, seg_small):
    """Every character of a text longer than max_length gets a model prediction (windows, stitched back)."""
    from lmforge.finetune.data import chunk_units
    from lmforge.eval.scoring import split_probabilities
    from lmforge.serve.predictor import load

    texts, tags, owner = chunk_units(["abcdefg", "xy"], [list("BMMEBES"), list("BE")], 3)
    assert texts == ["abc", "def", "g", "xy"] and owner == [0, 0, 0, 1] and tags[1] == ["E", "B", "E"]
    out = tmp_path / "seg"
    finetune(make_finetune_config(*ft_layers(out, base_dir, seg_small, task="tagging", epochs=1),
                                  {"data": {"max_length": 8}}, source="test"))
    gold, probs, texts = split_probabilities(load(out), str(seg_small), "test")
    assert any(len(t) > 8 for t in texts)
    for text, p in zip(texts, probs):
        assert p.shape == (len(text), 4)
    # every character past the first window (max_length 8: 6 content tokens) has a softmax row of its
    # own, not the one-hot fallback of a character that no window covered
    import numpy as np

    long_rows = [p for p in probs if len(p) > 8]
    assert long_rows and all(not np.isin(p[6:], [0.0, 1.0]).all(-1).any() for p in long_rows)


def test_shuffled_batches_are_length_bucketed_and_resume_exactly(tokenizer_file):
    """Bucketing cuts padding on real reviews (heavy-tailed lengths) while every epoch still serves
    each example once, in a seed-and-epoch-determined order that a resumed source continues exactly."""
    from lmforge.finetune.data import ExampleSource
    from tests.finetune.conftest import corpus_rows

    rows = corpus_rows("reviews", 400)
    tok = Tokenizer.from_file(str(tokenizer_file))
    labels = {"negative": 0, "positive": 1}
    enc = encode_classification(tok, [r["text"] for r in rows], [None] * len(rows), [r["label"] for r in rows],
                                labels, 128)

    def padding(source: ExampleSource) -> float:
        batches = list(source)
        real = sum(int(b["attention_mask"].sum()) for b in batches)
        return 1 - real / sum(b["attention_mask"].numel() for b in batches)

    plain, bucketed = ExampleSource(enc, 16, 0, bucket=1), ExampleSource(enc, 16, 0, bucket=10)
    assert padding(bucketed) < 0.5 * padding(plain)
    for epoch in (0, 1):
        bucketed.set_epoch(epoch)
        order = bucketed._order()
        assert sorted(order) == list(range(len(rows)))
    assert ExampleSource(enc, 16, 0, bucket=10, seed=1)._order() != ExampleSource(enc, 16, 0, bucket=10)._order()
    first = ExampleSource(enc, 16, 0, bucket=10)
    stream = iter(first)
    for _ in range(5):
        next(stream)
    resumed = ExampleSource(enc, 16, 0, bucket=10)
    resumed.load_state_dict(first.state_dict())
    rest, expected = list(resumed), list(stream)
    assert len(rest) == len(expected) and all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(rest, expected))


def test_first_token_classifier_computes_only_that_position_in_the_last_block():
    """The last block's output for [CLS] alone equals the full block's at position 0 (logits and
    gradients), for post-LN and pre-LN encoders, a causal model and prefix tuning, with padding."""
    from lmforge.model.peft import add_prefix

    ids = torch.randint(5, 100, (3, 9))
    mask = torch.tensor([[1] * 9, [1] * 4 + [0] * 5, [1] * 6 + [0] * 3])
    for norm, causal, prefix in (("post", False, False), ("pre", False, False), ("pre", True, False),
                                 ("post", False, True)):
        arch = tiny_arch(100, causal).model_copy(update={"norm": norm, "dropout": 0.0, "attn_dropout": 0.0})
        torch.manual_seed(0)
        model = TaskModel(arch, "classification", ["a", "b"], pooling="first", dropout=0.0)
        if prefix:
            add_prefix(model, 3)
        hidden = model.backbone(ids, mask)  # every position, as before
        full = model.head(hidden, mask)
        full.sum().backward()
        full_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        shapes = []
        model.backbone.blocks[-1].mlp.register_forward_hook(lambda m, args, out: shapes.append(out.shape))
        one = model(ids, mask)
        assert shapes == [(3, 1, arch.d_model)]  # the classifier's own forward takes the short path
        one.sum().backward()
        torch.testing.assert_close(one, full, rtol=1e-5, atol=1e-6)
        for name, p in model.named_parameters():
            torch.testing.assert_close(p.grad, full_grads[name], rtol=1e-4, atol=1e-6, msg=name)
