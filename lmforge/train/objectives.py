"""Pretraining objectives: dynamic MLM masking, NSP/SOP, causal LM.

An objective is a small function ``(model, batch) -> ObjectiveOutput``: the *sum* of the loss over
its tokens and how many tokens that is, so the loop can normalise per token across micro-batches
and processes. Metrics are sums too (e.g. correct predictions) for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100  # label value that cross_entropy skips


@dataclass
class ObjectiveOutput:
    loss_sum: Tensor  # scalar, sum of per-token losses of this micro-batch
    n_tokens: Tensor  # scalar count the loss is normalised by
    metrics: dict[str, Tensor] = field(default_factory=dict)  # sums, reduced like n_tokens
    # what validation reports: name -> (numerator metric, denominator metric or "n_tokens"), each summed
    # over the validation batches and processes first; "acc" -> val_acc = correct / count, ...
    reports: dict[str, tuple[str, str]] = field(default_factory=dict)


Objective = Callable[[nn.Module, dict[str, Tensor]], ObjectiveOutput]


class MLMMasker:
    """BERT's dynamic masking: pick ``rate`` of the maskable tokens; of those 80% -> [MASK], 10% -> a
    random token, 10% unchanged. Special tokens and padding are never picked.

    With ``word_ids`` (B, T) (same id = same word, -1 = not maskable), whole words are picked
    together (whole-word masking); :func:`jieba_word_ids` computes them for Chinese.
    """

    def __init__(self, vocab_size: int, mask_id: int, special_ids: Sequence[int], rate: float = 0.15) -> None:
        if not 0 < rate < 1:
            raise ValueError(f"mask rate must be in (0, 1), got {rate}")
        self.mask_id = mask_id
        self.rate = rate
        self.special = torch.tensor(sorted(set(special_ids) | {mask_id}), dtype=torch.long)
        keep = torch.ones(vocab_size, dtype=torch.bool)
        keep[self.special[self.special < vocab_size]] = False
        self.random_pool = keep.nonzero().squeeze(1)  # random replacements are never special tokens

    def maskable(self, input_ids: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
        ok = ~torch.isin(input_ids, self.special.to(input_ids.device))
        return ok & attention_mask.bool() if attention_mask is not None else ok

    def __call__(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        word_ids: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> tuple[Tensor, Tensor]:
        """(B, T) ids -> (masked ids, labels with IGNORE where nothing was masked)."""
        dev = input_ids.device
        ok = self.maskable(input_ids, attention_mask)  # (B, T)
        if word_ids is None:
            picked = (torch.rand(input_ids.shape, generator=generator, device=dev) < self.rate) & ok
        else:
            # one draw per word id; a token is picked when its word is
            n_words = int(word_ids.max().item()) + 2
            draw = torch.rand((input_ids.shape[0], n_words), generator=generator, device=dev) < self.rate
            picked = draw.gather(1, (word_ids + 1).clamp(min=0)) & ok & (word_ids >= 0)
        labels = torch.where(picked, input_ids, torch.full_like(input_ids, IGNORE))
        u = torch.rand(input_ids.shape, generator=generator, device=dev)
        to_mask = picked & (u < 0.8)
        to_random = picked & (u >= 0.8) & (u < 0.9)
        pool = self.random_pool.to(dev)
        rand_ids = pool[torch.randint(len(pool), input_ids.shape, generator=generator, device=dev)]
        masked = torch.where(to_mask, torch.full_like(input_ids, self.mask_id), input_ids)
        masked = torch.where(to_random, rand_ids, masked)
        return masked, labels


def jieba_word_ids(tokens: list[list[str]]) -> Tensor:
    """Word ids (B, T) for rows of token strings, segmenting the Chinese text with jieba.

    Tokens are WordPiece strings ("##" marks a continuation); special tokens ("[CLS]"...) get -1.
    A token belongs to the jieba word covering its first character.
    """
    import jieba

    rows = []
    for row in tokens:
        pieces = [t[2:] if t.startswith("##") else t for t in row]
        special = [t.startswith("[") and t.endswith("]") for t in row]
        text = "".join(p for p, s in zip(pieces, special) if not s)
        owner: list[int] = []  # word index of each character of text
        for w, word in enumerate(jieba.lcut(text, HMM=False)):
            owner.extend([w] * len(word))
        ids, pos = [], 0
        for piece, sp in zip(pieces, special):
            if sp or not piece:
                ids.append(-1)
                continue
            ids.append(owner[pos] if pos < len(owner) else -1)
            pos += len(piece)
        rows.append(ids)
    return torch.tensor(rows, dtype=torch.long)


class MLMObjective:
    """Masked LM (+ NSP/SOP when the batch has ``sentence_label``), as BERT combines them."""

    def __init__(
        self,
        masker: MLMMasker,
        id_to_token: Optional[list[str]] = None,
        whole_word: bool = False,
        generator: Optional[torch.Generator] = None,
    ) -> None:
        if whole_word and id_to_token is None:
            raise ValueError("whole-word masking needs the tokenizer's vocabulary (id_to_token)")
        self.masker = masker
        self.id_to_token = id_to_token
        self.whole_word = whole_word
        self.generator = generator  # None: the global RNG (saved in checkpoints); eval passes a fixed one

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> ObjectiveOutput:
        ids, attn = batch["input_ids"], batch.get("attention_mask")
        word_ids = None
        if self.whole_word:
            assert self.id_to_token is not None
            word_ids = jieba_word_ids([[self.id_to_token[i] for i in row] for row in ids.tolist()]).to(
                ids.device
            )
        masked, labels = self.masker(ids, attn, word_ids, self.generator)
        positions = labels != IGNORE  # (B, T)
        out = model(masked, attn, batch.get("token_type_ids"), masked_positions=positions)
        logits = out["mlm_logits"].float()  # (M, V)
        targets = labels[positions]  # (M,)
        loss_sum = F.cross_entropy(logits, targets, reduction="sum")
        n = positions.sum()
        metrics = {"mlm_correct": (logits.argmax(-1) == targets).sum(), "mlm_loss_sum": loss_sum.detach()}
        reports = {"mlm_acc": ("mlm_correct", "n_tokens"), "mlm_loss": ("mlm_loss_sum", "n_tokens")}
        if "sentence_label" in batch and "sentence_logits" in out:
            sent = F.cross_entropy(out["sentence_logits"].float(), batch["sentence_label"], reduction="mean")
            # BERT adds the mean MLM loss and the mean NSP loss; weighting the micro-batch's sentence
            # mean by its masked-token count keeps that sum after per-token normalisation.
            loss_sum = loss_sum + sent * n
            correct = (out["sentence_logits"].argmax(-1) == batch["sentence_label"]).sum()
            metrics.update(
                sentence_correct=correct, sentence_count=torch.tensor(len(batch["sentence_label"]))
            )
            reports["sentence_acc"] = ("sentence_correct", "sentence_count")
        return ObjectiveOutput(loss_sum, n, metrics, reports)


def causal_lm_objective(model: nn.Module, batch: dict[str, Tensor]) -> ObjectiveOutput:
    """Next-token prediction; padded positions and the last position carry no target."""
    ids, attn = batch["input_ids"], batch.get("attention_mask")
    logits = model(ids, attn, batch.get("token_type_ids"))["lm_logits"][:, :-1].float()  # (B, T-1, V)
    targets = ids[:, 1:].clone()  # (B, T-1)
    if attn is not None:
        targets[attn[:, 1:] == 0] = IGNORE
    flat_logits, flat_targets = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    loss_sum = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE, reduction="sum")
    valid = flat_targets != IGNORE
    correct = ((flat_logits.argmax(-1) == flat_targets) & valid).sum()
    return ObjectiveOutput(loss_sum, valid.sum(), {"lm_correct": correct}, {"lm_acc": ("lm_correct", "n_tokens")})
