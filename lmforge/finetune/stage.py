"""The `lmforge finetune` stage: a pretrained model dir + a prepared labelled dataset -> a fine-tuned model
dir with its evaluation report (the model row next to the baselines on the test split).

Training is the one loop of lmforge.train.loop with a fine-tuning objective; evaluation on the
validation split runs every epoch and drives early stopping (``train.early_stopping``).
"""

from __future__ import annotations

import copy
import shutil
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch


from lmforge.config import ConfigError, build_config, write_config
from lmforge.data.examples import read_classification, read_pairs, read_tagging, subset_indices
from lmforge.data.prepared import check_prepared, pair_field
from lmforge.eval.scoring import method_name, model_row, split_probabilities
from lmforge.finetune.build import build_finetune_model, prompt_token_ids
from lmforge.finetune.config import FinetuneConfig, SelfTrainingConfig
from lmforge.finetune.distill import read_unlabelled
from lmforge.finetune.data import (
    Encoded,
    ExampleSource,
    chunk_units,
    encode_classification,
    encode_tagging,
    encoding_tokenizer,
    pad_id,
)
from lmforge.finetune.ensemble import average_checkpoints, average_weights
from lmforge.finetune.objective import FinetuneObjective, balanced_class_weights
from lmforge.finetune.retrieval import PairSource, RetrievalObjective, encode_pairs
from lmforge.model.adalora import RankAllocator
from lmforge.model.heads import TaskModel
from lmforge.model.modeldir import (LoadedModel, check_and_load, load_model_dir, model_dir_config, read_json,
                                   save_model_dir)
from lmforge.model.peft import merge_lora, trainable_summary
from lmforge.model.transformer import TransformerConfig
from lmforge.serve.predictor import Predictor
from lmforge.tokenize.prompt import PromptTemplate
from lmforge.tokenize.tokenizer import load_tokenizer
from lmforge.train import harness
from lmforge.train.distributed import DistInfo
from lmforge.train.hardware import with_precision
from lmforge.train.loop import train_loop

__all__ = ["example_sources", "finetune", "make_finetune_config"]


def make_finetune_config(*layers: dict[str, Any], source: str = "config") -> FinetuneConfig:
    return build_config(FinetuneConfig, *layers, source=source)


def _architecture(config: FinetuneConfig) -> tuple[dict[str, Any], Path]:
    """(TransformerConfig fields, tokenizer.json path) from the pretrained dir or the config."""
    extra = {} if config.dropout is None else {"dropout": config.dropout, "attn_dropout": config.dropout}
    if config.init_from:
        base = read_json(Path(config.init_from) / "config.json")
        if "model" not in base:
            raise ConfigError(f"init_from: {config.init_from}/config.json has no 'model' section")
        return {**base["model"], **extra}, Path(config.init_from) / "tokenizer.json"
    assert config.model is not None and config.tokenizer is not None
    try:
        arch = TransformerConfig(**{**config.model, **extra}).model_dump(mode="json")
    except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"model: {str(exc).splitlines()[0]}") from None
    return arch, Path(config.tokenizer)


def _read(config: FinetuneConfig, split: str, max_length: int) -> tuple[list[str], list[Optional[str]], list[Any]]:
    d = config.data
    if config.task != "tagging":
        kind = {"multilabel": "multi", "regression": "value"}.get(config.task, "single")
        return read_classification(str(d.path), split, d.text_field, d.pair_field, d.label_field, kind)  # type: ignore[arg-type]
    texts, tags, _ = chunk_units(*read_tagging(str(d.path), split), max_length - 2)  # room for [CLS], [SEP]
    return texts, [None] * len(texts), tags


def _augment(config: FinetuneConfig, texts: list[str], pairs: list[Optional[str]], labels: list[Any]) -> tuple:
    if not config.augment.enabled:
        return texts, pairs, labels
    if config.task == "tagging":
        raise ConfigError("augment.enabled: EDA edits move words, which breaks per-character tags; "
                          "use it with a text-level task (classification, multilabel, regression)")
    from lmforge.finetune.augment import augment_examples

    rows = [{"text": t, "pair": p, "label": y} for t, p, y in zip(texts, pairs, labels)]
    out = list(augment_examples(rows, config.augment))
    return [r["text"] for r in out], [r["pair"] for r in out], [r["label"] for r in out]


def _encode(config: FinetuneConfig, tok: Any, split_data: tuple, label_to_id: dict[str, int], max_length: int,
            scale: tuple[float, float]) -> Encoded:
    texts, pairs, labels = split_data
    if config.task != "tagging":
        prompt = PromptTemplate(config.prompt.template) if config.prompt.template else None
        return encode_classification(tok, texts, pairs, labels, label_to_id, max_length, config.data.truncation,
                                     config.problem, scale, prompt)
    return encode_tagging(tok, texts, labels, label_to_id, max_length)


def _label_names(config: FinetuneConfig, train_labels: list[Any]) -> list[str]:
    """The head's outputs in order: class names, the union of the label sets, the target's name
    (regression), or tag names; refused when the train split leaves nothing to learn."""
    where = Path(str(config.data.path)) / "train.jsonl"
    if config.task == "regression":
        if len(set(train_labels)) < 2:
            found = f"every training value is {train_labels[0]!r}" if train_labels else "no training examples"
            raise ConfigError(f"{where}: {found}; regression needs values that vary "
                              f"(is data.label_field the right key?)")
        return [config.data.label_field]
    if config.task == "classification":
        labels = sorted(set(train_labels))
    else:  # a set per example (multilabel) or a tag per character
        labels = sorted({t for row in train_labels for t in row})
    if len(labels) < 2:  # the head would have one output: nothing to learn, and heads.py refuses it
        field = "tags" if config.task == "tagging" else f"label field '{config.data.label_field}'"
        found = f"every training example has the same {field}: {labels!r}" if labels else "no training examples"
        raise ConfigError(f"{where}: {found}; {config.task} needs at least "
                          f"two distinct labels (is data.label_field the right key?)")
    return labels


def _scale(config: FinetuneConfig, train_labels: list[Any]) -> tuple[float, float]:
    """(mean, std) of the train split's values (regression), so the head learns targets of unit size;
    the saved head has them folded back in (_fold_scale) and outputs the values themselves."""
    if config.task != "regression":
        return 0.0, 1.0
    values = torch.tensor(train_labels, dtype=torch.float64)
    return float(values.mean()), float(values.std(correction=0))


def example_sources(config: FinetuneConfig, tok: Any, arch: dict[str, Any], info: DistInfo = DistInfo(),
                    pseudo: Sequence[tuple[str, Optional[str], str]] = ()
                    ) -> tuple[ExampleSource, ExampleSource, list[str]]:
    """(train batches, validation batches, label names) of the prepared data, encoded as training sees them
    (the pre-flight times real batches of them); under torchrun, this rank's share of every batch.
    ``pseudo``: (text, pair, label) examples labelled by an earlier model (self-training) join train."""
    max_length = min(config.data.max_length, int(arch["max_positions"]))
    if config.task == "retrieval":
        return (*_pair_sources(config, tok, max_length, info), [])
    train_split = _read(config, "train", max_length)
    if config.data.max_train_examples:  # a few labels: the same subset the report's baselines see
        keep = subset_indices(len(train_split[0]), config.data.max_train_examples, config.data.subset_seed)
        train_split = tuple([column[i] for i in keep] for column in train_split)
    train_split = _augment(config, *train_split)
    if pseudo:
        train_split = tuple(a + list(b) for a, b in zip(train_split, zip(*pseudo)))
    val_split = _read(config, "validation", max_length)
    if config.continual.rehearsal:  # the earlier task's labels join the head; a sample of it joins the epochs
        from lmforge.finetune.continual import rehearsal_examples

        d = config.data

        def joined(split: tuple, name: str) -> tuple:
            sample, names = rehearsal_examples(config.continual, name, d.text_field, d.label_field)
            earlier_labels.update(names)
            return tuple(a + b for a, b in zip(split, sample))

        earlier_labels: set[str] = set()
        train_split, val_split = joined(train_split, "train"), joined(val_split, "validation")
        labels = sorted(set(_label_names(config, train_split[2])) | earlier_labels)
    else:
        labels = _label_names(config, train_split[2])
    scale = _scale(config, train_split[2])
    label_to_id = {name: i for i, name in enumerate(labels)}
    if config.distill.unlabelled:  # texts without labels: the teacher's soft labels are their targets
        from lmforge.finetune.distill import read_unlabelled

        d = config.data
        texts, pairs, left_out = read_unlabelled(config.distill.unlabelled, str(d.path), d.text_field, d.pair_field)
        if info.is_main:
            print(f"distill.unlabelled: {len(texts)} texts from {config.distill.unlabelled}"
                  f"{f', {left_out} left out as validation/test texts' if left_out else ''}")
        train_split = (train_split[0] + texts, train_split[1] + pairs, train_split[2] + [None] * len(texts))
    pad = pad_id(tok)
    tc = config.train
    shard = {"rank": info.rank, "world_size": info.world_size}
    train_src = ExampleSource(_encode(config, tok, train_split, label_to_id, max_length, scale), tc.batch_size, pad,
                              seed=tc.seed, **shard)
    val_src = ExampleSource(_encode(config, tok, val_split, label_to_id, max_length, scale), tc.batch_size, pad,
                            shuffle=False, drop_last=False, **shard)
    return train_src, val_src, labels


def _pair_sources(config: FinetuneConfig, tok: Any, max_length: int, info: DistInfo) -> tuple[PairSource, PairSource]:
    """task=retrieval: (query, passage[, hard negative]) batches of the train and validation splits."""
    d, tc = config.data, config.train
    shard = {"rank": info.rank, "world_size": info.world_size}
    sources = []
    for split in ("train", "validation"):
        encoded = encode_pairs(tok, *read_pairs(str(d.path), split, d.text_field, d.pair_field, d.negative_field),
                               max_length)
        train = split == "train"
        sources.append(PairSource(*encoded, tc.batch_size, pad_id(tok), seed=tc.seed, shuffle=train,
                                  drop_last=train, **shard))
    return sources[0], sources[1]


def finetune(config: FinetuneConfig) -> dict[str, Any]:
    """Run fine-tuning; returns {"result": LoopResult, "report": report dict, "trainable": (n, total)}.

    Under torchrun every process trains on its share of each global batch (train.batch_size per
    process, as in pretraining) and rank 0 alone writes OUT and scores it; the other ranks return
    "report": None."""
    if not config.data.path:
        raise ConfigError("data.path: no prepared data directory given (the output of `lmforge data prepare`)")
    check_prepared(config.data.path)
    found = pair_field(config.data.path)
    if found and config.data.pair_field is None:  # a text-pair directory: both texts, whatever the config says
        if config.data.truncation != "head":
            raise ConfigError(f"data.truncation={config.data.truncation}: {config.data.path} holds text pairs, "
                              f"which are cut longest-first; head+tail applies to single texts")
        config = config.model_copy(update={"data": config.data.model_copy(update={"pair_field": found})})
    base_prompt = read_json(Path(config.init_from) / "config.json").get("prompt") if config.init_from else None
    if base_prompt and config.prompt.template is None and config.task == "classification" and config.pooling is None:
        # continuing a prompt-based classifier (more training, distilling into its pruned copy): as it reads
        # (new labels need their words: prompt.verbalizer; a classification head instead: pooling=first|mean)
        inherited = {"template": base_prompt["template"], "verbalizer": base_prompt["verbalizer"]}
        config = build_config(FinetuneConfig, config.model_dump(mode="json", exclude_unset=False),
                              {"prompt": inherited}, source=f"prompt of init_from {config.init_from}")
        if config.train.progress:
            print(f"prompt: as init_from {config.init_from} reads: {inherited['template']!r}, {inherited['verbalizer']}")
    return _run(config)


def _run(config: FinetuneConfig, pseudo: Sequence[tuple[str, Optional[str], str]] = ()) -> dict[str, Any]:
    with harness.run(config.train, Path(config.out), config.resume) as setup:
        if config.self_training.unlabelled:
            return _self_train(config, setup.info)
        return _soup(config, setup.info) if config.soup > 1 else _finetune(config, setup, pseudo)


def _self_train(config: FinetuneConfig, info: DistInfo) -> dict[str, Any]:
    """Rounds under OUT/self-training/round-N, each fine-tuned from the same start on the labelled train split
    plus the texts the previous round's model labels with probability >= self_training.threshold; the
    last round's model is OUT's, with the counts in its report info."""
    st, d, out = config.self_training, config.data, Path(config.out)
    texts, pairs, left_out = read_unlabelled(str(st.unlabelled), str(d.path), d.text_field, d.pair_field,
                                             key="self_training.unlabelled")
    plain = config.model_copy(update={"self_training": SelfTrainingConfig(),
                                      "report": config.report.model_copy(update={"baselines": False})})
    pseudo: list[tuple[str, Optional[str], str]] = []
    counts: list[int] = []
    accuracy: list[float] = []
    for r in range(st.rounds + 1):
        part = out / "self-training" / f"round-{r}"
        run = _run(plain.model_copy(update={"out": str(part)}), pseudo)
        if not info.is_main:
            return {"result": run["result"], "report": None, "trainable": run["trainable"]}
        accuracy.append(_model_row(run)["metrics"]["accuracy"])  # each round's test accuracy, for the record
        if r == st.rounds:
            break
        predictor = Predictor(load_model_dir(part))
        probs = predictor.class_probabilities(texts, pairs if d.pair_field else None)  # (N, K)
        confidence, index = probs.max(-1)
        pseudo = [(t, p, predictor.labels[int(k)]) for t, p, c, k in zip(texts, pairs, confidence, index)
                  if float(c) >= st.threshold]
        counts.append(len(pseudo))
    last = load_model_dir(part)
    info_row = {**last.config["report_info"], "self_training": {
        "rounds": st.rounds, "threshold": st.threshold, "unlabelled": len(texts), "left_out": left_out,
        "pseudo_labelled": counts, "rounds_accuracy": accuracy}}
    save_model_dir(last.model, {**last.config, "report_info": info_row}, out, last.tokenizer)
    shutil.copyfile(part / "metrics.jsonl", out / "metrics.jsonl")
    write_config(config, out / "config.yaml")
    return {"result": run["result"], "report": _report(config, out), "trainable": run["trainable"]}


def _finetune(config: FinetuneConfig, setup: harness.Run, pseudo: Sequence[tuple[str, Optional[str], str]] = ()
              ) -> dict[str, Any]:
    info = setup.info
    arch, tokenizer_file = _architecture(config)
    tok = encoding_tokenizer(tokenizer_file)
    if tok.get_vocab_size() > int(arch["vocab_size"]):
        raise ConfigError(f"model.vocab_size={arch['vocab_size']} is smaller than the tokenizer's "
                          f"{tok.get_vocab_size()} tokens ({tokenizer_file})")
    train_src, val_src, labels = example_sources(config, tok, arch, info, pseudo)
    tc = config.train
    steps = config.epochs * len(train_src)
    update: dict[str, Any] = {"steps": steps, "eval_every": len(train_src)}
    if config.average_last:
        update.update(checkpoint_every=len(train_src), keep_last=max(tc.keep_last, config.average_last))
    train_cfg = tc.model_copy(update=update)

    harness.seed_model(tc)
    model = build_finetune_model(config, arch, labels, verbalizer=prompt_token_ids(config, tok, labels))
    trainable, total = trainable_summary(model)
    _print_trainable(config.method, trainable, total, config.train.progress and info.is_main)

    allocator = None
    if config.method == "adalora":
        a = config.adalora
        allocator = RankAllocator(model, a.target_rank, steps, int(a.warmup * steps), int(a.final * steps),
                                  a.beta1, a.beta2)
    weights = (balanced_class_weights(train_src.enc.labels, len(labels))
               if config.loss.class_weights == "balanced" else None)
    teacher = None
    if config.distill.teacher:
        from lmforge.finetune.distill import load_teacher

        teacher = load_teacher(config.distill, config.task, labels, tokenizer_file,
                               min(config.data.max_length, int(arch["max_positions"])), config.prompt.template)
    penalty = _ewc(config, model, tok, labels, arch) if config.continual.ewc else None
    objective = RetrievalObjective(config.retrieval.temperature) if config.task == "retrieval" else \
        FinetuneObjective(model, config.robust, config.adalora.orthogonal_weight if config.method == "adalora" else 0.0,
                          weights, config.loss.focal_gamma, teacher, penalty)
    out = Path(config.out)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(with_precision(config, setup.precision), out / "config.yaml")  # what ran
    harness.seed_training(tc, info)  # dropout stream
    started = time.perf_counter()
    result = train_loop(model, objective, train_src, train_cfg, device=setup.device, eval_data=val_src,
                        out_dir=out, resume=setup.resume, info=info,
                        after_step=allocator.step if allocator else None, precision=setup.precision,
                        label="finetune")
    train_s = time.perf_counter() - started
    if not info.is_main:
        return {"result": result, "report": None, "trainable": (trainable, total)}
    model.cpu()
    if config.average_last:
        model.load_state_dict(average_checkpoints(out, config.average_last))
    else:
        harness.reload_best(model, tc, out)
    info_row = {"trainable_params": trainable, "trainable_share": round(trainable / total, 5),
                "train_s": round(train_s, 1), "steps": result.step, "stopped": result.stopped}
    if config.task == "regression":
        _fold_scale(model, train_src.enc.scale)
    _save(config, model, out, tokenizer_file, arch, info_row)
    report = _report(config, out)
    return {"result": result, "report": report, "trainable": (trainable, total)}


def _ewc(config: FinetuneConfig, model: TaskModel, tok: Any, labels: list[str], arch: dict[str, Any]) -> Any:
    """The EWC penalty of the starting weights, its Fisher estimated on the earlier task's train examples."""
    from lmforge.finetune.continual import EWCPenalty, rehearsal_examples

    c, d = config.continual, config.data
    sample, _ = rehearsal_examples(c.model_copy(update={"rehearsal_size": c.fisher_examples}), "train",
                                   d.text_field, d.label_field)
    enc = _encode(config, tok, sample, {name: i for i, name in enumerate(labels)},
                  min(d.max_length, int(arch["max_positions"])), (0.0, 1.0))
    return EWCPenalty(model, ExampleSource(enc, config.train.batch_size, pad_id(tok), shuffle=False,
                                           drop_last=False), c.ewc)


def _save(config: FinetuneConfig, model: TaskModel, out: Path, tokenizer_file: Path, arch: dict[str, Any],
          info: dict[str, Any]) -> None:
    """OUT as a model directory (lmforge.model.modeldir): every method's model loads from it alone."""
    extra: dict[str, Any] = {"max_length": min(config.data.max_length, int(arch["max_positions"])),
                             "data": config.data.model_dump(mode="json"), "report_info": info,
                             "base": str(Path(config.init_from).resolve()) if config.init_from else None}
    if config.task != "tagging" and config.data.truncation != "head":
        extra["truncation"] = config.data.truncation
    if config.prompt.template:  # the predictor reads every text inside the template
        extra["prompt"] = {"template": config.prompt.template, "verbalizer": dict(config.prompt.verbalizer)}
    if config.task == "retrieval":  # no head: what the model was trained for, and how it embeds
        extra["retrieval"] = {"pooling": "mean", "normalize": True, "temperature": config.retrieval.temperature}
    if config.method == "lora" and config.lora.merge:  # a plain model: the LoRA update folded into the weights
        model = copy.deepcopy(model)
        merge_lora(model)
        model.method, model.method_settings = "full", {}
        extra["merged_from"] = "lora"
    tokenizer = load_tokenizer(tokenizer_file)
    dir_config = model_dir_config(model, **extra)
    if config.task == "multilabel":
        dir_config["thresholds"] = _tuned_thresholds(model, tokenizer, dir_config, str(config.data.path))
    save_model_dir(model, dir_config, out, tokenizer)


@torch.no_grad()
def _fold_scale(model: TaskModel, scale: tuple[float, float]) -> None:
    """The regression head learnt (y - mean) / std; fold the scale into its last Linear (W' = std W,
    b' = std b + mean), so the model, its HF export and its ONNX graph output y itself."""
    mean, std = scale
    layer = model.head.classifier  # type: ignore[union-attr]
    layer.weight.mul_(std)
    if layer.bias is not None:
        layer.bias.mul_(std).add_(mean)


def _tuned_thresholds(model: TaskModel, tokenizer: Any, dir_config: dict[str, Any], data: str) -> dict[str, float]:
    """Per-label decision thresholds that maximise each label's F1 on the validation split, scored
    through the Predictor as serving will (lmforge.eval.multilabel.tune_thresholds)."""
    from lmforge.eval.multilabel import indicator, tune_thresholds

    predictor = Predictor(LoadedModel(model, tokenizer, dir_config, list(model.labels)))
    gold, probs, _ = split_probabilities(predictor, data, "validation")
    cut = tune_thresholds(indicator(gold, model.labels), probs)
    return {name: round(float(t), 6) for name, t in zip(model.labels, cut)}


def _soup(config: FinetuneConfig, info: DistInfo) -> dict[str, Any]:
    """``soup`` runs under OUT/soup/seed-N (each resumable, each keeping its best epoch), then the mean of
    their weights as OUT's model (Wortsman et al. 2022). Fine-tunings of one well-pretrained model stay
    in one basin and their mean beats its parts; from a weak start they may not (docs/finetuning.md)."""
    out = Path(config.out)
    seeds = [config.train.seed + k for k in range(config.soup)]
    parts = [out / "soup" / f"seed-{seed}" for seed in seeds]
    runs = [finetune(config.model_copy(update={
        "soup": 1, "out": str(part),
        "report": config.report.model_copy(update={"baselines": False}),  # scored once, on the soup
        "train": config.train.model_copy(update={"seed": seed})})) for seed, part in zip(seeds, parts)]
    if not info.is_main:
        return {"result": runs[0]["result"], "report": None, "trainable": runs[0]["trainable"]}
    first = load_model_dir(parts[0])
    model = first.model
    check_and_load(model, average_weights([p / "model.safetensors" for p in parts]), f"soup of {parts[0]}, ...")
    infos = [read_json(p / "config.json")["report_info"] for p in parts]
    info = {**infos[0], "train_s": round(sum(i["train_s"] for i in infos), 1),
            "steps": sum(i["steps"] for i in infos), "soup_of": [str(p) for p in parts],
            "parts_accuracy": [_model_row(run)["metrics"].get("accuracy") for run in runs]}
    soup_config = {**first.config, "report_info": info}
    if config.task == "multilabel":  # the mean model's own thresholds, not its first part's
        soup_config["thresholds"] = _tuned_thresholds(model, first.tokenizer, soup_config, str(config.data.path))
    save_model_dir(model, soup_config, out, first.tokenizer)
    shutil.copyfile(parts[0] / "metrics.jsonl", out / "metrics.jsonl")  # the first run's curves stand for all
    write_config(config, out / "config.yaml")
    report = _report(config, out)
    return {"result": runs[0]["result"], "report": report, "trainable": runs[0]["trainable"]}


def _model_row(run: dict[str, Any]) -> dict[str, Any]:
    return next(r for r in run["report"]["rows"] if r["kind"] == "model")


def _print_trainable(method: str, trainable: int, total: int, show: bool) -> None:
    if show:
        from lmforge.progress import console

        console.print(f"method={method}: {trainable:,} trainable parameters of {total:,} "
                      f"({100 * trainable / total:.2f}%)")


def _report(config: FinetuneConfig, out: Path) -> dict[str, Any]:
    """Score the saved model directory on the test split next to the baselines (lmforge.eval's report),
    through the Predictor that serving uses, so the report says what the server will answer."""
    from lmforge.eval.evaluate import evaluate, make_evaluate_config

    predictor = Predictor(load_model_dir(out))
    name = f"lmforge {method_name(predictor.config)}" + (f" (soup of {config.soup})" if config.soup > 1 else "")
    if config.task == "retrieval":
        rows = _retrieval_rows(config, predictor, name)
    else:
        rows = [model_row(predictor, str(config.data.path), "test", name, predictor.config["report_info"])]
    baselines: dict[str, Any] = {"enabled": config.report.baselines}
    if config.data.max_train_examples:  # the baselines learn from what the model learnt from
        baselines.update(max_train_examples=config.data.max_train_examples, seed=config.data.subset_seed)
    elif config.report.max_train_examples:
        baselines["max_train_examples"] = config.report.max_train_examples
    eval_cfg = make_evaluate_config({"data": str(config.data.path), "split": "test", "out": str(out / "report"),
                                     "curves": str(out / "metrics.jsonl"), "baselines": baselines,
                                     "progress": config.train.progress,
                                     **({"task": config.task} if config.task != "tagging" else {})},
                                    source="finetune")
    return evaluate(eval_cfg, rows=rows)


def _retrieval_rows(config: FinetuneConfig, predictor: Predictor, name: str) -> list[dict[str, Any]]:
    """The fine-tuned bi-encoder's test row, and (with report.baselines) the model it started from, embedding
    the same way: what fine-tuning added."""
    from lmforge.eval.retrieval import model_retrieval_row, retrieval_split

    d = config.data
    split = retrieval_split(str(d.path), "test", d.text_field, str(d.pair_field))
    rows = [model_retrieval_row(predictor, split, name, info=predictor.config["report_info"])]
    if config.report.baselines and config.init_from:
        base = Predictor(load_model_dir(config.init_from))
        rows.append(model_retrieval_row(base, split, "init_from (not fine-tuned)", kind="baseline",
                                        info={"model": config.init_from}))
    return rows
