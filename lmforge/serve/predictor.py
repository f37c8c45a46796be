"""`lmforge.load(DIR)` -> a Predictor: classify, tag, fill_mask, embed and generate, as the model supports.

Lists are cut into batches of `batch_size` (sorted by length so that little padding is computed) and
answers come back in input order; inputs longer than the model's positions are truncated to
`max_length` tokens for classify/embed/fill_mask (classify keeps head and tail when the model was
fine-tuned that way; generation keeps the end of the prompt; tagging covers the whole text in
overlapping windows). Decoders generate with a KV cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence, TypeVar

import torch
from tokenizers import Encoding, Tokenizer
from torch import Tensor

from lmforge.config import ConfigError
from lmforge.model.heads import TaskModel, mean_pool
from lmforge.model.modeldir import LoadedModel
from lmforge.model.transformer import KVCache
from lmforge.tokenize.prompt import PromptTemplate
from lmforge.tokenize.truncate import head_and_tail_ids, head_and_tail_positions
from lmforge.text import text_problem

TASKS = ("classify", "tag", "fill_mask", "embed", "generate")
T = TypeVar("T")


class _Ids:
    """Stands in for an Encoding where only the ids are used (a head+tail cut of one)."""

    __slots__ = ("ids",)

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids


class InputError(ValueError):
    """A request the model cannot answer (empty text, no [MASK], unsupported task): the caller's fault."""


class Predictor:
    def __init__(self, loaded: LoadedModel, batch_size: int = 32, max_length: Optional[int] = None) -> None:
        if loaded.tokenizer is None:
            raise ConfigError(f"{loaded.config.get('source', 'model directory')}: no tokenizer.json: cannot predict")
        self.model: TaskModel = loaded.model.eval()
        self.config = loaded.config
        self.labels = loaded.labels
        self.batch_size = batch_size
        cfg = self.model.config
        self.max_length = min(max_length or loaded.config.get("max_length") or cfg.max_positions, cfg.max_positions)
        self.tokenizer: Tokenizer = Tokenizer.from_str(loaded.tokenizer.json_text)
        self.tokenizer.no_padding()  # we pad per batch ourselves
        self.tokenizer.enable_truncation(self.max_length)
        self._untruncated = Tokenizer.from_str(loaded.tokenizer.json_text)  # tagging windows long texts itself
        self._untruncated.no_padding()
        self._untruncated.no_truncation()
        self.special = loaded.tokenizer.special_tokens
        self.pad_id = self.special.get("pad") or 0
        self.truncation = loaded.config.get("truncation", "head")  # classify: as the model was fine-tuned
        prompt = loaded.config.get("prompt")  # a prompt-based classifier reads each text inside its template
        self.prompt = PromptTemplate(prompt["template"]) if prompt else None

    # ------------------------------------------------------------------------------------- capabilities
    @property
    def tasks(self) -> tuple[str, ...]:
        m = self.model
        can = {"classify": m.task == "classification", "tag": m.task == "tagging",
               "fill_mask": m.mlm is not None and self.special.get("mask") is not None,
               "embed": not m.config.causal and getattr(m, "output", "hidden") == "hidden", "generate": m.lm is not None and m.config.causal}
        return tuple(t for t in TASKS if can[t])

    def _require(self, task: str) -> None:
        if task not in self.tasks:
            raise InputError(f"this model does not support {task!r}; it supports: {', '.join(self.tasks) or 'nothing'}")

    # -------------------------------------------------------------------------------------------- tasks
    @property
    def problem(self) -> str:
        """single_label, multi_label or regression (lmforge.model.heads.Problem)."""
        return getattr(self.model, "problem", "single_label")

    @property
    def thresholds(self) -> dict[str, float]:
        """Multi-label: each label's decision threshold (tuned on validation when fine-tuned; else 0.5)."""
        tuned = self.config.get("thresholds") or {}
        return {name: float(tuned.get(name, 0.5)) for name in self.labels}

    def classify(self, texts: str | Sequence[str], pairs: Optional[str | Sequence[str]] = None) -> Any:
        """Each text (or text pair) -> {"label", "score", "scores": {label: probability}}; multi-label:
        {"labels": [each label whose probability reaches its threshold], "scores": {label: probability}};
        regression: {"value": the predicted number}."""
        probs = self.class_probabilities([texts] if isinstance(texts, str) else texts,
                                         None if pairs is None else [pairs] if isinstance(pairs, str) else pairs)
        cut = self.thresholds if self.problem == "multi_label" else {}
        answers = [self._answer(p, cut) for p in probs]
        return answers[0] if isinstance(texts, str) else answers

    def _answer(self, p: Tensor, cut: dict[str, float]) -> dict[str, Any]:
        """(L,) outputs of one text -> its classify answer (``cut``: multi-label thresholds)."""
        if self.problem == "regression":
            return {"value": float(p[0])}
        scores = {lab: float(x) for lab, x in zip(self.labels, p)}
        if self.problem == "multi_label":
            return {"labels": [lab for lab in self.labels if scores[lab] >= cut[lab]], "scores": scores}
        return {"label": self.labels[int(p.argmax())], "score": float(p.max()), "scores": scores}

    def outputs(self, logits: Tensor) -> Tensor:
        """(B, L) logits -> softmax probabilities, per-label sigmoid probabilities, or values."""
        logits = logits.float()
        if self.problem == "multi_label":
            return logits.sigmoid()
        return logits if self.problem == "regression" else logits.softmax(-1)

    def class_probabilities(self, texts: Sequence[str], pairs: Optional[Sequence[str]] = None) -> Tensor:
        """(N, L) in input order, what ``classify`` answers and evaluation scores: class probabilities
        (multi-label: each label's own; regression: L = 1, the predicted value).
        Pairs are cut longest-first by the tokenizer and carry segment ids, as fine-tuning encodes them."""
        self._require("classify")
        if pairs is not None:
            if len(pairs) != len(texts):
                raise InputError(f"classify: {len(texts)} texts but {len(pairs)} pairs")
            if not isinstance(self.model, TaskModel) and self.prompt is None:
                raise InputError("classify: text pairs need token types, which this ONNX graph does not take; "
                                 "serve the model directory it was exported from")
            for t in pairs:
                self._check_text(t)
        items: list[Any] = list(zip(texts, pairs)) if pairs is not None else list(texts)
        encode = self._head_and_tail if self.truncation == "head+tail" and pairs is None else None
        if self.prompt is not None:
            encode = self._prompted

        def run(encs: list[Any]) -> list[Tensor]:
            ids, attn = self._pad(encs)
            if pairs is None or self.prompt is not None:  # a template holds both texts in one segment
                return list(self.outputs(self.model.classify(ids, attn)))  # (B, L)
            types = self._pad_ids([e.type_ids for e in encs], pad=0)[0]
            return list(self.outputs(self.model.classify(ids, attn, types)))

        rows = self._map(items, run, encode, check=[t for t in texts])
        return torch.stack(rows) if rows else torch.zeros(0, len(self.labels))

    def _prompted(self, items: list[Any]) -> list[Any]:
        """Texts or (text, pair) tuples -> their encodings inside the prompt template (lmforge/tokenize/prompt.py)."""
        assert self.prompt is not None
        paired = bool(items) and isinstance(items[0], tuple)
        texts = [x[0] for x in items] if paired else items
        try:
            return self.prompt.encode(self._untruncated, texts, [x[1] for x in items] if paired else None,
                                      self.max_length, self.truncation)
        except ValueError as exc:
            raise InputError(f"classify: {exc}") from None

    def _head_and_tail(self, items: list[str]) -> list[Any]:
        return [_Ids(ids) for ids in head_and_tail_ids(self._untruncated.encode_batch(items), self.max_length)]

    def classify_input(self, text: str) -> tuple[list[int], list[str], list[int]]:
        """(ids, tokens, special-token mask) of ``text`` exactly as ``classify`` feeds it to the model
        (truncated to max_length, head+tail when the model was fine-tuned so): for explanations."""
        self._check_text(text)
        if self.prompt is not None:  # the template's tokens are never explained nor removed, as special tokens
            (p,) = self._prompted([text])
            return p.ids, p.tokens, p.template_mask
        if self.truncation != "head+tail":
            enc = self.tokenizer.encode(text)
            return enc.ids, enc.tokens, enc.special_tokens_mask
        enc = self._untruncated.encode(text)
        keep = head_and_tail_positions(enc.special_tokens_mask, self.max_length)
        return ([enc.ids[i] for i in keep], [enc.tokens[i] for i in keep],
                [enc.special_tokens_mask[i] for i in keep])

    def tag(self, texts: str | Sequence[str]) -> Any:
        """Each text -> [{"word", "start", "end", "label", "score"}] for each word (its first sub-token's label).

        Texts of any length: one longer than the model's positions is tagged in overlapping windows
        (half a window apart) and each token keeps the answer of the window where it has the most
        context on both sides, so nothing is cut off."""
        self._require("tag")
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        for t in items:
            self._check_text(t)
        encs = self._untruncated.encode_batch(items)
        answers = []
        for enc, text, probs in zip(encs, items, self._token_probabilities(encs)):
            enc.text = text  # type: ignore[attr-defined]
            answers.append(self._words(enc, probs))
        return answers[0] if single else answers

    def tag_units(self, units: Sequence[Sequence[str]]) -> list[Tensor]:
        """Pre-split texts (e.g. the characters of a segmentation corpus) -> per text a (n_units, L)
        tensor of the probabilities at each unit's first sub-token, windowed as ``tag`` windows; a
        unit the tokenizer drops (whitespace) gets a row of zeros. Evaluation scores tagging with it."""
        self._require("tag")
        encs = self._untruncated.encode_batch([list(u) for u in units], is_pretokenized=True)
        out = []
        for enc, row, probs in zip(encs, units, self._token_probabilities(encs)):
            first = [-1] * len(row)
            for pos, word in enumerate(enc.word_ids):
                if word is not None and first[word] < 0:
                    first[word] = pos
            table = torch.cat([probs, torch.zeros(1, len(self.labels))])  # index -1: the zero row
            out.append(table[torch.tensor(first, dtype=torch.long)] if row else torch.zeros(0, len(self.labels)))
        return out

    def _token_probabilities(self, encs: list[Encoding]) -> list[Tensor]:
        """Untruncated encodings -> per encoding its (T, L) tag probabilities (special positions 0),
        from overlapping windows that each fit max_length (see _windows)."""
        windows: list[list[int]] = []  # model inputs, every one within max_length
        plans = []  # per text: its content positions and its windows
        for enc in encs:
            content = [i for i, special in enumerate(enc.special_tokens_mask) if not special]
            plans.append((content, self._windows(enc, content, windows)))
        probs: list[Tensor] = [torch.empty(0)] * len(windows)
        with torch.inference_mode():
            for chunk in self._batches([len(w) for w in windows]):
                ids, attn = self._pad_ids([windows[i] for i in chunk])
                out = self.model.tag(ids, attn).float().softmax(-1)  # (B, T, L)
                for i, p in zip(chunk, out):
                    probs[i] = p
        result = []
        for enc, (content, spans) in zip(encs, plans):
            full = torch.zeros(len(enc.ids), len(self.labels))  # (T, L); special positions stay 0
            if len(spans) == 1:  # the common case, a text within one window: copy its rows at once
                w, _, n, lead = spans[0]
                full[content] = probs[w][lead:lead + n]
                result.append(full)
                continue
            for k, pos in enumerate(content):  # the window where token k is most central
                w, first, _, lead = max(spans, key=lambda s: min(k - s[1], s[1] + s[2] - 1 - k)
                                        if s[1] <= k < s[1] + s[2] else -1)
                full[pos] = probs[w][lead + k - first]
            result.append(full)
        return result

    def _windows(self, enc: Encoding, content: list[int], windows: list[list[int]]) -> list[tuple[int, int, int, int]]:
        """Cut one encoding's content tokens into windows of max_length less the special tokens
        around them ([CLS]/[SEP] as the encoding has them), half a window apart; append them to
        ``windows`` and return, per window, (its index there, its first content index, its number of
        content tokens, the number of special tokens before them)."""
        ids = enc.ids
        head = [ids[0]] if content and content[0] > 0 else []
        tail = [ids[-1]] if content and content[-1] < len(ids) - 1 else []
        size = max(1, self.max_length - len(head) - len(tail))
        stride = max(1, size // 2)
        starts = list(range(0, max(len(content) - size, 0) + 1, stride))
        if starts[-1] + size < len(content):
            starts.append(len(content) - size)
        spans = []
        for a in starts:
            body = [ids[p] for p in content[a:a + size]]
            spans.append((len(windows), a, len(body), len(head)))
            windows.append(head + body + tail)
        return spans

    def embed(self, texts: str | Sequence[str], normalize: bool = False) -> Any:
        """Each text -> its mean-pooled final hidden states (a list of d_model floats)."""
        self._require("embed")

        def run(encs: list[Encoding]) -> list[list[float]]:
            ids, attn = self._pad(encs)
            vec = mean_pool(self.model.backbone(ids, attn), attn)  # (B, C)
            if normalize:
                vec = torch.nn.functional.normalize(vec, dim=-1)
            return vec.tolist()

        return self._map(texts, run)

    def fill_mask(self, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """For each mask token in `text`, the `top_k` most likely tokens: [{"token", "id", "score"}]."""
        self._require("fill_mask")
        self._check_text(text)
        enc = self.tokenizer.encode(text)
        mask_id = self.special["mask"]
        if mask_id not in enc.ids:
            name = self.tokenizer.id_to_token(mask_id)
            raise InputError(f"fill_mask: the text has no {name} token (within the first {self.max_length} tokens)")
        ids, attn = self._pad([enc])
        positions = ids == mask_id  # (1, T)
        with torch.inference_mode():
            probs = self.model.mlm(self.model.backbone(ids, attn), positions).float().softmax(-1)  # (M, V)
        out = []
        for row in probs:
            top = row.topk(min(top_k, row.numel()))
            out.append([{"token": self.tokenizer.id_to_token(int(i)), "id": int(i), "score": float(s)}
                        for s, i in zip(top.values, top.indices)])
        return out

    @torch.inference_mode()
    def generate(self, prompt: str, max_new_tokens: int = 50, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, seed: Optional[int] = None, use_cache: bool = True) -> dict[str, Any]:
        """Sample a continuation; temperature 0 is greedy. Stops at end-of-text or the position limit."""
        self._require("generate")
        self._check_text(prompt)
        if max_new_tokens < 1 or temperature < 0 or top_k < 0 or not 0 < top_p <= 1:
            raise InputError("generate: need max_new_tokens >= 1, temperature >= 0, top_k >= 0, 0 < top_p <= 1")
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids
        limit = self.model.config.max_positions
        ids = ids[-(limit - 1):]  # keep the end of a long prompt, leave room for one new token
        gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
        eos = self.special.get("eos")
        cache = KVCache(self.model.config.n_layers) if use_cache else None
        new: list[int] = []
        step = torch.tensor([ids])  # (1, T) the whole prompt first, then one token at a time
        while len(new) < max_new_tokens and len(ids) + len(new) < limit:
            context = step if use_cache else torch.tensor([ids + new])
            hidden = self.model.backbone(context, cache=cache)  # (1, T, C)
            logits = self.model.lm(hidden[:, -1]).float()[0]  # (V,)
            token = sample(logits, temperature, top_k, top_p, gen)
            if token == eos:
                break
            new.append(token)
            step = torch.tensor([[token]])
        return {"text": self.tokenizer.decode(new), "tokens": new, "prompt_tokens": len(ids)}

    # ---------------------------------------------------------------------------------------- plumbing
    def _check_text(self, text: Any) -> None:
        if not isinstance(text, str):
            raise InputError(f"expected text as a string, got {type(text).__name__}")
        problem = text_problem(text)
        if problem:
            raise InputError(problem)

    def _map(self, texts: str | Sequence[Any], run: Callable[[list[Encoding]], list[T]],
             encode: Optional[Callable[[list[Any]], list[Any]]] = None, check: Optional[list[Any]] = None) -> Any:
        """Encode (``encode``, default: the truncating tokenizer), batch by similar length, run, and
        return answers in input order (one answer for a str). ``check``: the texts to validate when
        the items are not plain texts (pairs)."""
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        for t in items if check is None else check:
            self._check_text(t)
        encs = (encode or self.tokenizer.encode_batch)(items)
        answers: list[Any] = [None] * len(encs)
        with torch.inference_mode():
            for chunk in self._batches([len(e.ids) for e in encs]):
                for i, answer in zip(chunk, run([encs[i] for i in chunk])):
                    answers[i] = answer
        return answers[0] if single else answers

    def _batches(self, lengths: list[int], waste: float = 0.25) -> list[list[int]]:
        """Indices in batches of similar length: at most batch_size, and padding at most `waste` of the
        real tokens (on CPU compute grows with padded tokens, so one 128-token text must not pad 31 short ones)."""
        batches: list[list[int]] = []
        current: list[int] = []
        real = 0
        for i in sorted(range(len(lengths)), key=lengths.__getitem__):  # ascending: the newest is the longest
            n = lengths[i]
            if current and (len(current) == self.batch_size or n * (len(current) + 1) > (1 + waste) * (real + n)):
                batches.append(current)
                current, real = [], 0
            current.append(i)
            real += n
        return batches + [current] if current else batches

    def _pad(self, encs: list[Encoding]) -> tuple[Tensor, Tensor]:
        return self._pad_ids([e.ids for e in encs])

    def _pad_ids(self, rows: list[list[int]], pad: Optional[int] = None) -> tuple[Tensor, Tensor]:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id if pad is None else pad, dtype=torch.long)  # (B, T)
        attn = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)] = torch.tensor(row)
            attn[i, :len(row)] = 1
        return ids, attn

    def _words(self, enc: Encoding, probs: Tensor) -> list[dict[str, Any]]:
        """Token-level probabilities (T, L) -> one entry per word, labelled by its first sub-token."""
        out: list[dict[str, Any]] = []
        seen: dict[int, dict[str, Any]] = {}
        text = getattr(enc, "text", "")
        for pos, word in enumerate(enc.word_ids):
            if word is None:
                continue
            start, end = enc.offsets[pos]
            if word in seen:
                seen[word]["end"] = end
                seen[word]["word"] = text[seen[word]["start"]:end]
                continue
            p = probs[pos]
            entry = {"word": text[start:end], "start": start, "end": end,
                     "label": self.labels[int(p.argmax())], "score": float(p.max())}
            seen[word] = entry
            out.append(entry)
        return out


def sample(logits: Tensor, temperature: float, top_k: int, top_p: float, gen: torch.Generator) -> int:
    """One token id from (V,) logits: greedy at temperature 0, else top-k then nucleus (top-p) sampling."""
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = logits.sort(descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, idx, drop), float("-inf"))
    return int(torch.multinomial(logits.softmax(-1), 1, generator=gen))


def load(path: str | Path, batch_size: int = 32, max_length: Optional[int] = None) -> Predictor:
    """An lmforge model directory (fp32, int8 or ONNX; or a Hugging Face BERT/GPT-2 directory) -> a Predictor."""
    from lmforge.model.hf import load_any
    from lmforge.serve.export import is_deployed, load_deployed

    deployed = is_deployed(Path(path))
    loaded = load_deployed(Path(path), deployed) if deployed else load_any(path)
    return Predictor(loaded, batch_size=batch_size, max_length=max_length)
