"""The `lmforge` command. It only parses arguments, builds a stage's config and calls the stage."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Optional

from lmforge.config import ConfigError, load_config_file, parse_overrides
from lmforge.errors import TrainingError
from lmforge.serve import EXPORT_TARGETS

Handler = Callable[[argparse.Namespace], int]


def _config_layers(args: argparse.Namespace, options: dict[str, Any]) -> list[dict[str, Any]]:
    """file < explicit command-line options < key=value overrides."""
    layers = [load_config_file(args.config)] if getattr(args, "config", None) else []
    layers.append(options)
    layers.append(parse_overrides(getattr(args, "overrides", []) or []))
    return layers


def _data_prepare(args: argparse.Namespace) -> int:
    from lmforge.data.prepare import make_prepare_config, prepare

    options: dict[str, Any] = {"input": {}}
    if args.input:
        options["input"]["paths"] = args.input
    for key in ("text_field", "label_field", "pair_field"):
        if getattr(args, key) is not None:
            options["input"][key] = getattr(args, key)
    for key in ("out", "preset", "workers"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.no_progress:
        options["progress"] = False
    config = make_prepare_config(*_config_layers(args, options), source=args.config or "command line")
    prepare(config)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lmforge.eval.evaluate import evaluate, make_evaluate_config

    options: dict[str, Any] = {}
    for key in ("data", "out", "split", "curves"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.model:
        options["models"] = args.model
    if args.baselines:
        options["baselines"] = {"enabled": True}
    if args.no_progress:
        options["progress"] = False
    evaluate(make_evaluate_config(*_config_layers(args, options), source=args.config or "command line"))
    return 0


def _tokenizer_train(args: argparse.Namespace) -> int:
    from lmforge.tokenize.tokenizer import make_tokenizer_config, train_tokenizer

    options = {k: getattr(args, k) for k in ("data", "kind", "vocab_size", "min_frequency", "out", "from_file")}
    options = {k: v for k, v in options.items() if v is not None}
    if args.no_progress:
        options["progress"] = False
    train_tokenizer(make_tokenizer_config(*_config_layers(args, options), source=args.config or "command line"))
    return 0


def _data_tokenize(args: argparse.Namespace) -> int:
    from lmforge.tokenize.make_shards import make_tokenize_config, tokenize

    options = {k: getattr(args, k) for k in ("data", "tokenizer", "out", "workers") if getattr(args, k) is not None}
    if args.no_progress:
        options["progress"] = False
    tokenize(make_tokenize_config(*_config_layers(args, options), source=args.config or "command line"))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from lmforge.train.pretrain import make_pretrain_config, pretrain

    options: dict[str, Any] = {}
    if args.out is not None:
        options["out"] = args.out
    if args.resume is not None:
        options["resume"] = args.resume
    if args.shards is not None:
        options["data"] = {"shards": args.shards}
    if args.no_progress:
        options["train"] = {"progress": False}
    config = make_pretrain_config(*_config_layers(args, options), source=args.config or "command line")
    pretrain(config)
    return 0


def _import(args: argparse.Namespace) -> int:
    from lmforge.model.hf import import_hf

    print(f"imported {args.src} -> {import_hf(args.src, args.out)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from lmforge.serve.export import export_model

    print(f"exported {args.model} -> {export_model(args.model, args.to, args.out)} ({args.to})")
    return 0


def _compress(args: argparse.Namespace) -> int:
    from lmforge.finetune.compress import compress

    for line in compress(args.model, args.out, ffn_keep=args.ffn_keep, head_keep=args.head_keep, layers=args.layers,
                         data=args.data, vocab_from=args.vocab_from):
        print(line)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from lmforge.serve.predict_lines import predict_lines
    from lmforge.serve.predictor import load

    if args.text:
        texts = list(args.text)
    elif args.file:
        with open(args.file, encoding="utf-8") as f:
            texts = f.readlines()
    else:
        texts = sys.stdin.readlines()
    gen = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k or 0,
           "top_p": args.top_p, "seed": args.seed}
    options = {"top_k": args.top_k or 5, "generate": gen, "pairs": args.pair}
    for line in predict_lines(load(args.model, batch_size=args.batch_size), texts, args.task, args.json, options):
        print(line)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from lmforge.config import build_config
    from lmforge.serve.config import ServeConfig
    from lmforge.serve.server import serve

    options = {k: getattr(args, k) for k in ("model", "host", "port", "index") if getattr(args, k) is not None}
    serve(build_config(ServeConfig, *_config_layers(args, options), source=args.config or "command line"))
    return 0


def _index(args: argparse.Namespace) -> int:
    from lmforge.serve.index import VectorIndex, build_index

    out = build_index(args.model, args.corpus, args.out, args.text_field, args.batch_size)
    meta = VectorIndex.load(out).meta
    skipped = f", {meta['skipped_empty']} empty passages skipped" if meta.get("skipped_empty") else ""
    print(f"indexed {meta['count']:,} passages of {args.corpus} ({meta['dim']} dimensions) -> {out}{skipped}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from lmforge.finetune.stage import finetune, make_finetune_config

    options: dict[str, Any] = {k: getattr(args, k) for k in ("out", "resume", "init_from") if getattr(args, k)}
    if args.data is not None:
        options["data"] = {"path": args.data}
    if args.no_progress:
        options["train"] = {"progress": False}
    if getattr(args, "teacher", None):  # `lmforge distill`
        options["distill"] = {"teacher": args.teacher}
    finetune(make_finetune_config(*_config_layers(args, options), source=args.config or "command line"))
    return 0


def _run(args: argparse.Namespace) -> int:
    from lmforge.pipeline import load_pipeline, run_pipeline

    pipeline = load_pipeline(args.pipeline, args.overrides, run_dir=args.run_dir)
    run_pipeline(pipeline, source=args.pipeline, force=args.force or [], preflight=not args.no_preflight)
    return 0


def _plan(args: argparse.Namespace) -> int:
    import json

    from lmforge.pipeline.preflight import plan_file

    result = plan_file(args.file, args.overrides or [], kind=args.kind)
    if args.json:
        print(json.dumps(result.to_json(), indent=1))
    else:
        print("\n".join(result.lines()))
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from lmforge.pipeline.quickstart import quickstart

    serve = {k: getattr(args, k) for k in ("host", "port") if getattr(args, k) is not None}
    if serve and not args.serve:
        raise ConfigError("--host and --port apply with --serve (serve the exported model after the run)")
    serve = serve if args.serve else None
    quickstart(minutes=args.minutes, out=args.out, device=args.device, overrides=args.overrides, force=args.force or [],
               serve=serve, preflight=not args.no_preflight)
    return 0


def _explain(args: argparse.Namespace) -> int:
    from lmforge.eval.explain import explain, print_attribution, write_html
    from lmforge.serve.predictor import InputError, load

    predictor = load(args.model)
    if args.deletion_curve:
        return _deletion_curve(args, predictor)
    if not args.text:
        raise ConfigError("explain: give TEXT to explain (or --deletion-curve DATA to compare methods)")
    for number, text in enumerate(args.text):
        try:
            attribution = explain(predictor, text, target=args.target, steps=args.steps, method=args.method,
                                  samples=args.samples)
        except InputError as exc:
            raise ConfigError(str(exc)) from None
        print_attribution(attribution)
        if args.html:
            out = args.html if len(args.text) == 1 else f"{args.html.removesuffix('.html')}-{number}.html"
            print(f"heat map: {write_html(attribution, text, out)}")
        if args.attention_png:
            from lmforge.eval.attention_maps import write_attention_png

            out = args.attention_png if len(args.text) == 1 else f"{args.attention_png.removesuffix('.png')}-{number}.png"
            print(f"attention maps: {write_attention_png(predictor, text, out)}")
    return 0


def _deletion_curve(args: argparse.Namespace, predictor: Any) -> int:
    """explain --deletion-curve DATA: accuracy as each method's top tokens are removed, against random."""
    from lmforge.data.examples import read_classification
    from lmforge.eval.faithfulness import deletion_curve, sample_examples
    from lmforge.progress import print_summary

    d = predictor.config.get("data") or {}
    texts, _, gold = read_classification(args.deletion_curve, args.split, "text", None, d.get("label_field", "label"))
    texts, gold = sample_examples(texts, gold, args.limit)
    rows = []
    for method in args.methods or [args.method]:
        curve = deletion_curve(predictor, texts, gold, method, steps=args.steps, samples=args.samples)
        rows.append((method, " ".join(f"{a:.2f}" for a in curve.accuracy), f"{curve.area:.3f}",
                     f"{curve.random_area:.3f}"))
        if args.json:
            print(json.dumps(curve.as_dict()))
    fractions = " ".join(f"{f:.1f}" for f in curve.fractions)
    print_summary(f"deletion curve, {len(texts)} texts of {args.split} (fractions removed: {fractions})",
                  [(m, f"accuracy {acc}; area {area} (random {rand})") for m, acc, area, rand in rows])
    return 0


def _corpora_list(args: argparse.Namespace) -> int:
    from lmforge.corpora import CORPORA

    for corpus in CORPORA.values():
        print(f"{corpus.name:20s} {corpus.description}")
    return 0


def _corpora_export(args: argparse.Namespace) -> int:
    from lmforge.corpora import export_corpus

    count = export_corpus(args.name, args.out)
    print(f"wrote {count:,} records to {args.out}")
    return 0


def _config_reference(args: argparse.Namespace) -> int:
    from lmforge.config_reference import render

    print(render())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description="Train transformer language models on your own data.")
    parser.add_argument("--version", action="version", version=f"lmforge {__import__('lmforge').__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    data = verbs.add_parser("data", help="prepare and tokenize data").add_subparsers(dest="action", required=True)
    p = data.add_parser("prepare", help="raw text -> clean, deduplicated, leak-free train/validation/test splits")
    p.add_argument("--input", nargs="+", metavar="PATH", help="files, folders, globs or corpus:NAME")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--text-field", dest="text_field")
    p.add_argument("--label-field", dest="label_field")
    p.add_argument("--pair-field", dest="pair_field", help="the second text of a text pair (question matching, NLI)")
    p.add_argument("--preset", choices=["web", "clean", "labelled"])
    p.add_argument("--workers", type=int)
    p.add_argument("--config", metavar="FILE", help="YAML/TOML/JSON config; options and key=value override it")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or summary table")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(handler=_data_prepare)

    p = verbs.add_parser("evaluate", help="score baselines (and models) on a prepared split; write a report")
    p.add_argument("--data", metavar="DIR", help="a `lmforge data prepare` output directory")
    p.add_argument("--out", metavar="DIR", help="report directory (default DATA/evaluation)")
    p.add_argument("--split", choices=["test", "validation"])
    p.add_argument("--model", nargs="+", metavar="DIR", help="fine-tuned model dir(s); several form an ensemble")
    p.add_argument("--baselines", action="store_true", help="majority-class and TF-IDF + logistic regression")
    p.add_argument("--curves", metavar="FILE", help="metrics.jsonl with training/validation losses to plot")
    p.add_argument("--config", metavar="FILE", help="YAML/TOML/JSON config; options and key=value override it")
    p.add_argument("--no-progress", action="store_true", help="no summary on the terminal")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(handler=_evaluate)

    p = data.add_parser("tokenize", help="prepared splits -> packed token shards for training")
    p.add_argument("--data", metavar="DIR", help="a `data prepare` output directory")
    p.add_argument("--tokenizer", metavar="PATH", help="tokenizer directory, tokenizer.json or vocab.txt")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--workers", type=int)
    p.add_argument("--config", metavar="FILE", help="YAML/TOML/JSON config; options and key=value override it")
    p.add_argument("--no-progress", action="store_true", help="no summary table")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(handler=_data_tokenize)

    tok = verbs.add_parser("tokenizer", help="train or adopt a tokenizer").add_subparsers(dest="action", required=True)
    p = tok.add_parser("train", help="train WordPiece/BPE/Unigram on prepared data and report its coverage")
    p.add_argument("--data", metavar="DIR_OR_FILE", help="a `data prepare` directory or one .jsonl/.txt file")
    p.add_argument("--kind", choices=["wordpiece", "bpe", "bpe-bert", "unigram"])
    p.add_argument("--vocab-size", dest="vocab_size", type=int)
    p.add_argument("--min-frequency", dest="min_frequency", type=int)
    p.add_argument("--from", dest="from_file", metavar="FILE", help="adopt this tokenizer.json or BERT vocab.txt")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--config", metavar="FILE", help="YAML/TOML/JSON config; options and key=value override it")
    p.add_argument("--no-progress", action="store_true", help="no summary table")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(handler=_tokenizer_train)

    p = verbs.add_parser("pretrain", help="self-supervised pretraining (MLM, NSP/SOP, causal LM) on token shards")
    p.add_argument("--config", metavar="FILE", help="YAML/TOML/JSON config; options and key=value override it")
    p.add_argument("--shards", metavar="DIR", help="output of `lmforge data tokenize` (data.shards)")
    p.add_argument("--out", metavar="DIR")
    p.add_argument("--resume", metavar="auto|DIR", help="'auto': the newest complete checkpoint in OUT")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(handler=_pretrain)

    p = verbs.add_parser("import", help="a Hugging Face BERT/GPT-2 directory -> an lmforge model directory")
    p.add_argument("--from", dest="src", required=True, metavar="HF_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(handler=_import)

    p = verbs.add_parser("export", help="an lmforge model directory -> Hugging Face, ONNX, int8 or ONNX int8")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--to", required=True, choices=EXPORT_TARGETS)
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(handler=_export)

    p = verbs.add_parser("compress", help="a smaller model directory: pruned attention heads and feed-forward "
                         "units and/or the vocabulary a corpus uses")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--ffn-keep", dest="ffn_keep", type=float, metavar="FRACTION",
                   help="keep this share of every block's feed-forward units, the most important on --data")
    p.add_argument("--layers", type=int, metavar="N", help="keep the lowest N blocks (a student to distill: "
                   "`lmforge distill --teacher MODEL --init-from OUT`)")
    p.add_argument("--head-keep", dest="head_keep", type=float, metavar="FRACTION",
                   help="keep this share of every block's attention heads, the most important on --data")
    p.add_argument("--data", metavar="DATA", help="with --ffn-keep/--head-keep: the labelled prepared directory "
                                                  "to rank on")
    p.add_argument("--vocab-from", dest="vocab_from", metavar="DATA",
                   help="a prepared directory (`lmforge data prepare`): keep the tokens its texts use")
    p.set_defaults(handler=_compress)

    p = verbs.add_parser("predict", help="classify/tag/fill-mask/embed/generate texts with a model directory")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("text", nargs="*", metavar="TEXT", help="texts (default: lines of --file, else of stdin)")
    p.add_argument("--file", metavar="FILE", help="one text per line")
    p.add_argument("--task", choices=["classify", "tag", "fill-mask", "embed", "generate"],
                   help="default: the model's most specific task")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--pair", action="store_true", help="text pairs: each TEXT (or line) is TEXT<TAB>SECOND TEXT")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=32)
    p.add_argument("--top-k", dest="top_k", type=int, help="fill-mask candidates / generation top-k")
    p.add_argument("--max-new-tokens", dest="max_new_tokens", type=int, default=50)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", dest="top_p", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.set_defaults(handler=_predict)

    p = verbs.add_parser("serve", help="an HTTP API (FastAPI on uvicorn) for one model directory")
    p.add_argument("--model", metavar="DIR")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--index", metavar="INDEX", help="a vector index built with this model (`lmforge index`): "
                                                  "/v1/search")
    p.add_argument("--config", metavar="FILE", help="YAML/TOML/JSON config; options and key=value override it")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(handler=_serve)

    p = verbs.add_parser("index", help="embed a corpus with a model into a vector index for /v1/search")
    p.add_argument("--model", required=True, metavar="DIR")
    p.add_argument("--corpus", required=True, metavar="FILE", help=".jsonl (text field, optional id) or one "
                                                                  "passage per line")
    p.add_argument("--out", required=True, metavar="INDEX")
    p.add_argument("--text-field", dest="text_field", default="text")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=64)
    p.set_defaults(handler=_index)

    for verb, about in (("finetune", "adapt a pretrained model to a labelled task (full, LoRA, AdaLoRA, ...)"),
                        ("distill", "fine-tune a student (--init-from, or model=...) on a fine-tuned teacher's "
                                    "soft labels and the task's labels")):
        p = verbs.add_parser(verb, help=about)
        if verb == "distill":
            p.add_argument("--teacher", required=True, metavar="DIR", help="a fine-tuned model directory of the "
                           "same task, labels and tokenizer (distill.teacher)")
        p.add_argument("--config", metavar="FILE", help="YAML/TOML/JSON config; options and key=value override it")
        p.add_argument("--init-from", dest="init_from", metavar="DIR", help="pretrained model dir (`lmforge pretrain`)")
        p.add_argument("--data", metavar="DIR", help="a `lmforge data prepare` output directory (data.path)")
        p.add_argument("--out", metavar="DIR")
        p.add_argument("--resume", metavar="auto|DIR", help="'auto': the newest complete checkpoint in OUT")
        p.add_argument("--no-progress", action="store_true", help="no progress bar or summary")
        p.add_argument("overrides", nargs="*", metavar="key=value")
        p.set_defaults(handler=_finetune)

    p = verbs.add_parser("run", help="run a pipeline file: stages in order, complete unchanged stages skipped")
    p.add_argument("pipeline", metavar="PIPELINE.yaml")
    p.add_argument("--run-dir", dest="run_dir", metavar="DIR", help="where the stages write (overrides run_dir)")
    p.add_argument("--force", action="append", metavar="STAGE", help="redo STAGE and the stages that read it")
    p.add_argument("--no-preflight", action="store_true", help="skip the pre-flight plan printed before the stages")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="stages.NAME.key=value or NAME.key=value")
    p.set_defaults(handler=_run, trailing_overrides=True)

    p = verbs.add_parser("plan", help="measure this machine and predict a pipeline's or a training stage's run")
    p.add_argument("file", metavar="CONFIG_OR_PIPELINE")
    p.add_argument("--kind", choices=["pretrain", "finetune"], help="the stage a config file is for (default: "
                   "read from the file; a file with `stages` is a pipeline)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(handler=_plan, trailing_overrides=True)

    p = verbs.add_parser("quickstart", help="the main job on built-in data: data to evaluated model in ~10 minutes")
    p.add_argument("--minutes", type=float, help="total time to aim for (scales the training budgets)")
    p.add_argument("--out", metavar="DIR", help="run directory (default runs/quickstart)")
    p.add_argument("--device", help="auto (default: a GPU when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--force", action="append", metavar="STAGE", help="redo STAGE and the stages that read it")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip the pre-flight (the recipe then stays as shipped, not fitted to this machine)")
    p.add_argument("--serve", action="store_true", help="then serve the exported model over HTTP (`lmforge serve`)")
    p.add_argument("--host", help="with --serve: the address to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, help="with --serve: the port (default 8000)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="NAME.key=value, as for `lmforge run`")
    p.set_defaults(handler=_quickstart, trailing_overrides=True)

    p = verbs.add_parser("explain", help="which tokens drove a classifier's prediction (integrated gradients)")
    p.add_argument("--model", required=True, metavar="DIR", help="a fine-tuned classification model directory")
    p.add_argument("text", nargs="*")
    p.add_argument("--target", metavar="LABEL", help="explain this label's logit (default: the predicted one)")
    p.add_argument("--steps", type=int, default=50, help="points on the integration path (more: smaller error)")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML heat map")
    p.add_argument("--method", choices=["ig", "shap", "lime", "attention"], default="ig",
                   help="integrated gradients, Kernel SHAP or LIME (Captum), or last-layer attention")
    p.add_argument("--samples", type=int, default=200, help="shap/lime: model calls on perturbed inputs")
    p.add_argument("--attention-png", dest="attention_png", metavar="FILE", help="also draw every layer's and "
                   "head's attention as one PNG")
    p.add_argument("--deletion-curve", dest="deletion_curve", metavar="DATA", help="instead of TEXT: compare "
                   "methods on a prepared split by removing their top tokens (accuracy against random removal)")
    p.add_argument("--methods", nargs="+", choices=["ig", "shap", "lime", "attention"],
                   help="with --deletion-curve: the methods to compare (default: --method)")
    p.add_argument("--split", default="test", help="with --deletion-curve: the split to read")
    p.add_argument("--limit", type=int, default=50, help="with --deletion-curve: texts to use")
    p.add_argument("--json", action="store_true", help="with --deletion-curve: also one JSON line per method")
    p.set_defaults(handler=_explain)

    corpora = verbs.add_parser("corpora", help="built-in real corpora").add_subparsers(dest="action", required=True)
    corpora.add_parser("list", help="list built-in corpora").set_defaults(handler=_corpora_list)
    e = corpora.add_parser("export", help="write a built-in corpus as JSON lines")
    e.add_argument("name")
    e.add_argument("--out", required=True, metavar="FILE")
    e.set_defaults(handler=_corpora_export)
    config = verbs.add_parser("config", help="configuration helpers").add_subparsers(dest="action", required=True)
    config.add_parser("reference", help="print the configuration reference (Markdown)").set_defaults(handler=_config_reference)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `lmforge run FILE --force X key=value`: argparse ends a positional list at the first option,
    # so key=value items after an option arrive here; verbs that take them say so.
    if extra and getattr(args, "trailing_overrides", False) and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:  # the message already says where and why; a traceback adds nothing
        print(f"lmforge: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
