"""Pretraining heads on top of the transformer, and the module that bundles backbone and heads.

Names map onto BERT's (`cls.predictions.transform.dense` -> `mlm.transform`, `...LayerNorm` -> `mlm.norm`,
`cls.predictions.bias` -> `mlm.bias`, `bert.pooler.dense` -> `sentence.pooler`,
`cls.seq_relationship` -> `sentence.classifier`) and GPT-2's (`lm_head` -> `lm.decoder`).
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lmforge.model.transformer import Transformer, TransformerConfig, init_weights, query_index

HeadName = Literal["mlm", "sentence", "lm"]


class MLMHead(nn.Module):
    """Vocabulary logits only where a token was masked.

    BERT's head projects every position to the vocabulary although ~85% of them carry no label; at
    vocab 8k and width 256 that projection is the single largest matmul of a small model.
    """

    def __init__(self, cfg: TransformerConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.transform = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps)
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        if cfg.tie_embeddings:
            self.decoder.weight = embedding.weight

    def forward(self, hidden: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        # hidden (B, T, C); positions (B, T) bool -> logits (M, V) for the M selected positions
        h = hidden[positions] if positions is not None else hidden
        h = self.norm(F.gelu(self.transform(h)))
        return self.decoder(h) + self.bias


class SentenceHead(nn.Module):
    """NSP / SOP: a tanh pooler over the first token, then two classes (BERT's pooler + seq_relationship)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model)
        self.classifier = nn.Linear(cfg.d_model, 2)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.classifier(torch.tanh(self.pooler(hidden[:, 0])))  # (B, 2)


class LMHead(nn.Module):
    """Causal LM: logits at every position (every position has a next-token target)."""

    def __init__(self, cfg: TransformerConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.decoder = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.decoder.weight = embedding.weight

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(hidden)  # (B, T, V)


class LanguageModel(nn.Module):
    """Backbone plus the heads a pretraining objective needs; returns a dict of logits and the final
    hidden states."""

    def __init__(self, cfg: TransformerConfig, heads: tuple[HeadName, ...] = ("mlm",)) -> None:
        super().__init__()
        self.config = cfg
        self.heads = tuple(heads)
        self.backbone = Transformer(cfg)
        emb = self.backbone.embed.tokens
        self.mlm = MLMHead(cfg, emb) if "mlm" in heads else None
        self.sentence = SentenceHead(cfg) if "sentence" in heads else None
        self.lm = LMHead(cfg, emb) if "lm" in heads else None
        for head in (self.mlm, self.sentence, self.lm):
            if head is not None:
                # re-initialise head matrices but keep the tied embedding as the backbone set it
                tied = cfg.tie_embeddings and hasattr(head, "decoder")
                saved = emb.weight.detach().clone() if tied else None
                init_weights(head, cfg)
                if saved is not None:
                    with torch.no_grad():
                        emb.weight.copy_(saved)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Optional[Tensor] = None,
        token_type_ids: Optional[Tensor] = None,
        masked_positions: Optional[Tensor] = None,
    ) -> dict[str, Tensor]:
        if masked_positions is not None and self.mlm is not None and self.lm is None and not self.config.causal:
            # MLM pretraining reads the last block's output at the masked positions (and the first, for a
            # sentence head) alone: that block computes those only, 10/12 less of its work at 15% masking
            keep = masked_positions.clone()
            if self.sentence is not None:
                keep[:, 0] = True
            index, valid = query_index(keep)  # (B, K) each; index[:, 0] == 0 with a sentence head
            hidden = self.backbone(input_ids, attention_mask, token_type_ids, query_index=index)  # (B, K, C)
            out: dict[str, Tensor] = {"mlm_logits": self.mlm(hidden, masked_positions.gather(1, index) & valid)}
            if self.sentence is not None:
                out["sentence_logits"] = self.sentence(hidden)  # (B, 2)
            return out
        hidden = self.backbone(input_ids, attention_mask, token_type_ids)  # (B, T, C)
        out = {"hidden": hidden}  # what a bi-encoder pools (lmforge/finetune/retrieval.py)
        if self.mlm is not None and masked_positions is not None:
            out["mlm_logits"] = self.mlm(hidden, masked_positions)  # (M, V)
        if self.sentence is not None:
            out["sentence_logits"] = self.sentence(hidden)  # (B, 2)
        if self.lm is not None:
            out["lm_logits"] = self.lm(hidden)  # (B, T, V)
        return out


def transformer_blocks(model: nn.Module) -> Optional[nn.ModuleList]:
    """The blocks of a bare Transformer or of a model with a ``backbone`` (LanguageModel, TaskModel), or None."""
    return getattr(getattr(model, "backbone", model), "blocks", None)


# ---------------------------------------------------------------- fine-tuning heads

Pooling = Literal["first", "mean", "last"]


def mean_pool(hidden: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
    """Average of the real (unpadded) positions, as sentence-transformers does. (B, T, C) -> (B, C)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    w = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1e-9)


def pool(hidden: Tensor, attention_mask: Optional[Tensor], pooling: Pooling) -> Tensor:
    """(B, T, C) -> (B, C): the first token ([CLS], encoders), the mean of the real tokens (a bag of
    contextual tokens: what short runs fine-tune best, since [CLS] has learnt little after minutes of
    pretraining), or the last real token (decoders, where only the last position has seen the whole
    text; padding is on the right, so its index is len - 1)."""
    if pooling == "first":
        return hidden[:, 0]
    if pooling == "mean":
        return mean_pool(hidden, attention_mask)
    if attention_mask is None:
        return hidden[:, -1]
    last = attention_mask.long().sum(1).clamp(min=1) - 1  # (B,)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class SequenceClassificationHead(nn.Module):
    """Pooled token -> dropout -> [dense + tanh (BERT's pooler) -> dropout] -> K logits.
    By default the first token goes through BERT's pooler into a biased Linear; the mean (as
    sentence-transformers) has no pooler; the last token (decoders) has neither pooler nor bias, as
    GPT-2's and Llama's ``ForSequenceClassification`` (one bias-free ``score``), so that it exports to
    them. ``pooler=False`` drops the pooler for any pooling (a first-token classifier imported without
    BERT's pooler); ``bias`` overrides the Linear's."""

    def __init__(self, cfg: TransformerConfig, n_labels: int, pooling: Pooling = "first", dropout: float = 0.1,
                 pooler: Optional[bool] = None, bias: Optional[bool] = None) -> None:
        super().__init__()
        self.pooling: Pooling = pooling
        with_pooler = pooling == "first" if pooler is None else pooler
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model) if with_pooler else None
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(cfg.d_model, n_labels, bias=pooling != "last" if bias is None else bias)

    def forward(self, hidden: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
        pooled = self.drop(pool(hidden, attention_mask, self.pooling))  # (B, C)
        if self.pooler is not None:
            pooled = self.drop(torch.tanh(self.pooler(pooled)))
        return self.classifier(pooled)  # (B, K)


class TokenClassificationHead(nn.Module):
    """One set of K logits per token (tags are read from each unit's first sub-token)."""

    def __init__(self, cfg: TransformerConfig, n_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(cfg.d_model, n_labels)

    def forward(self, hidden: Tensor, attention_mask: Optional[Tensor]) -> Tensor:
        return self.classifier(self.drop(hidden))  # (B, T, K)


class VerbalizerHead(nn.Module):
    """Prompt-based classification (PET / LM-BFF): the MLM head's logits of one label word per class at
    the input's [MASK] (the prompt template's, lmforge/tokenize/prompt.py). No new weights: the head
    starts from what pretraining learnt about the label words, which is what few labels need."""

    def __init__(self, label_token_ids: Sequence[int], mask_token_id: int) -> None:
        super().__init__()
        # rebuilt from config.json's "prompt", so not in the state dict
        self.register_buffer("label_token_ids", torch.tensor(list(label_token_ids), dtype=torch.long), persistent=False)
        self.mask_token_id = int(mask_token_id)

    def mask_index(self, input_ids: Tensor) -> Tensor:
        """(B, T) ids with one mask per row (texts' own masks were made [UNK]) -> its position, (B, 1)."""
        return (input_ids == self.mask_token_id).int().argmax(1, keepdim=True)

    def forward(self, h: Tensor, mlm: MLMHead) -> Tensor:
        # h (B, C): the final hidden state at each row's mask
        h = mlm.norm(F.gelu(mlm.transform(h)))
        words = self.label_token_ids
        return h @ mlm.decoder.weight[words].T + mlm.bias[words]  # (B, K): only the K label words' rows


TaskName = Literal["classification", "tagging"]
TASKS: tuple[TaskName, ...] = ("classification", "tagging")
# What a classification head's K outputs mean (transformers' ``problem_type``): softmax over K
# classes; K independent sigmoids (a set of labels per text); or one value (K = 1, regression).
Problem = Literal["single_label", "multi_label", "regression"]
PROBLEMS: tuple[Problem, ...] = ("single_label", "multi_label", "regression")


class TaskModel(LanguageModel):
    """The one model class of lmforge's model directories: a LanguageModel (backbone and any pretraining
    heads, names as there) plus an optional task head (``head.*``), plus whatever a fine-tuning method
    wrapped into it (recorded as ``method`` and ``method_settings`` by lmforge.model.peft.apply_method).

    A pretrained model has no task; a fine-tuned one has ``task`` and ``labels`` (label names in logit
    order, saved in its config.json), and a classifier its ``problem``: single-label, multi-label, or
    regression (one output, ``labels`` = [the target's name]). ``pooler`` without a task keeps an imported BERT's pretrained
    tanh pooler (``pooler.*``), which starts a classifier's pooler and exports back to BERT unchanged.
    ``verbalizer`` (a token id per label) and ``mask_token_id`` make a prompt-based classifier: its head is
    the MLM head read at the [MASK] (VerbalizerHead), so ``heads`` must include "mlm".
    """

    def __init__(self, cfg: TransformerConfig, task: Optional[TaskName] = None, labels: Sequence[str] = (),
                 heads: tuple[HeadName, ...] = (), pooling: Optional[Pooling] = None, dropout: float = 0.1,
                 pooler: Optional[bool] = None, classifier_bias: Optional[bool] = None,
                 problem: Problem = "single_label", verbalizer: Optional[Sequence[int]] = None,
                 mask_token_id: Optional[int] = None) -> None:
        super().__init__(cfg, heads)
        if task not in (None, *TASKS):
            raise ValueError(f"task {task!r}: expected one of {', '.join(TASKS)}")
        if problem not in PROBLEMS or (problem != "single_label" and task != "classification"):
            raise ValueError(f"problem {problem!r}: expected one of {', '.join(PROBLEMS)}, with task classification")
        if problem == "regression" and task is not None and len(labels) != 1:
            raise ValueError(f"a regression head has one output: one label (the target's name), got {list(labels)}")
        if task is not None and problem != "regression" and (len(labels) < 2 or len(set(labels)) != len(labels)):
            raise ValueError(f"a task needs at least two distinct labels, got {list(labels)}")
        self.task, self.labels, self.problem = task, list(labels), problem
        self.method: str = "full"
        self.method_settings: dict = {}
        self.head: Optional[nn.Module] = None
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model) if task is None and pooler else None
        if verbalizer is not None:
            if task != "classification" or problem != "single_label" or "mlm" not in self.heads or mask_token_id is None:
                raise ValueError("a verbalizer (prompt-based classification) needs task classification with one label "
                                 "per text, the mlm head and a mask token id")
            if len(verbalizer) != len(labels):
                raise ValueError(f"a verbalizer needs one token per label: {len(verbalizer)} for {len(labels)} labels")
            self.head = VerbalizerHead(verbalizer, mask_token_id)
        elif task == "classification":
            self.head = SequenceClassificationHead(cfg, len(labels), pooling or ("last" if cfg.causal else "first"),
                                                   dropout, pooler, classifier_bias)
        elif task == "tagging":
            self.head = TokenClassificationHead(cfg, len(labels), dropout)
        if self.head is not None and not isinstance(self.head, VerbalizerHead):
            init_weights(self.head, cfg)
        if self.pooler is not None:
            init_weights(self.pooler, cfg)

    @property
    def label_to_id(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.labels)}

    @property
    def pooling(self) -> Optional[Pooling]:
        return self.head.pooling if isinstance(self.head, SequenceClassificationHead) else None

    def task_logits(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None,
                    token_type_ids: Optional[Tensor] = None) -> Tensor:
        """(B, K) for classification, (B, T, K) for tagging."""
        assert self.head is not None, "this model has no task head"
        if isinstance(self.head, VerbalizerHead):
            assert self.mlm is not None
            at = self.head.mask_index(input_ids)  # (B, 1)
            # the head reads one position: the last block computes only that one (not with prefix keys)
            if self.backbone.blocks[-1].attn.prefix is None and not self.config.causal:
                return self.head(self.backbone(input_ids, attention_mask, token_type_ids, query_index=at)[:, 0],
                                 self.mlm)
            hidden = self.backbone(input_ids, attention_mask, token_type_ids)  # (B, T, C)
            return self.head(hidden.gather(1, at[..., None].expand(-1, -1, hidden.shape[-1]))[:, 0], self.mlm)
        # a first-token classifier reads one position: the last block computes only that one
        first = self.pooling == "first"
        hidden = self.backbone(input_ids, attention_mask, token_type_ids, n_queries=1 if first else None)
        return self.head(hidden, attention_mask)

    classify = tag = task_logits  # the predictor's names for the two tasks

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None,  # type: ignore[override]
                token_type_ids: Optional[Tensor] = None, masked_positions: Optional[Tensor] = None) -> Any:
        """The task logits (what fine-tuning trains); without a task, LanguageModel's dict of head logits."""
        if self.head is None:
            return super().forward(input_ids, attention_mask, token_type_ids, masked_positions)
        return self.task_logits(input_ids, attention_mask, token_type_ids)
