"""lmforge pretraining vs transformers' BertForMaskedLM + Trainer, on the same data and hardware.

    PYTHONPATH=. python bench/pretrain_vs_hf.py --repeats 2 --steps 16 --ttq-minutes 10

1. Throughput, interleaved (HF fp32, lmforge fp32, HF bf16, lmforge bf16, repeated): the same small
   BERT (4 layers, hidden 256, 4 heads, FFN 1024, sequence 128, batch 32; vocabulary 30,522 as
   BERT's by default, `--vocab 8000 --cjk chars` for a small character vocabulary), the same
   People's Daily blocks, MLM 15%. Tokens/s over steps after a warmup, from per-step timestamps
   taken inside each training loop.
2. Loop overhead: lmforge's full loop (data, logging, a checkpoint) against a bare
   forward/backward/step on pre-built batches of the same model.
3. Time to quality: HF Trainer trains for T minutes; lmforge (its own recipe: pre-LN, no dropout,
   bf16, time-budget schedule) trains for T/3; both are scored by one evaluation function on the
   same fixed masked validation set.
Needs `pip install transformers accelerate` (the `bench` extra).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lmforge.config import build_config
from lmforge.corpora import get_corpus
from lmforge.model.heads import LanguageModel
from lmforge.model.transformer import TransformerConfig
from lmforge.train.config import TrainConfig
from lmforge.train.data import TensorBlockSource
from lmforge.train.hardware import cpu_has_native_bf16
from lmforge.train.loop import autocast_context, train_loop
from lmforge.train.objectives import IGNORE, MLMMasker, MLMObjective, Objective
from lmforge.train.optim import build_optimizer

SEQ, BATCH = 128, 32
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_data(n_sentences: int, vocab: int, cjk: str) -> dict[str, Any]:
    """WordPiece over the first sentences of People's Daily; cjk="chars" splits every Chinese character
    off (BERT's rule, which caps the vocabulary near 7,600 here), "words" learns multi-character pieces."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    texts = [r.text for r in itertools.islice(get_corpus("peoples-daily").records(), n_sentences) if r.text]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, handle_chinese_chars=cjk == "chars")
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab, special_tokens=SPECIALS, show_progress=False)
    )
    sep = tok.token_to_id("[SEP]")
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids + [sep])
    tokens = torch.tensor(ids)
    cut = int(len(tokens) * 0.95)
    return {"tokenizer": tok, "train": tokens[:cut], "val": tokens[cut:], "vocab": tok.get_vocab_size()}


def blocks(tokens: torch.Tensor, cls_id: int) -> torch.Tensor:
    n = tokens.numel() // (SEQ - 1)
    body = tokens[: n * (SEQ - 1)].view(n, SEQ - 1)
    return torch.cat([torch.full((n, 1), cls_id), body], dim=1)  # (N, 128) with [CLS] first


def fixed_val_set(data: dict[str, Any], n_blocks: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    ids = blocks(data["val"], 2)[:n_blocks]
    masker = MLMMasker(data["vocab"], 4, list(range(5)))
    return masker(ids, generator=torch.Generator().manual_seed(1234))


@torch.no_grad()
def val_mlm_loss(
    logits_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], val: tuple[torch.Tensor, torch.Tensor]
) -> float:
    """One scorer for both models: mean CE at the masked positions of a fixed masked set."""
    masked, labels = val
    total, n = 0.0, 0
    for i in range(0, len(masked), 16):
        m, lab = masked[i : i + 16], labels[i : i + 16]
        pos = lab != IGNORE
        logits = logits_fn(m, pos).float()  # (M, V)
        total += F.cross_entropy(logits, lab[pos], reduction="sum").item()
        n += int(pos.sum())
    return total / n


# ---------------------------------------------------------------- transformers
def hf_model(vocab: int) -> Any:
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=SEQ,
    )
    return BertForMaskedLM(cfg)


def hf_train(
    data: dict[str, Any], precision: str, steps: int, seconds: float | None = None, val: Any = None
) -> dict[str, Any]:
    from transformers import (
        DataCollatorForLanguageModeling,
        PreTrainedTokenizerFast,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    fast = PreTrainedTokenizerFast(
        tokenizer_object=data["tokenizer"],
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    train = [{"input_ids": row} for row in blocks(data["train"], 2)]
    model = hf_model(data["vocab"])
    stamps: list[float] = []
    start = time.perf_counter()

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001
            stamps.append(time.perf_counter())
            if seconds is not None and stamps[-1] - start >= seconds:
                control.should_training_stop = True

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_train_batch_size=BATCH,
            max_steps=steps,
            learning_rate=1e-3,
            warmup_steps=max(1, int(0.06 * steps)),
            weight_decay=0.01,
            lr_scheduler_type="linear",
            bf16=precision == "bf16",
            use_cpu=True,
            save_strategy="no",
            report_to=[],
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            callbacks=[Clock()],
            data_collator=DataCollatorForLanguageModeling(fast, mlm_probability=0.15),
        )
        trainer.train()
    out: dict[str, Any] = {"stamps": stamps, "start": start}
    if val is not None:
        model.eval()
        out["val_mlm_loss"] = val_mlm_loss(lambda m, pos: model(input_ids=m).logits[pos], val)
    return out


# ---------------------------------------------------------------- lmforge
def lf_model(vocab: int, recipe: bool = False) -> LanguageModel:
    torch.manual_seed(0)
    extra = dict(norm="pre", dropout=0.0, attn_dropout=0.0) if recipe else {}
    cfg = TransformerConfig(
        vocab_size=vocab, max_positions=SEQ, n_layers=4, d_model=256, n_heads=4, d_ff=1024, **extra
    )
    return LanguageModel(cfg, heads=("mlm",))


class Stamped:
    """An objective (here MLM; causal LM in bench/gpu_check.py), recording when each step starts (for
    per-step timing inside the loop)."""

    def __init__(self, objective: Objective) -> None:
        self.objective, self.stamps = objective, []

    def __call__(self, model: Any, batch: dict[str, torch.Tensor]) -> Any:
        if model.training:
            self.stamps.append(time.perf_counter())
        return self.objective(model, batch)


def lf_train(
    data: dict[str, Any],
    precision: str,
    steps: int,
    out: Path | None = None,
    budget: float | None = None,
    recipe: bool = False,
    val: Any = None,
    lr: float = 1e-3,
) -> dict[str, Any]:
    model = lf_model(data["vocab"], recipe)
    source = TensorBlockSource(data["train"], SEQ, BATCH, prefix_id=2)
    objective = Stamped(MLMObjective(MLMMasker(data["vocab"], 4, list(range(5)))))
    cfg = build_config(
        TrainConfig,
        {
            "steps": steps,
            "budget": budget,
            "batch_size": BATCH,
            "precision": precision,
            "log_every": 10,
            "progress": False,
            "tensorboard": out is not None,
            "checkpoint_every": None,
            "peak_flops": 1e12,
            "threads": torch.get_num_threads(),  # the Trainer's count: a comparison at equal threads
            "optim": {"lr": lr},
            "schedule": {"warmup": 0.06},
        },
    )
    start = time.perf_counter()
    train_loop(model, objective, source, cfg, device=torch.device("cpu"), out_dir=out)
    end = time.perf_counter()
    result: dict[str, Any] = {"stamps": objective.stamps[1:] + [end], "start": start, "end": end}
    if val is not None:
        model.eval()
        result["val_mlm_loss"] = val_mlm_loss(
            lambda m, pos: model(m, masked_positions=pos)["mlm_logits"], val
        )
    return result


def lf_bare(data: dict[str, Any], precision: str, steps: int) -> dict[str, Any]:
    """Forward, backward, optimizer step on pre-built, pre-masked batches: no loop around it."""
    model = lf_model(data["vocab"])
    opt = build_optimizer(model, build_config(TrainConfig, {}).optim, 4, torch.device("cpu"))
    masker = MLMMasker(data["vocab"], 4, list(range(5)))
    ids = blocks(data["train"], 2)
    batches = [masker(ids[i * BATCH : (i + 1) * BATCH]) for i in range(steps)]
    stamps = []
    for masked, labels in batches:
        pos = labels != IGNORE
        with autocast_context(precision, torch.device("cpu")):
            logits = model(masked, masked_positions=pos)["mlm_logits"]
        F.cross_entropy(logits.float(), labels[pos], reduction="sum").div(pos.sum()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        stamps.append(time.perf_counter())
    return {"stamps": stamps}


def rate(stamps: list[float], warmup: int, tokens_per_step: int = BATCH * SEQ) -> float:
    """Tokens/s between the end of step ``warmup`` and the last step (``stamps``: each step's end)."""
    steady = stamps[warmup - 1 :]
    return (len(steady) - 1) * tokens_per_step / (steady[-1] - steady[0])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--sentences", type=int, default=20000)
    ap.add_argument("--vocab", type=int, default=30522, help="WordPiece vocabulary size (BERT's: 30,522)")
    ap.add_argument("--cjk", choices=["words", "chars"], default="words",
                    help="Chinese as multi-character pieces (reaches BERT's vocabulary size) or single characters")
    ap.add_argument("--ttq-minutes", type=float, default=10.0, help="0 skips time-to-quality")
    ap.add_argument("--out", default="bench/results/pretrain_vs_hf.json")
    args = ap.parse_args()
    import transformers

    data = build_data(args.sentences, args.vocab, args.cjk)
    print(f"data: {len(data['train']):,} train tokens, vocab {data['vocab']:,}", flush=True)
    runs: dict[str, list[float]] = {}
    load: list[float] = []
    tmp_root = Path(tempfile.mkdtemp())
    native_bf16 = cpu_has_native_bf16()
    if not native_bf16:  # emulated bf16 runs 20-80x slower than fp32: hours for rows nobody should use
        print(f"bf16 rows skipped: this CPU ({torch.backends.cpu.get_cpu_capability()}) has no native bf16", flush=True)
    for r in range(args.repeats):
        for name, fn in (
            ("hf_fp32", lambda: hf_train(data, "fp32", args.steps)),
            ("lmforge_fp32", lambda: lf_train(data, "fp32", args.steps)),
            *([("hf_bf16", lambda: hf_train(data, "bf16", args.steps)),
               ("lmforge_bf16", lambda: lf_train(data, "bf16", args.steps))] if native_bf16 else []),
            ("bare_fp32", lambda: lf_bare(data, "fp32", args.steps)),
            # the full loop: metrics JSONL + TensorBoard every 10 steps, a checkpoint at the end
            ("loop_full_fp32", lambda: lf_train(data, "fp32", args.steps, out=tmp_root / f"r{r}")),
        ):
            runs.setdefault(name, []).append(rate(fn()["stamps"], args.warmup))
            load.append(os.getloadavg()[0])  # other processes on the machine skew absolute numbers
            print(
                f"round {r + 1} {name:14s} {runs[name][-1]:8,.0f} tokens/s  (load {load[-1]:.1f})", flush=True
            )
    med = {k: statistics.median(v) for k, v in runs.items()}
    # paired per round (bare step and full loop run back to back), then the median
    overheads = [1 - f / b for f, b in zip(runs["loop_full_fp32"], runs["bare_fp32"])]
    report: dict[str, Any] = {
        "hardware": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16,
        "vocab": data["vocab"], "cjk": args.cjk, "train_tokens": len(data["train"]),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "tokens_per_s": runs,
        "median": med,
        "load_average_1min": load,
        "speedup_fp32": med["lmforge_fp32"] / med["hf_fp32"],
        "speedup_bf16": med["lmforge_bf16"] / med["hf_bf16"] if native_bf16 else None,
        "lmforge_bf16_vs_hf_fp32": med["lmforge_bf16"] / med["hf_fp32"] if native_bf16 else None,
        "loop_overhead": statistics.median(overheads),
        "loop_overhead_per_round": overheads,
    }
    if args.ttq_minutes > 0:
        val = fixed_val_set(data)
        budget = args.ttq_minutes * 60
        # each side in the precision that is fastest here (bf16 only where it is native)
        fast = "bf16" if native_bf16 else "fp32"
        # the Trainer's schedule needs a step count: what its measured rate allows in the budget
        hf_steps = max(int(budget * med[f"hf_{fast}"] / (BATCH * SEQ)), 10)
        hf = hf_train(data, fast, hf_steps, seconds=budget, val=val)
        hf_minutes = (hf["stamps"][-1] - hf["start"]) / 60  # the steps may end before the clock does
        lf = lf_train(data, fast, 10**6, budget=hf_minutes * 60 / 3, recipe=True, val=val, lr=2e-3)
        report["time_to_quality"] = {
            "precision": fast,
            "hf_minutes": hf_minutes,
            "hf_steps": len(hf["stamps"]),
            "hf_val_mlm_loss": hf["val_mlm_loss"],
            "lmforge_minutes": (lf["end"] - lf["start"]) / 60,
            "lmforge_steps": len(lf["stamps"]),
            "lmforge_val_mlm_loss": lf["val_mlm_loss"],
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "tokens_per_s"}, indent=1))
    bf16 = (f"bf16 {report['speedup_bf16']:.2f}x, lmforge bf16 vs HF fp32 {report['lmforge_bf16_vs_hf_fp32']:.2f}x"
            if native_bf16 else "bf16 not run (emulated here)")
    print(f"CPU capability {report['cpu_capability']}, vocab {data['vocab']:,}: lmforge/HF fp32 "
          f"{report['speedup_fp32']:.2f}x, {bf16}, loop overhead {report['loop_overhead']:.1%}")
    if "time_to_quality" in report:
        t = report["time_to_quality"]
        print(f"time to quality: HF {t['hf_minutes']:.1f} min -> val MLM loss {t['hf_val_mlm_loss']:.3f}; "
              f"lmforge {t['lmforge_minutes']:.1f} min -> {t['lmforge_val_mlm_loss']:.3f}")


if __name__ == "__main__":
    main()
