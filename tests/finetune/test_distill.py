"""Distillation: a student fine-tuned on a teacher's soft labels (its few labelled examples plus
unlabelled in-domain text) beats the same student fine-tuned on the labels alone; mismatched teachers
are refused in one line before training; unlabelled texts that are validation/test texts are left out."""

from __future__ import annotations

import json

import pytest

import lmforge
from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.finetune.stage import finetune, make_finetune_config
from tests.finetune.conftest import corpus_rows, ft_layers, write_prepared


def _source_rows(n: int, seed: int) -> list[dict]:
    """Real sentences labelled by where they come from: product reviews or People's Daily news."""
    reviews = [{"text": r["text"], "label": "review"} for r in corpus_rows("reviews", n, seed=seed)]
    news = [{"text": r["text"], "label": "news"} for r in corpus_rows("peoples-daily", n, seed=seed)]
    rows = [row for pair in zip(reviews, news) for row in pair]  # alternating: every split has both
    return rows


@pytest.fixture(scope="module")
def source_task(tmp_path_factory):
    """A teacher's labelled set (300 examples) and a student's (8) sharing validation and test splits."""
    rows = _source_rows(230, seed=3)
    root = tmp_path_factory.mktemp("source")
    teacher_data = write_prepared(root / "teacher", rows, 80, 80)
    student_data = write_prepared(root / "student", rows[:160] + rows[160:168], 80, 80)
    return teacher_data, student_data


def _accuracy(out, data):
    rows = [json.loads(line) for line in open(data / "test.jsonl", encoding="utf-8")]
    answers = lmforge.load(out).classify([r["text"] for r in rows])
    return sum(a["label"] == r["label"] for a, r in zip(answers, rows)) / len(rows)


def test_a_distilled_student_beats_the_same_student_without_the_teacher(source_task, base_dir, tmp_path):
    teacher_data, student_data = source_task
    teacher = tmp_path / "teacher"
    fp32 = {"train": {"precision": "fp32"}}  # the same numbers on every CPU, native bf16 or not
    finetune(make_finetune_config(*ft_layers(teacher, base_dir, teacher_data, epochs=4), fp32, source="t"))
    teacher_acc = _accuracy(teacher, teacher_data)
    assert teacher_acc >= 0.85, teacher_acc  # a teacher worth learning from

    alone = tmp_path / "alone"  # 8 labels: small batches and more epochs, so that it too takes ~60 steps
    finetune(make_finetune_config(*ft_layers(alone, base_dir, student_data, epochs=20),
                                  {"train": {"batch_size": 4, "precision": "fp32", "early_stopping": {"patience": 5}}},
                                  source="t"))
    distilled = tmp_path / "distilled"
    assert main(["distill", "--teacher", str(teacher), "--init-from", str(base_dir), "--data", str(student_data),
                 "--out", str(distilled), "--no-progress", f"distill.unlabelled={teacher_data}", "distill.alpha=0.8",
                 "epochs=4", "data.max_length=32", "report.baselines=false", "train.batch_size=16",
                 "train.log_every=1", "train.device=cpu", "train.optim.lr=3e-3", "train.peak_flops=1e12",
                 "train.tensorboard=false", "train.precision=fp32"]) == 0
    alone_acc, distilled_acc = _accuracy(alone, student_data), _accuracy(distilled, student_data)
    print(f"test accuracy: teacher {teacher_acc:.3f}, student alone {alone_acc:.3f}, distilled {distilled_acc:.3f}")
    assert distilled_acc >= alone_acc + 0.10, (alone_acc, distilled_acc, teacher_acc)


def test_unlabelled_texts_that_are_evaluation_texts_are_left_out(source_task, tmp_path):
    from lmforge.finetune.distill import read_unlabelled

    teacher_data, student_data = source_task
    texts, pairs, left_out = read_unlabelled(str(teacher_data), str(student_data), "text", None)
    held_out = {json.loads(line)["text"] for split in ("validation", "test")
                for line in open(student_data / f"{split}.jsonl", encoding="utf-8")}
    train = [json.loads(line)["text"] for line in open(teacher_data / "train.jsonl", encoding="utf-8")]
    assert not held_out & set(texts) and left_out == sum(t in held_out for t in train)  # by brute force
    assert len(texts) + left_out == len(train)  # every row accounted for
    leaky = write_prepared(tmp_path / "leaky", [json.loads(line) for line in open(student_data / "test.jsonl")] * 3,
                           0, 0)  # a train split made of the test texts
    texts, _, left_out = read_unlabelled(str(leaky), str(student_data), "text", None)
    assert texts == [] and left_out == 240


def test_a_teacher_with_other_labels_is_refused_before_training(source_task, base_dir, reviews_small, tmp_path):
    _, student_data = source_task
    other = tmp_path / "other"
    finetune(make_finetune_config(*ft_layers(other, base_dir, reviews_small, epochs=1), source="t"))
    layers = ft_layers(tmp_path / "student", base_dir, student_data, epochs=1, train={"batch_size": 4})
    with pytest.raises(ConfigError, match="the teacher's labels .* differ from the training split's") as refused:
        finetune(make_finetune_config(*layers, {"distill": {"teacher": str(other)}}, source="t"))
    assert "\n" not in str(refused.value) and not (tmp_path / "student" / "model.safetensors").exists()


def test_a_pruned_classifier_recovers_by_distillation_from_its_unpruned_self(source_task, base_dir, tmp_path):
    """`compress --ffn-keep --head-keep` then `distill --teacher ORIGINAL --init-from PRUNED`: the recovery fine-tune
    starts exactly where the pruned classifier is (its backbone and its own head) and stays at its size."""
    import torch

    from lmforge.finetune.build import build_finetune_model
    from lmforge.finetune.compress import compress
    from lmforge.finetune.stage import _architecture

    teacher_data, _ = source_task
    fp32 = {"train": {"precision": "fp32"}}
    original = tmp_path / "original"
    finetune(make_finetune_config(*ft_layers(original, base_dir, teacher_data, epochs=4), fp32, source="t"))
    pruned = tmp_path / "pruned"
    compress(str(original), str(pruned), ffn_keep=0.125, head_keep=0.5, data=str(teacher_data))
    recovered = tmp_path / "recovered"
    config = make_finetune_config(*ft_layers(recovered, pruned, teacher_data, epochs=2), fp32,
                                  {"distill": {"teacher": str(original), "alpha": 0.9}}, source="t")
    start = build_finetune_model(config, _architecture(config)[0], lmforge.load(pruned).labels).eval()
    ids = torch.tensor([lmforge.load(pruned).tokenizer.encode("这家店的服务很好").ids])
    with torch.no_grad():
        torch.testing.assert_close(start.classify(ids), lmforge.load(pruned).model.classify(ids), rtol=0, atol=0)
    finetune(config)
    sizes = lambda d: (lmforge.load(d).model.config.d_ff, lmforge.load(d).model.config.heads)  # noqa: E731
    assert sizes(recovered) == sizes(pruned) == (8, 2)
    accuracy = {name: _accuracy(tmp_path / name, teacher_data) for name in ("original", "pruned", "recovered")}
    print("test accuracy:", accuracy)
    assert accuracy["recovered"] >= 0.75  # a working classifier, near its teacher (0.91 here)
