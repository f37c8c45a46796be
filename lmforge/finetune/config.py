"""Typed configuration of fine-tuning: augmentation, PEFT methods, robustness and the `lmforge finetune` stage."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, field_validator, model_validator

from lmforge.config import Section
from lmforge.model.heads import Problem, TaskName
from lmforge.train.config import EarlyStopping, OptimConfig, ScheduleConfig, TrainConfig

Operation = Literal["synonym_replacement", "random_insertion", "random_swap", "random_deletion"]


class AugmentConfig(Section):
    """EDA-style augmentation of training texts (Wei & Zou 2019); their suggested ratio is 0.1."""

    enabled: bool = False
    copies: int = Field(
        4, ge=1, description="Augmented copies per training example (EDA: 4 for small, 1-2 for large sets)."
    )
    operations: list[Operation] = Field(
        default_factory=lambda: ["random_insertion", "random_swap", "random_deletion"],
        min_length=1,
        description="Edits taken in turn; add synonym_replacement when a synonym file is given.",
    )
    synonyms: Optional[str] = Field(
        None, description="Synonym file: one group of synonyms per line, words separated by spaces or tabs."
    )
    synonym_ratio: float = Field(0.1, ge=0, le=1, description="Share of words replaced by a synonym.")
    insertion_ratio: float = Field(
        0.1, ge=0, le=1, description="Words inserted, as a share of the text's words."
    )
    swap_ratio: float = Field(0.1, ge=0, le=1, description="Swaps, as a share of the text's words.")
    deletion_prob: float = Field(0.1, ge=0, le=1, description="Probability of deleting each word.")
    seed: int = 0


class LoRAConfig(Section):
    rank: int = Field(8, gt=0)
    alpha: float = Field(16.0, gt=0, description="The update is scaled by alpha / rank.")
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] = Field(
        default_factory=lambda: ["attn.qkv", "attn.proj"], min_length=1,
        description="Backbone Linear layers (name suffixes): attn.qkv, attn.proj, mlp.fc, mlp.proj.",
    )
    embedding_rank: int = Field(
        0, ge=0, description="LoRA on the token embedding table too, with this rank (same alpha / rank scale); "
        "0 = off. Worth it when the table is most of a small model (method=lora, backend=lmforge).")
    merge: bool = Field(False, description="Also export model.safetensors with the update merged (LoRA only).")
    backend: Literal["lmforge", "peft"] = Field(
        "lmforge", description="method=lora only: our LoRALinear, or the `peft` library's (pip install lmforge[peft])."
    )


class AdaLoRAConfig(Section):
    target_rank: int = Field(2, gt=0, description="Average rank per matrix at the end of the schedule.")
    warmup: float = Field(0.1, ge=0, lt=1, description="Share of steps before pruning starts.")
    final: float = Field(0.2, ge=0, lt=1, description="Share of steps at the end with the rank pattern frozen.")
    beta1: float = Field(0.85, gt=0, lt=1, description="EMA of sensitivity.")
    beta2: float = Field(0.85, gt=0, lt=1, description="EMA of uncertainty.")
    orthogonal_weight: float = Field(0.1, ge=0, description="Weight of the orthogonality penalty on P and Q.")


class AdapterConfig(Section):
    placement: Literal["houlsby", "pfeiffer"] = "houlsby"
    bottleneck: int = Field(16, gt=0)


class PrefixConfig(Section):
    length: int = Field(8, gt=0, description="Prefix positions per layer.")


class RobustConfig(Section):
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    rdrop_alpha: float = Field(0.0, ge=0, description="R-Drop: weight of the symmetric KL; 0 = off.")
    adversarial: Literal["none", "fgm", "pgd"] = "none"
    epsilon: float = Field(
        0.2, gt=0, description="Radius of the embedding perturbation (L2 over each example's (T, C) embeddings). "
        "Scale it to the embeddings: on the quickstart's encoder (init std 0.02) 1.0 drowned the signal and "
        "training collapsed to the majority class; 0.2 trained normally.")
    pgd_steps: int = Field(3, ge=1)
    pgd_alpha: float = Field(0.3, gt=0, description="PGD step size.")


class LossConfig(Section):
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="balanced: weight each class by N / (K * its count in the train split) "
        "(scikit-learn's rule), so a rare class counts as much as a frequent one.")
    focal_gamma: float = Field(0.0, ge=0, description="Focal loss (Lin et al. 2017): (1 - p)^gamma times the "
                               "cross-entropy, so easy examples weigh less; 0 = plain cross-entropy.")


class FreezeConfig(Section):
    embeddings: bool = Field(False, description="Full fine-tuning: keep the embeddings fixed.")
    layers: int = Field(0, ge=0, description="Full fine-tuning: keep the lowest N blocks fixed.")


class FinetuneDataConfig(Section):
    path: Optional[str] = Field(None, description="A `lmforge data prepare` output directory.")
    text_field: str = "text"
    pair_field: Optional[str] = Field(None, description="Second text of a text-pair task.")
    negative_field: Optional[str] = Field(None, description="task=retrieval: a field with a hard negative passage "
                                          "per pair, added to every query's candidates.")
    label_field: str = "label"
    max_train_examples: Optional[int] = Field(None, gt=0, description="Train on a seeded random subset of this "
                                              "many labelled examples (few-label experiments); the report's "
                                              "baselines train on the same subset.")
    subset_seed: int = Field(0, description="Seed of that subset.")
    max_length: int = Field(128, gt=2, description="Tokens per example, special tokens included.")
    truncation: Literal["head", "head+tail"] = Field(
        "head", description="Classification of single texts longer than max_length: keep the first tokens, or "
                            "the first quarter and the last three quarters (the verdict of a review is often at "
                            "its end). Stored with the model; the predictor truncates the same way.")


class RetrievalConfig(Section):
    temperature: float = Field(0.05, gt=0, description="task=retrieval: cosine similarities are divided by this "
                               "before the softmax over the batch's passages (0.05 = sentence-transformers' scale 20).")


class ReportConfig(Section):
    baselines: bool = Field(True, description="Score the majority and TF-IDF/jieba baselines in the same report.")
    max_train_examples: Optional[int] = Field(None, gt=0, description="Subsample the baselines' training set.")


# Fine-tuning's training defaults are field defaults of subclasses, not one default TrainConfig
# instance: a default_factory is used only when `train` is absent, so any `train.*` key (a CLI
# option, an override, a pipeline stage) used to bring back every pretraining default with it.
class FinetuneOptimConfig(OptimConfig):
    lr: float = Field(5e-5, gt=0, description="Peak learning rate (fine-tuning's default; pretraining's is 1e-3).")


class DistillConfig(Section):
    """Knowledge distillation (Hinton et al. 2015): the model being fine-tuned (the student) also learns
    the soft labels of a fine-tuned teacher on the same batches. `lmforge distill --teacher DIR`."""

    teacher: Optional[str] = Field(None, description="A fine-tuned model directory of the same task, labels and "
                                   "tokenizer; None: no distillation.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of both sides' soft labels; the soft "
                               "loss is scaled by T^2 so that its gradients keep their size (Hinton et al.).")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the soft loss; the labels' cross-entropy gets "
                         "1 - alpha (1: the teacher alone).")
    unlabelled: Optional[str] = Field(None, description="A prepared directory (`lmforge data prepare`) whose train "
                                      "split's texts, labels ignored, the student also learns from the teacher "
                                      "alone (in-domain text without labels; classification). Texts equal to a "
                                      "validation or test text are left out and counted.")


class ContinualConfig(Section):
    """Learning a new task without forgetting an earlier one (class-incremental: the head covers the labels
    of both). `lmforge/finetune/continual.py`."""

    rehearsal: Optional[str] = Field(None, description="A prepared directory of the earlier task (classification); "
                                     "its labels join the head, and a seeded sample of its train split is mixed "
                                     "into every epoch (its validation split into validation).")
    rehearsal_size: int = Field(1000, ge=0, description="Earlier-task train examples kept and replayed; 0: none "
                                "(EWC alone).")
    ewc: float = Field(0.0, ge=0, description="Elastic weight consolidation (Kirkpatrick et al. 2017): weight of "
                       "sum F_i (theta_i - theta*_i)^2 / 2, with F the Fisher information of the starting weights "
                       "on the earlier task's data; 0 = off.")
    fisher_examples: int = Field(512, gt=0, description="Earlier-task examples the Fisher information is estimated on.")


class PromptConfig(Section):
    """Prompt-based fine-tuning through the MLM head (PET, Schick & Schuetze 2021; LM-BFF, Gao et al. 2021):
    each text is read inside ``template`` and the class is the label word the MLM head likes best at its
    [MASK]. Needs an MLM-pretrained init_from; task=classification."""

    template: Optional[str] = Field(None, description="The input as the model reads it: {text} once, {pair} once for "
                                    "text pairs, [MASK] once (the tokenizer's mask token), e.g. '{text}总之很[MASK]。' or "
                                    "'{text} It was [MASK].'; only the texts are cut to data.max_length. None: off.")
    verbalizer: dict[str, str] = Field(default_factory=dict, description="Label -> its word, one token of the "
                                       "tokenizer each, e.g. {positive: 好, negative: 差}; every label needs one.")

    @field_validator("verbalizer", mode="before")
    @classmethod
    def _label_names_are_strings(cls, value: Any) -> Any:
        # labels are read as strings (a 0/1 label is "0"/"1"), so YAML's {0: bad, 1: good} means them
        return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


class SelfTrainingConfig(Section):
    """Self-training with few labels (pseudo-labelling; Yarowsky 1995, Lee 2013): fine-tune, label the
    unlabelled texts the model is sure of, fine-tune again from the same start on both, repeat."""

    unlabelled: Optional[str] = Field(None, description="A prepared directory whose train split's texts (labels "
                                      "ignored) are pseudo-labelled; texts equal to a validation or test text of "
                                      "data.path are left out. None: off.")
    threshold: float = Field(0.9, ge=0.5, lt=1, description="Keep a pseudo-label when the model's probability "
                             "of it is at least this.")
    rounds: int = Field(1, ge=1, description="Rounds of pseudo-labelling, each by the previous round's model.")


class FinetuneScheduleConfig(ScheduleConfig):
    warmup: float = Field(0.1, ge=0, lt=1, description="Warmup as a fraction of training (steps or budget).")


class FinetuneEarlyStopping(EarlyStopping):
    metric: str = Field("val_acc", description="Any logged eval metric (val_acc, val_loss, ...).")
    mode: Literal["min", "max"] = "max"
    patience: Optional[int] = Field(2, ge=1, description="Epochs without improvement; None: never stop.")


class FinetuneTrainConfig(TrainConfig):
    """TrainConfig with fine-tuning's defaults; train.steps is replaced by epochs x batches per epoch."""

    steps: int = Field(1, gt=0, description="Replaced by epochs x batches per epoch; evaluation runs every epoch.")
    batch_size: int = Field(16, gt=0, description="Examples per micro-batch per process.")
    early_stopping: FinetuneEarlyStopping = Field(default_factory=FinetuneEarlyStopping)
    optim: FinetuneOptimConfig = Field(default_factory=FinetuneOptimConfig)
    schedule: FinetuneScheduleConfig = Field(default_factory=FinetuneScheduleConfig)


class FinetuneConfig(Section):
    """Adapt a pretrained lmforge model to a labelled task with the one training loop."""

    out: str = Field("runs/finetune", description="Output directory.")
    init_from: Optional[str] = Field(None, description="A pretrained model dir (config.json, model.safetensors, "
                                     "tokenizer.json); None trains from scratch (needs model_dir for the tokenizer).")
    tokenizer: Optional[str] = Field(None, description="tokenizer.json when there is no init_from.")
    model: Optional[dict] = Field(None, description="TransformerConfig fields when there is no init_from.")
    resume: Optional[str] = Field(None, description="'auto' (newest complete checkpoint) or a checkpoint dir.")
    task: Literal["classification", "multilabel", "regression", "tagging", "retrieval"] = Field(
        "classification", description="classification: one label per text (softmax); multilabel: a set of labels "
        "per text, a JSON list (sigmoid + binary cross-entropy, per-label thresholds tuned on validation); "
        "regression: a number per text (mean squared error on standardised targets); tagging: a tag per character; "
        "retrieval: (query, passage) pairs train a bi-encoder with in-batch negatives (no head: the model embeds).")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    method: Literal["full", "lora", "adalora", "adapter", "prefix"] = "full"
    epochs: int = Field(3, gt=0)
    head_dropout: float = Field(0.1, ge=0, lt=1)
    dropout: Optional[float] = Field(
        None, ge=0, lt=1, description="Backbone dropout (residual and attention) while fine-tuning; None keeps "
                                      "the pretrained model's (often 0 after a short pretraining run, which "
                                      "then overfits a small labelled set).")
    pooling: Optional[Literal["first", "mean", "last"]] = Field(
        None, description="Classification: [CLS] (first), mean of the real tokens, or last real token; "
                          "None = first for encoders, last for decoders.")
    average_last: Optional[int] = Field(None, ge=2, description="Export the mean weights of the last N epoch "
                                        "checkpoints instead of the best one (checkpoint averaging).")
    soup: int = Field(1, ge=1, description="Fine-tune this many times (seeds train.seed, +1, ...) from the same "
                      "start and export the mean of their weights (a uniform model soup): one model, about an "
                      "ensemble's accuracy at one model's inference cost. method=full only.")
    data: FinetuneDataConfig = Field(default_factory=FinetuneDataConfig)
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    adalora: AdaLoRAConfig = Field(default_factory=AdaLoRAConfig)
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    prefix: PrefixConfig = Field(default_factory=PrefixConfig)
    robust: RobustConfig = Field(default_factory=RobustConfig)
    loss: LossConfig = Field(default_factory=LossConfig, description="Imbalanced labels: class weights, focal loss.")
    distill: DistillConfig = Field(default_factory=DistillConfig)
    continual: ContinualConfig = Field(default_factory=ContinualConfig)
    self_training: SelfTrainingConfig = Field(default_factory=SelfTrainingConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Few labels: classify through the MLM "
                                 "head with a template and label words.")
    freeze: FreezeConfig = Field(default_factory=FreezeConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    train: FinetuneTrainConfig = Field(default_factory=FinetuneTrainConfig)

    @field_validator("train", mode="before")
    @classmethod
    def _train_keys_over_finetune_defaults(cls, value: Any) -> Any:
        # A plain TrainConfig from Python carries pretraining's defaults; keep only what its
        # caller set, so fine-tuning's defaults fill the rest as they do for a dict.
        if isinstance(value, TrainConfig) and not isinstance(value, FinetuneTrainConfig):
            return value.model_dump(exclude_unset=True)
        return value

    @property
    def problem(self) -> Problem:
        """What the classification head's outputs mean (lmforge.model.heads.Problem)."""
        return {"multilabel": "multi_label", "regression": "regression"}.get(self.task, "single_label")  # type: ignore[return-value]

    @property
    def model_task(self) -> Optional[TaskName]:
        """The TaskModel task: multi-label and regression are classification heads; retrieval has no head."""
        return {"tagging": "tagging", "retrieval": None}.get(self.task, "classification")  # type: ignore[return-value]

    @model_validator(mode="after")
    def _check(self) -> "FinetuneConfig":
        self._check_prompt()
        if self.self_training.unlabelled and (self.task != "classification" or self.soup > 1):
            raise ValueError("self_training.unlabelled: pseudo-labels are classes (task=classification), and each "
                             "round is one model (soup=1)")
        if (self.continual.rehearsal or self.continual.ewc) and self.task != "classification":
            raise ValueError(f"continual.*: rehearsal and EWC apply to task=classification, not task={self.task}")
        if self.continual.ewc and not self.continual.rehearsal:
            raise ValueError("continual.ewc: the Fisher information is estimated on the earlier task's data; "
                             "give continual.rehearsal (rehearsal_size=0 replays none of it)")
        if self.task == "retrieval":
            other = {"distill.teacher": bool(self.distill.teacher), "augment.enabled": self.augment.enabled,
                     "loss.class_weights": self.loss.class_weights != "none", "loss.focal_gamma": self.loss.focal_gamma > 0,
                     "robust.label_smoothing": self.robust.label_smoothing > 0, "robust.rdrop_alpha": self.robust.rdrop_alpha > 0,
                     "robust.adversarial": self.robust.adversarial != "none", "pooling": self.pooling not in (None, "mean"),
                     "data.truncation": self.data.truncation != "head"}
            used = [key for key, on in other.items() if on]
            if used:
                raise ValueError(f"{used[0]}: does not apply to task=retrieval (a mean-pooled bi-encoder trained on "
                                 f"in-batch negatives)")
        elif self.data.negative_field:
            raise ValueError("data.negative_field: hard negatives apply to task=retrieval")
        if self.task in ("regression", "retrieval") and "metric" not in self.train.early_stopping.model_fields_set:
            # accuracy means nothing for a number, and in-batch top-1 saturates early: stop on val_loss
            self.train.early_stopping.metric, self.train.early_stopping.mode = "val_loss", "min"
        if self.task in ("multilabel", "regression"):
            softmax_only = {"distill.teacher": bool(self.distill.teacher),
                            "loss.class_weights": self.loss.class_weights != "none",
                            "loss.focal_gamma": self.loss.focal_gamma > 0,
                            "robust.label_smoothing": self.robust.label_smoothing > 0,
                            "robust.rdrop_alpha": self.robust.rdrop_alpha > 0}
            used = [key for key, on in softmax_only.items() if on]
            if used:
                raise ValueError(f"{used[0]}: works on one softmax over classes (task=classification or tagging), "
                                 f"not task={self.task}")
        if self.method != "full" and (self.freeze.embeddings or self.freeze.layers):
            raise ValueError(f"freeze.* applies to method=full; method={self.method} freezes the backbone anyway")
        if self.soup > 1 and self.method != "full":
            raise ValueError(f"soup={self.soup} averages whole models (method=full); averaging the factors of "
                             f"method={self.method} runs is not averaging their updates")
        if self.init_from is None and (self.tokenizer is None or self.model is None):
            raise ValueError("without init_from, give tokenizer (a tokenizer.json) and model (architecture fields)")
        if self.lora.embedding_rank and (self.method != "lora" or self.lora.backend != "lmforge"):
            raise ValueError(f"lora.embedding_rank applies to method=lora with lora.backend=lmforge, not "
                             f"method={self.method} with backend={self.lora.backend}")
        if self.distill.teacher and (self.robust.adversarial != "none" or self.robust.rdrop_alpha > 0):
            raise ValueError("distill.teacher: distillation adds its soft loss to the clean pass; it is not "
                             "combined with robust.adversarial or robust.rdrop_alpha")
        if self.distill.unlabelled and (not self.distill.teacher or self.task != "classification"):
            raise ValueError("distill.unlabelled: unlabelled text is learnt from a teacher's soft labels; it needs "
                             "distill.teacher and task=classification")
        if self.data.truncation == "head+tail" and (self.task == "tagging" or self.data.pair_field):
            raise ValueError("data.truncation=head+tail applies to single-text classification (pairs are cut "
                             "longest-first; tagging covers long texts in windows)")
        return self

    def _check_prompt(self) -> None:
        p = self.prompt
        if p.template is None:
            if p.verbalizer:
                raise ValueError("prompt.verbalizer: label words need prompt.template (the text around the [MASK])")
            return
        from lmforge.tokenize.prompt import PromptTemplate

        PromptTemplate(p.template)  # its own one-line error
        if self.task != "classification":
            raise ValueError(f"prompt.template: prompt-based fine-tuning picks one label word per text "
                             f"(task=classification), not task={self.task}")
        if not p.verbalizer:
            raise ValueError("prompt.verbalizer: give each label its word, e.g. {positive: good, negative: bad}")
        if self.init_from is None:
            raise ValueError("prompt.template: the label words are read by a pretrained MLM head; give init_from "
                             "(an MLM-pretrained encoder)")
        if self.lora.embedding_rank:
            raise ValueError("lora.embedding_rank: the MLM head reads the label words from the token embedding "
                             "table, which that LoRA update would change under it; use it without prompt.template")
        if self.pooling is not None:
            raise ValueError(f"pooling={self.pooling}: a prompt-based classifier reads the MLM head at the [MASK], "
                             f"it pools nothing")
