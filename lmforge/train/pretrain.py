"""The `lmforge pretrain` stage: shards -> a pretrained model directory.

OUT/config.json          model + objective (a model directory, lmforge.model.modeldir; written last)
OUT/config.yaml          the resolved stage configuration (what ran)
OUT/model.safetensors    final weights (the best checkpoint's when early stopping is on)
OUT/tokenizer.json       copied from the shards directory
OUT/metrics.jsonl, OUT/tb/, OUT/checkpoints/
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from lmforge.config import ConfigError, build_config, write_config
from lmforge.model.heads import HeadName, LanguageModel
from lmforge.model.modeldir import save_model_dir
from lmforge.model.transformer import count_parameters, flops_per_token
from lmforge.train import harness
from lmforge.train.config import PretrainConfig
from lmforge.train.hardware import with_precision
from lmforge.train.loop import BatchSource, LoopResult, train_loop
from lmforge.tokenize.tokenizer import load_tokenizer
from lmforge.train.objectives import MLMMasker, MLMObjective, Objective, causal_lm_objective

HEADS: dict[str, tuple[HeadName, ...]] = {
    "mlm": ("mlm",),
    "mlm+nsp": ("mlm", "sentence"),
    "mlm+sop": ("mlm", "sentence"),
    "clm": ("lm",),
}


def make_pretrain_config(*layers: dict[str, Any], source: str = "config") -> PretrainConfig:
    return build_config(PretrainConfig, *layers, source=source)


def _shard_sources(
    config: PretrainConfig, rank: int, world: int
) -> tuple[BatchSource, BatchSource, dict[str, Any]]:
    """Train and validation datasets from `lmforge data tokenize` output (issue 3's reader)."""
    shards = config.data.shards
    if not shards:
        raise ConfigError("data.shards: no shards directory given (the output of `lmforge data tokenize`)")
    if not (Path(shards) / "meta.json").is_file():
        raise ConfigError(f"data.shards: {shards} is not a shards directory (no meta.json)")
    from lmforge.tokenize import datasets  # lazily: the tokenizer stage is only needed for shard input

    kind = config.objective.kind
    common = dict(
        seq_len=config.data.seq_len,
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        rank=rank,
        world_size=world,
    )
    if kind in ("mlm+nsp", "mlm+sop"):
        task = kind.split("+")[1]
        train = datasets.SentencePairDataset(shards, "train", task=task, **common)
        val = datasets.SentencePairDataset(shards, "validation", task=task, **common)
    else:
        extra = dict(cross_documents=config.data.cross_documents, add_special_tokens=kind != "clm")
        train = datasets.BlockDataset(shards, "train", **common, **extra)
        val = datasets.BlockDataset(shards, "validation", **common, **extra)
    return train, val, train.meta


def build_objective(config: PretrainConfig, meta: dict[str, Any], vocab: Optional[list[str]]) -> Objective:
    if config.objective.kind == "clm":
        return causal_lm_objective
    special = meta["tokenizer"]["special_tokens"]
    if special.get("mask") is None:
        raise ConfigError("objective.kind=mlm: the tokenizer has no mask token (special_tokens.mask is null)")
    masker = MLMMasker(
        config.model.vocab_size,
        special["mask"],
        [i for i in special.values() if i is not None],
        rate=config.objective.mask_rate,
    )
    return MLMObjective(masker, id_to_token=vocab, whole_word=config.objective.whole_word)


def pretrain(
    config: PretrainConfig,
    *,
    train_data: Optional[BatchSource] = None,
    eval_data: Optional[BatchSource] = None,
    meta: Optional[dict[str, Any]] = None,
    tokenizer_file: Optional[Path] = None,
) -> LoopResult:
    """Run pretraining. Data comes from ``config.data.shards`` unless sources (with the shards'
    ``meta`` dict) are given directly, as tests and Python users with tokens in memory do."""
    out = Path(config.out)
    with harness.run(config.train, out, config.resume) as setup:
        info = setup.info
        if train_data is None:
            train_data, eval_data, meta = _shard_sources(config, info.rank, info.world_size)
            tokenizer_file = Path(config.data.shards or "") / "tokenizer.json"
        if meta is None:
            raise ConfigError("pretrain: in-memory data needs its meta dict (vocab size, special tokens)")
        vocab_size = int(meta["tokenizer"]["vocab_size"])
        if vocab_size != config.model.vocab_size:
            config = config.model_copy(
                update={"model": config.model.model_copy(update={"vocab_size": vocab_size})}
            )
        vocab = _vocab(tokenizer_file) if config.objective.whole_word else None
        objective = build_objective(config, meta, vocab)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            write_config(with_precision(config, setup.precision), out / "config.yaml")  # what ran

        harness.seed_model(config.train)
        model = LanguageModel(config.model, HEADS[config.objective.kind])
        if setup.resume is None:  # a resumed run's weights come from its checkpoint
            _init_embeddings(config, model, info.is_main)
        harness.seed_training(config.train, info)
        fpt = flops_per_token(
            config.model, config.data.seq_len, count_parameters(model, exclude_embeddings=True)
        )
        result = train_loop(
            model,
            objective,
            train_data,
            config.train,
            device=setup.device,
            eval_data=eval_data,
            out_dir=out,
            resume=setup.resume,
            info=info,
            flops_per_token=fpt,
            precision=setup.precision,
            label="pretrain",
        )
        if info.is_main:
            harness.reload_best(model, config.train, out)
            dir_config = {"heads": list(HEADS[config.objective.kind]), "model": config.model.model_dump(mode="json"),
                          "objective": config.objective.model_dump(mode="json"), "tokenizer": meta["tokenizer"]}
            tokenizer = load_tokenizer(tokenizer_file) if tokenizer_file is not None and tokenizer_file.is_file() else None
            save_model_dir(model, dir_config, out, tokenizer)  # the model directory appears complete, at the end
            _summary(result)
        return result


def _init_embeddings(config: PretrainConfig, model: LanguageModel, show: bool) -> None:
    """``embedding_init.kind=ppmi-svd``: count-based vectors of the train shards as the token embeddings
    (the same on every rank: the SVD is seeded)."""
    init = config.embedding_init
    if init.kind == "random":
        return
    assert config.data.shards, "PretrainConfig refuses ppmi-svd without data.shards"
    from lmforge.train.embedding_init import init_token_embeddings, ppmi_svd_embeddings, shard_documents

    started = time.perf_counter()
    table = model.backbone.embed.tokens
    vectors, seen = ppmi_svd_embeddings(shard_documents(config.data.shards), table.num_embeddings,
                                        table.embedding_dim, init.window, config.train.seed)
    rows = init_token_embeddings(table, vectors, seen, config.model.init_std)
    if show:
        from lmforge.progress import console

        console.print(f"embedding_init: PPMI-SVD vectors for {rows:,} of {table.num_embeddings:,} tokens "
                      f"(window {init.window}) in {time.perf_counter() - started:.1f} s")


def _vocab(tokenizer_file: Optional[Path]) -> list[str]:
    if tokenizer_file is None or not tokenizer_file.is_file():
        raise ConfigError("objective.whole_word: needs the tokenizer.json of the shards directory")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    return [tok.id_to_token(i) or "" for i in range(tok.get_vocab_size())]


def _summary(result: LoopResult) -> None:
    from lmforge.progress import print_summary

    rows = [
        ("steps", f"{result.step:,}"),
        ("stopped by", result.stopped),
        ("skipped steps", str(result.bad_steps)),
    ]
    if result.losses:
        rows.append(("last train loss", f"{result.losses[max(result.losses)]:.4f}"))
    if result.evals:
        rows += [(k, f"{v:.4f}") for k, v in result.evals[-1].items() if k != "step"]
    print_summary("pretrain", rows)
