"""The quickstart's recipe at fixed pretraining steps and fine-tuning epochs (no time budgets), to see
what a slower machine should spend its minutes on.

    PYTHONPATH=. python bench/quickstart_recipe.py --run /tmp/qr \\
        --variant "P1120 e3 s0" pretrain.train.steps=1120 \\
        --variant "P1120 e1 s0" pretrain.train.steps=1120 finetune.epochs=1

Each variant is the shipped quickstart pipeline (its own functions: `quickstart_pipeline` and
`run_pipeline`) with the baselines and export stages off, both budgets removed and the variant's
overrides; stages a variant does not change are reused from the run directory. One JSON line per
variant: test accuracy, the best validation epoch, validation per epoch, pretraining's last MLM loss.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lmforge.pipeline.quickstart import quickstart_pipeline
from lmforge.pipeline.run import run_pipeline

BASE = ["baselines.enabled=false", "export.enabled=false", "pretrain.train.budget=null",
        "finetune.train.budget=null"]


def scores(run: Path) -> dict[str, object]:
    report = json.loads((run / "finetune" / "report" / "report.json").read_text())
    test = next(r for r in report["rows"] if r["kind"] == "model")["metrics"]["accuracy"]
    lines = [json.loads(line) for line in (run / "finetune" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_acc"] for r in lines if "val_acc" in r]
    mlm = [r["val_loss"] for r in map(json.loads, (run / "pretrain" / "metrics.jsonl").read_text().splitlines())
           if "val_loss" in r]
    return {"test": round(test, 4), "best_val": round(max(vals), 4), "vals": [round(v, 4) for v in vals],
            "pretrain_val_loss": round(mlm[-1], 3) if mlm else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="run directory (reused across variants)")
    ap.add_argument("--variant", nargs="+", action="append", required=True, metavar=("LABEL", "KEY=VALUE"),
                    help="a label and the overrides of one variant; repeat for more")
    args = ap.parse_args()
    for label, *overrides in args.variant:
        started = time.time()
        run_pipeline(quickstart_pipeline(out=args.run, overrides=BASE + overrides), report=False, preflight=False)
        print(json.dumps({"label": label, **scores(Path(args.run)), "seconds": round(time.time() - started)}),
              flush=True)


if __name__ == "__main__":
    main()
