"""Datasets a training loop reads from packed shards: contiguous blocks (causal or masked LM
pretraining), sentence pairs (NSP / SOP) and labelled documents (fine-tuning).

All share sampling.ShardDataset: deterministic shuffling keyed by (seed, epoch), rank sharding,
exact mid-epoch resume with state_dict()/load_state_dict(), and `loader(num_workers)`.
Masking for MLM is not done here; the training objective masks each batch dynamically.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

import numpy as np
import torch

from lmforge.config import ConfigError
from lmforge.tokenize.sampling import Batch, ShardDataset, pad_stack

__all__ = ["BlockDataset", "SentencePairDataset", "LabelledDataset"]


class BlockDataset(ShardDataset):
    """Documents joined by a separator (end-of-text if the tokenizer has one, else [SEP]) and cut into
    blocks of ``seq_len``; each block starts with [CLS] when the tokenizer has one.

    cross_documents=False cuts each document on its own: its last block is padded (attention_mask 0)
    instead of running on into the next document. Batches: input_ids, attention_mask, both (B, T).
    """

    def __init__(
        self,
        shards_dir: str,
        split: str,
        seq_len: int,
        batch_size: int,
        *,
        cross_documents: bool = True,
        add_special_tokens: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(shards_dir, split, seq_len, batch_size, **kwargs)
        self.cross_documents, self.add_special_tokens = cross_documents, add_special_tokens
        special = self.special
        separator = special.get("eos") if special.get("eos") is not None else special.get("sep")
        self._lead = np.array([special["cls"]] if add_special_tokens and special.get("cls") is not None else [], np.int64)
        self._sep = np.array([separator] if add_special_tokens and separator is not None else [], np.int64)
        self._content = seq_len - len(self._lead)  # stream tokens per block
        lengths = self.reader.doc_length + len(self._sep)  # (n_docs,) stream tokens per document
        if cross_documents:
            self._stream_starts = np.concatenate([[0], np.cumsum(lengths)])  # (n_docs + 1,)
            self._n_blocks = int(self._stream_starts[-1]) // self._content  # the short tail is dropped
        else:
            per_doc = np.where(self.reader.doc_length > 0, -(-lengths // self._content), 0)
            self._block_doc = np.repeat(np.arange(len(lengths)), per_doc)  # (n_blocks,) document of each block
            first = np.concatenate([[0], np.cumsum(per_doc)])[:-1]
            self._block_offset = (np.arange(len(self._block_doc)) - np.repeat(first, per_doc)) * self._content
            self._n_blocks = len(self._block_doc)

    def _options(self) -> dict[str, Any]:
        return {"cross_documents": self.cross_documents, "add_special_tokens": self.add_special_tokens}

    def _num_examples(self) -> int:
        return self._n_blocks

    def _doc_with_sep(self, d: int) -> np.ndarray:
        return np.concatenate([self.reader.document(d).astype(np.int64), self._sep])

    def _example(self, index: int, epoch: int) -> dict[str, Any]:
        if self.cross_documents:
            start, end = index * self._content, (index + 1) * self._content
            d = int(np.searchsorted(self._stream_starts, start, side="right")) - 1
            pieces = []
            while start < end:
                doc = self._doc_with_sep(d)
                offset = start - int(self._stream_starts[d])
                piece = doc[offset : offset + end - start]
                pieces.append(piece)
                start += len(piece)
                d += 1
            content = np.concatenate(pieces)
        else:
            offset = int(self._block_offset[index])
            content = self._doc_with_sep(int(self._block_doc[index]))[offset : offset + self._content]
        return {"ids": np.concatenate([self._lead, content])}

    def _collate(self, examples: list[dict[str, Any]]) -> Batch:
        ids, mask = pad_stack([e["ids"] for e in examples], self.pad_id, self.seq_len)
        return {"input_ids": ids, "attention_mask": mask}


class SentencePairDataset(ShardDataset):
    """[CLS] A [SEP] B [SEP] pairs from documents with at least two sentences, one per document and epoch.

    A is the document's sentences before a random cut and B those after it. A share ``1 - positive_fraction``
    of the pairs (exactly, per epoch) are negatives: for task="nsp" B is replaced by sentences from a random
    other document, for task="sop" A and B swap places. sentence_label follows Hugging Face BERT/ALBERT:
    0 = B truly follows A, 1 = random (NSP) or swapped (SOP). Pairs longer than seq_len lose tokens from
    the far ends (A's start, B's end). Batches are padded to their longest pair:
    input_ids, attention_mask, token_type_ids (B, T) and sentence_label (B,).
    """

    def __init__(
        self,
        shards_dir: str,
        split: str,
        seq_len: int,
        batch_size: int,
        *,
        task: Literal["nsp", "sop"] = "nsp",
        positive_fraction: float = 0.5,
        **kwargs: Any,
    ) -> None:
        super().__init__(shards_dir, split, seq_len, batch_size, **kwargs)
        if task not in ("nsp", "sop"):
            raise ConfigError(f"task must be 'nsp' or 'sop', got {task!r}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ConfigError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        if self.special.get("cls") is None or self.special.get("sep") is None:
            raise ConfigError(f"{shards_dir}: sentence pairs need [CLS] and [SEP] tokens; this tokenizer has none")
        self.task, self.positive_fraction = task, positive_fraction
        self._cls, self._sep = int(self.special["cls"]), int(self.special["sep"])
        counts = self.reader.sentence_counts  # (n_docs,)
        self._eligible = np.flatnonzero(counts >= 2)  # documents that can be cut between two sentences
        self._nonempty = np.flatnonzero(self.reader.doc_length > 0)  # sources of random B segments
        if len(self._eligible) == 0 or (task == "nsp" and len(self._nonempty) < 2):
            raise ConfigError(f"{shards_dir}/{split}: no documents with two or more sentences to make pairs from")
        self._labels: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))

    def _options(self) -> dict[str, Any]:
        return {"task": self.task, "positive_fraction": self.positive_fraction}

    def _num_examples(self) -> int:
        return len(self._eligible)

    def _epoch_labels(self, epoch: int) -> np.ndarray:
        """(n_examples,) 0/1 labels with exactly round(n * (1 - positive_fraction)) ones, shuffled per epoch."""
        if self._labels[0] != epoch:
            n = self._num_examples()
            negatives = int(round(n * (1.0 - self.positive_fraction)))
            self._labels = (epoch, (self._rng(epoch, stream=1).permutation(n) < negatives).astype(np.int64))
        return self._labels[1]

    def _example(self, index: int, epoch: int) -> dict[str, Any]:
        d = int(self._eligible[index])
        rng = self._rng(epoch, stream=2 + d)  # each pair's own stream: the same pair whatever the batch order
        tokens = self.reader.document(d).astype(np.int64)
        starts = self.reader.sentence_starts(d)
        cut = int(starts[rng.integers(1, len(starts))])
        a, b = tokens[:cut], tokens[cut:]
        label = int(self._epoch_labels(epoch)[index])
        if label and self.task == "sop":
            keep_a, keep_b = _truncate(len(a), len(b), self.seq_len - 3)  # keep the text around the cut, then swap
            a, b = b[:keep_b], a[len(a) - keep_a :]
        elif label:
            # a random other document: draw among the n-1 non-empty documents that are not d
            k = int(rng.integers(0, len(self._nonempty) - 1))
            k += 1 if k >= int(np.searchsorted(self._nonempty, d)) else 0
            other = int(self._nonempty[k])
            other_starts = self.reader.sentence_starts(other)
            b = self.reader.document(other)[int(other_starts[rng.integers(0, len(other_starts))]) :].astype(np.int64)
        keep_a, keep_b = _truncate(len(a), len(b), self.seq_len - 3)
        a, b = a[len(a) - keep_a :], b[:keep_b]
        ids = np.concatenate([[self._cls], a, [self._sep], b, [self._sep]])
        types = np.concatenate([np.zeros(keep_a + 2, np.int64), np.ones(keep_b + 1, np.int64)])
        return {"ids": ids, "types": types, "label": label}

    def _collate(self, examples: list[dict[str, Any]]) -> Batch:
        ids, mask = pad_stack([e["ids"] for e in examples], self.pad_id)
        types, _ = pad_stack([e["types"] for e in examples], 0)
        labels = torch.tensor([e["label"] for e in examples], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types, "sentence_label": labels}


def _truncate(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths to keep so that A + B fits ``budget``: trim the longer side first, then both evenly."""
    excess = len_a + len_b - budget
    if excess <= 0:
        return len_a, len_b
    longer_first = min(excess, abs(len_a - len_b))
    if len_a > len_b:
        len_a -= longer_first
    else:
        len_b -= longer_first
    rest = excess - longer_first
    return len_a - (rest + 1) // 2, len_b - rest // 2


class LabelledDataset(ShardDataset):
    """One example per document with its class label, for fine-tuning: [CLS] text [SEP] (text + end-of-text
    for tokenizers without [CLS]), cut to seq_len. Batches are padded to their longest example
    (input_ids, attention_mask (B, T); labels (B,) = index into ``label_names``).

    bucket_size=k sorts each run of k batches' worth of shuffled examples by length before cutting it
    into batches (less padding), then shuffles the batches.
    """

    def __init__(
        self,
        shards_dir: str,
        split: str,
        seq_len: int,
        batch_size: int,
        *,
        label_field: str = "label",
        bucket_size: Optional[int] = None,
        add_special_tokens: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(shards_dir, split, seq_len, batch_size, **kwargs)
        if bucket_size is not None and bucket_size < 1:
            raise ConfigError(f"bucket_size must be at least 1 (or None), got {bucket_size}")
        self.label_field, self.bucket_size, self.add_special_tokens = label_field, bucket_size, add_special_tokens
        self.label_names: list[str] = self.reader.meta.get("labels") or []
        if label_field not in self.reader.split_meta["fields"] or not self.label_names:
            raise ConfigError(
                f"{shards_dir}/{split}: documents have no '{label_field}' field (prepare labelled data with --label-field)"
            )
        index = {name: i for i, name in enumerate(self.label_names)}
        labels = []
        for number, fields in enumerate(self.reader.fields):
            if label_field not in fields:
                raise ConfigError(f"{shards_dir}/{split}: document {number} has no '{label_field}'")
            labels.append(index[str(fields[label_field])])
        self.labels = np.asarray(labels, np.int64)  # (n_docs,)
        special = self.special
        use = add_special_tokens
        self._lead = [special["cls"]] if use and special.get("cls") is not None else []
        tail = special.get("sep") if special.get("cls") is not None else special.get("eos")
        self._tail = [tail] if use and tail is not None else []

    def _options(self) -> dict[str, Any]:
        return {"label_field": self.label_field, "bucket_size": self.bucket_size, "add_special_tokens": self.add_special_tokens}

    def _num_examples(self) -> int:
        return len(self.labels)

    def _length(self, d: np.ndarray) -> np.ndarray:
        return np.minimum(self.reader.doc_length[d] + len(self._lead) + len(self._tail), self.seq_len)

    def _global_batches(self, epoch: int) -> list[np.ndarray]:
        if not self.bucket_size:
            return super()._global_batches(epoch)
        order = self._order(epoch)
        span = self.bucket_size * self.batch_size
        batches: list[np.ndarray] = []
        for start in range(0, len(order), span):
            bucket = order[start : start + span]
            bucket = bucket[np.argsort(self._length(bucket), kind="stable")]
            batches += [bucket[i : i + self.batch_size] for i in range(0, len(bucket), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        if self.shuffle:
            batches = [batches[i] for i in self._rng(epoch, stream=1).permutation(len(batches))]
        return batches

    def _example(self, index: int, epoch: int) -> dict[str, Any]:
        body = self.seq_len - len(self._lead) - len(self._tail)
        ids = np.concatenate([self._lead, self.reader.document(index)[:body].astype(np.int64), self._tail])
        return {"ids": ids.astype(np.int64), "label": int(self.labels[index])}

    def _collate(self, examples: list[dict[str, Any]]) -> Batch:
        ids, mask = pad_stack([e["ids"] for e in examples], self.pad_id)
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([e["label"] for e in examples])}
