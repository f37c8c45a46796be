"""Vocabulary pruning (TextPruner's kind): keep the embedding rows of the tokens a corpus uses, plus
the special tokens, and remap the tokenizer to the new ids consistently.

Every kept token keeps its string and gets the rank of its old id among the kept ones, so the order of
the vocabulary is unchanged; the tokenizer's WordPiece or Unigram vocabulary, its added tokens and the
ids its post-processor inserts ([CLS], [SEP]) are rewritten to those ids; every tensor with a row per
token (the embedding table and its LoRA update, the MLM head's decoder and bias, the LM head) keeps
the kept rows. On text of the corpus the pruned model computes what the full one does (a test holds
it to 1e-6); a token outside it becomes [UNK]. A prompt-based classifier keeps the tokens of the corpus
read inside its template, and its label words' tokens, and has their ids remapped. Byte-level BPE is refused: its merges build tokens
from other tokens, which pruning would break.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import torch

from lmforge.config import ConfigError
from lmforge.model.modeldir import build_model, check_and_load, load_model_dir, save_model_dir
from lmforge.tokenize.tokenizer import tokenizer_from_json

__all__ = ["prune_vocabulary"]

# tensors with one row (or entry) per token id
_PER_TOKEN = ("backbone.embed.tokens.weight", "backbone.embed.tokens.base.weight", "backbone.embed.tokens.lora_A",
              "mlm.bias", "mlm.decoder.weight", "lm.decoder.weight")


def prune_vocabulary(model_dir: str | Path, texts: Iterable[str], out: str | Path,
                     keep_ids: Iterable[int] = ()) -> dict[str, Any]:
    """Write ``out``: the model of ``model_dir`` with the vocabulary ``texts`` use (and ``keep_ids``);
    returns the counts."""
    loaded = load_model_dir(model_dir)
    if loaded.tokenizer is None:
        raise ConfigError(f"{model_dir}: no tokenizer.json: nothing says which rows are which tokens")
    spec = json.loads(loaded.tokenizer.json_text)
    kind = spec.get("model", {}).get("type")
    if kind not in ("WordPiece", "Unigram"):
        raise ConfigError(f"{model_dir}/tokenizer.json: vocabulary pruning takes WordPiece or Unigram, not {kind} "
                          f"(byte-level BPE builds tokens from other tokens through its merges)")
    tok = loaded.tokenizer.tokenizer
    vocab = tok.get_vocab_size()
    prompt = loaded.config.get("prompt")
    template = None
    if prompt:  # a prompt-based classifier reads each text inside its template: keep what that tokenizes to
        from lmforge.tokenize.prompt import PromptTemplate

        template = PromptTemplate(prompt["template"])
        max_length = min(int(loaded.config.get("max_length") or loaded.model.config.max_positions),
                         loaded.model.config.max_positions)

    def used(batch: list[str]) -> set[int]:
        found = {i for enc in tok.encode_batch(batch) for i in enc.ids}
        if template is not None and batch:  # a pair template: each text in both slots
            found.update(i for p in template.encode(tok, batch, batch if template.paired else None, max_length,
                                                    loaded.config.get("truncation", "head")) for i in p.ids)
        return found

    seen: set[int] = set()
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == 1024:
            seen |= used(batch)
            batch = []
    seen |= used(batch)
    special = {t["id"] for t in spec.get("added_tokens", [])} | {v for v in loaded.tokenizer.special_tokens.values()
                                                                  if v is not None}
    if prompt:  # and the label words, which the head reads whether or not a text holds them
        seen.update(prompt["label_token_ids"])
    keep = sorted(seen | special | set(keep_ids))  # old ids, in their order
    new_id = {old: new for new, old in enumerate(keep)}

    state = dict(loaded.model.state_dict())
    index = torch.tensor(keep)
    for name in _PER_TOKEN:
        if name in state:
            state[name] = state[name].index_select(0, index)
    config = dict(loaded.config)
    config["model"] = {**config["model"], "vocab_size": len(keep)}
    config["vocabulary_pruned"] = {"from": str(model_dir), "kept": len(keep), "of": vocab}
    if prompt:
        config["prompt"] = {**prompt, "label_token_ids": [new_id[i] for i in prompt["label_token_ids"]],
                            "mask_token_id": new_id[prompt["mask_token_id"]]}
    model = build_model(config, f"{out}/config.json")
    check_and_load(model, state, f"{model_dir} (pruned)")
    tokenizer = tokenizer_from_json(json.dumps(_remap_tokenizer(spec, new_id, kind), ensure_ascii=False))
    save_model_dir(model, config, out, tokenizer)
    return {"kept": len(keep), "of": vocab, "special": len(special)}


def _remap_tokenizer(spec: dict[str, Any], new_id: dict[int, int], kind: str) -> dict[str, Any]:
    spec = json.loads(json.dumps(spec))  # a copy to rewrite
    model = spec["model"]
    if kind == "WordPiece":
        model["vocab"] = {token: new_id[i] for token, i in model["vocab"].items() if i in new_id}
    else:  # Unigram: a list of [piece, score] in id order, and the unknown piece's id
        model["vocab"] = [entry for i, entry in enumerate(model["vocab"]) if i in new_id]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    spec["added_tokens"] = [{**t, "id": new_id[t["id"]]} for t in spec.get("added_tokens", [])]
    post = spec.get("post_processor") or {}
    for processor in post.get("processors", [post]):  # a Sequence of processors, or one
        for entry in (processor.get("special_tokens") or {}).values():  # TemplateProcessing
            entry["ids"] = [new_id[i] for i in entry["ids"]]
        for key in ("cls", "sep"):  # BertProcessing / RobertaProcessing: [token, id]
            if isinstance(processor.get(key), list):
                processor[key] = [processor[key][0], new_id[processor[key][1]]]
    return spec

