"""The finetune stage end to end on tiny models: tagging (segmentation, NER), decoder classification,
the CLI, `lmforge evaluate --model` with baselines and ensembles, and clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.cli import main
from lmforge.config import ConfigError
from lmforge.finetune.stage import finetune, make_finetune_config
from tests.finetune.conftest import ft_layers


def _model_row(report):
    rows = [r for r in report["rows"] if r["kind"] == "model"]
    assert len(rows) == 1
    return rows[0]


def test_word_segmentation_with_lora_reports_span_f1(tmp_path, base_dir, seg_small):
    run = finetune(make_finetune_config(*ft_layers(tmp_path / "seg", base_dir, seg_small, task="tagging",
                                                   method="lora"), source="t"))
    meta = json.loads((tmp_path / "seg" / "config.json").read_text())
    assert meta["labels"] == ["B", "E", "M", "S"]
    row = _model_row(run["report"])
    assert row["metrics"]["task"] == "tagging" and 0 <= row["metrics"]["f1"] <= 1
    assert row["info"]["trainable_share"] < 0.1
    evals = [json.loads(x) for x in (tmp_path / "seg" / "metrics.jsonl").read_text().splitlines()]
    assert sum("val_acc" in e for e in evals) == 2  # evaluated once per epoch


def test_ner_tags_come_from_pos_rows(tmp_path, base_dir, pos_small):
    run = finetune(make_finetune_config(*ft_layers(tmp_path / "ner", base_dir, pos_small, task="tagging",
                                                   method="adapter", adapter={"placement": "pfeiffer"}), source="t"))
    labels = json.loads((tmp_path / "ner" / "config.json").read_text())["labels"]
    assert "O" in labels and {"B-PER", "B-LOC"} <= set(labels)
    assert _model_row(run["report"])["metrics"]["task"] == "tagging"


def test_decoder_classifies_by_last_token(tmp_path, decoder_base_dir, reviews_small):
    run = finetune(make_finetune_config(*ft_layers(tmp_path / "dec", decoder_base_dir, reviews_small,
                                                   method="lora", robust={"rdrop_alpha": 1.0}), source="t"))
    assert _model_row(run["report"])["metrics"]["task"] == "classification"
    assert run["result"].step == 2 * (144 // 16)


def test_cli_finetune_then_evaluate_model_and_ensemble(tmp_path, base_dir, reviews_small, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--init-from", str(base_dir), "--data", str(reviews_small), "--no-progress", "epochs=1",
              "data.max_length=32", "train.batch_size=16", "train.tensorboard=false", "train.peak_flops=1e12",
              "train.device=cpu"]
    assert main(["finetune", "--config", "configs/finetune-reviews-lora.yaml", "--out", str(a), *common,
                 "report.baselines=true", "report.max_train_examples=100"]) == 0
    report = json.loads((a / "report" / "report.json").read_text())
    names = [r["name"] for r in report["rows"]]
    assert names[0] == "lmforge lora" and len(names) >= 3  # next to the majority and TF-IDF baselines
    assert main(["finetune", "--config", "configs/finetune-reviews-full.yaml", "--out", str(b), *common,
                 "report.baselines=false", "train.seed=1"]) == 0
    assert main(["evaluate", "--model", str(a), "--data", str(reviews_small), "--out", str(tmp_path / "ev"),
                 "--no-progress"]) == 0
    single = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert [r["name"] for r in single["rows"]] == ["lmforge lora"]
    assert single["rows"][0]["metrics"]["accuracy"] == report["rows"][0]["metrics"]["accuracy"]
    assert main(["evaluate", "--model", str(a), str(b), "--data", str(reviews_small), "--out",
                 str(tmp_path / "ens"), "--no-progress"]) == 0
    ens = json.loads((tmp_path / "ens" / "report.json").read_text())
    assert ens["rows"][0]["name"] == "ensemble of 2" and ens["rows"][0]["info"]["models"] == [str(a), str(b)]


def test_bad_inputs_fail_with_one_line_errors(tmp_path, base_dir, reviews_small, capsys):
    with pytest.raises(ConfigError, match="no model.safetensors|config.json"):
        finetune(make_finetune_config(*ft_layers(tmp_path / "x", tmp_path, reviews_small), source="t"))
    with pytest.raises(ConfigError, match="data.path"):
        finetune(make_finetune_config({"init_from": str(base_dir)}, source="t"))
    assert main(["finetune", "--init-from", str(base_dir), "--data", str(reviews_small), "method=dora"]) == 2
    assert "method" in capsys.readouterr().err


def test_no_pretraining_from_an_architecture_and_a_tokenizer(tmp_path, tokenizer_file, reviews_small):
    from tests.finetune.conftest import tiny_arch

    arch = tiny_arch(700).model_dump(mode="json")
    arch.pop("vocab_size")
    layers = ft_layers(tmp_path / "s", tokenizer_file, reviews_small, epochs=1)
    layers[0].pop("init_from")
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tokenizer_file)).get_vocab_size()
    with pytest.raises(ConfigError, match="vocab_size"):
        finetune(make_finetune_config(*layers, {"tokenizer": str(tokenizer_file),
                                                "model": {**arch, "vocab_size": vocab - 1}}, source="t"))
    run = finetune(make_finetune_config(*layers, {"tokenizer": str(tokenizer_file),
                                                  "model": {**arch, "vocab_size": vocab}}, source="t"))
    assert json.loads((tmp_path / "s" / "config.json").read_text())["base"] is None
    assert _model_row(run["report"])["metrics"]["task"] == "classification"
    with pytest.raises(ConfigError, match="tokenizer"):
        make_finetune_config({"data": {"path": str(reviews_small)}}, source="t")


def test_a_fine_tuned_model_is_served_by_the_predictor(tmp_path, base_dir, reviews_small, seg_small):
    """`lmforge finetune` output loads with lmforge.load (predictor, export, server) and predicts the same."""
    from lmforge.model.modeldir import load_model_dir
    from lmforge.serve.predictor import load

    for name, data, task in (("cls", reviews_small, "classification"), ("tag", seg_small, "tagging")):
        out = tmp_path / name
        finetune(make_finetune_config(*ft_layers(out, base_dir, data, task=task, epochs=1), source="t"))
        served = load(out)
        model = load_model_dir(out).model
        ids = torch.randint(5, 100, (2, 12))
        with torch.no_grad():
            expected = model.eval()(ids, torch.ones_like(ids))
            got = served.model.classify(ids, torch.ones_like(ids)) if task == "classification" else served.model.tag(ids, torch.ones_like(ids))
        assert torch.equal(expected, got)
    texts = [json.loads(line)["text"] for line in open(reviews_small / "test.jsonl", encoding="utf-8")][:3]
    predictions = load(tmp_path / "cls").classify(texts)
    labels = json.loads((tmp_path / "cls" / "config.json").read_text())["labels"]
    assert len(predictions) == 3 and all(p["label"] in labels for p in predictions)
    assert all(abs(sum(p["scores"].values()) - 1) < 1e-5 for p in predictions)
    from lmforge.serve.export import export_int8

    export_int8(tmp_path / "cls", tmp_path / "cls-int8")  # the quickstart's last stage does exactly this
    quantised = load(tmp_path / "cls-int8").classify(texts)
    assert all(abs(q["score"] - p["score"]) < 0.05 for q, p in zip(quantised, predictions))


def test_mean_pooling_and_fine_tuning_dropout(tmp_path, base_dir, reviews_small):
    """pooling=mean: the head averages the real tokens (padding changes nothing), has no tanh pooler,
    is recorded in config.json and served identically; dropout= overrides the pretrained model's."""
    from lmforge.model.modeldir import load_model_dir
    from lmforge.serve.predictor import load

    out = tmp_path / "mean"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=1),
                                  {"pooling": "mean", "dropout": 0.2}, source="t"))
    meta = json.loads((out / "config.json").read_text())
    assert meta["pooling"] == "mean" and meta["model"]["dropout"] == 0.2 and meta["model"]["attn_dropout"] == 0.2
    model = load_model_dir(out).model
    assert model.head.pooler is None
    ids = torch.randint(5, 100, (2, 9))
    padded = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], dim=1)  # (2, 14): 5 pad positions each
    mask = torch.cat([torch.ones_like(ids), torch.zeros(2, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        plain = model(ids, torch.ones_like(ids))
        assert torch.allclose(model(padded, mask), plain, atol=1e-5)
        assert torch.equal(load(out).model.classify(ids, torch.ones_like(ids)), plain)


def test_head_and_tail_truncation_is_trained_stored_and_served(tmp_path, base_dir, reviews_small, tokenizer_file):
    """truncation=head+tail: a long review keeps its end in training, and the predictor cuts it the same way."""
    from tokenizers import Tokenizer

    from lmforge.finetune.data import encode_classification
    from lmforge.model.modeldir import load_model_dir
    from lmforge.serve.predictor import load

    text = "".join(json.loads(line)["text"] for line in open(reviews_small / "train.jsonl", encoding="utf-8"))[:400]
    tok = Tokenizer.from_file(str(tokenizer_file))
    full = tok.encode(text).ids
    head = encode_classification(tok, [text], [None], ["a"], {"a": 0}, 24).input_ids[0]
    both = encode_classification(tok, [text], [None], ["a"], {"a": 0}, 24, "head+tail").input_ids[0]
    assert len(head) == len(both) == 24 and head[:6] == both[:6] == full[:6]
    assert both[-17:] == full[-17:] and head[-17:] != full[-17:]  # the end of the text survives

    out = tmp_path / "ht"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=1),
                                  {"data": {"max_length": 24, "truncation": "head+tail"}}, source="t"))
    served = load(out)
    assert served.truncation == "head+tail" and served.max_length == 24
    model = load_model_dir(out).model
    ids = torch.tensor([both])
    with torch.no_grad():
        expected = model.eval()(ids, torch.ones_like(ids)).float().softmax(-1)[0]
    got = served.classify(text)["scores"]
    assert all(abs(got[label] - float(p)) < 1e-5 for label, p in zip(served.labels, expected))
    from lmforge.eval.explain import explain

    attribution = explain(served, text, steps=4)  # explains the input classify really sees
    assert len(attribution.tokens) == 24 and abs(attribution.probability - got[attribution.label]) < 1e-5
    from lmforge.model.hf import export_hf
    from lmforge.serve.export import export_model

    for to in ("int8", "onnx"):  # deployed copies keep the setting
        assert load(export_model(out, to, tmp_path / to)).truncation == "head+tail"
    via_hf = load(export_hf(out, tmp_path / "hf"))  # and so does a Hugging Face directory, loaded back
    assert (via_hf.truncation, via_hf.max_length) == ("head+tail", 24)
    assert abs(via_hf.classify(text)["score"] - max(got.values())) < 1e-5


@pytest.mark.parametrize("layer, message", [
    ({"method": "adalora", "lora": {"embedding_rank": 4}}, "lora.embedding_rank applies to method=lora"),
    ({"method": "lora", "lora": {"embedding_rank": 4, "backend": "peft"}}, "with lora.backend=lmforge"),
    ({"task": "tagging", "data": {"truncation": "head+tail"}}, "head\\+tail applies to single-text"),
    ({"data": {"truncation": "head+tail", "pair_field": "hypothesis"}}, "head\\+tail applies to single-text"),
    ({"method": "lora", "soup": 2}, "soup=2 averages whole models"),
])
def test_options_that_would_be_silently_ignored_are_refused(layer, message, base_dir, reviews_small):
    with pytest.raises(ConfigError, match=message):
        make_finetune_config({"init_from": str(base_dir), "data": {"path": str(reviews_small)}}, layer, source="t")


def test_a_soup_averages_the_weights_of_runs_with_consecutive_seeds(tmp_path, base_dir, reviews_small):
    """soup=2: runs with seeds 5 and 6 under OUT/soup/, then OUT's model is the mean of their weights,
    scored next to the baselines (the parts are scored alone, without baselines)."""
    from safetensors.torch import load_file

    out = tmp_path / "soup"
    result = finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=1),
                                           {"soup": 2, "train": {"seed": 5}, "report": {"baselines": True}},
                                           source="t"))
    parts = [load_file(str(out / "soup" / f"seed-{seed}" / "model.safetensors")) for seed in (5, 6)]
    soup = load_file(str(out / "model.safetensors"))
    key = "head.classifier.weight"
    assert not torch.equal(parts[0][key], parts[1][key])  # different seeds, different runs
    for name, tensor in soup.items():
        assert torch.allclose(tensor, (parts[0][name] + parts[1][name]) / 2, atol=1e-6), name
    row = _model_row(result["report"])
    assert row["name"] == "lmforge full (soup of 2)" and len(row["info"]["parts_accuracy"]) == 2
    assert any(r["kind"] == "baseline" for r in result["report"]["rows"])
    assert (out / "report" / "report.json").is_file() and not (out / "curves.jsonl").exists()
    # the report plots the curves of the run's own metrics.jsonl (the loop's train_loss/val_loss lines)
    plotted = result["report"]["curves"]
    assert plotted["train"]["steps"] and plotted["validation"]["steps"]
    assert (out / "report" / "curves.png").is_file()


def test_cli_nan_guard_stop_is_one_error_line(tmp_path, base_dir, reviews_small, capsys):
    # lr=1e30 blows the weights up after the first step: the next losses are not finite
    code = main(["finetune", "--init-from", str(base_dir), "--data", str(reviews_small), "--out", str(tmp_path / "o"),
                 "--no-progress", "epochs=1", "data.max_length=32", "train.optim.lr=1e30", "train.max_bad_steps=1",
                 "train.device=cpu", "train.tensorboard=false", "train.peak_flops=1e12", "report.baselines=false"])
    err = capsys.readouterr().err
    assert code == 1
    last = err.rstrip("\n").rsplit("\n", 1)[-1]  # earlier lines: the skipped-step warnings
    assert last.startswith("lmforge: error: step ") and last.endswith("stopping: too many non-finite steps")
    assert "Traceback" not in err


def test_a_single_label_train_split_is_one_config_error(tmp_path, base_dir):
    from tests.finetune.conftest import corpus_rows, write_prepared

    rows = [{**r, "label": "positive"} for r in corpus_rows("reviews", 60)]
    data = write_prepared(tmp_path / "one-label", rows, 10, 10)
    with pytest.raises(ConfigError) as err:
        finetune(make_finetune_config(*ft_layers(tmp_path / "o", base_dir, data), source="t"))
    message = str(err.value)
    assert "label" in message and "'positive'" in message and "train.jsonl" in message and "\n" not in message
    assert not (tmp_path / "o").exists()  # refused before any output is written
