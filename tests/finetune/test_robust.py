"""FGM/PGD change the loss as expected, R-Drop and label smoothing, freezing for full fine-tuning,
augmentation wired into training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer

from lmforge.config import ConfigError, build_config
from lmforge.finetune.config import RobustConfig
from lmforge.data.examples import read_classification
from lmforge.finetune.data import ExampleSource, encode_classification
from lmforge.finetune.objective import FinetuneObjective
from lmforge.finetune.stage import finetune, make_finetune_config
from lmforge.model.heads import TaskModel
from lmforge.train import checkpoint as ckpt
from lmforge.train.objectives import IGNORE
from tests.finetune.conftest import ft_layers, tiny_arch


@pytest.fixture(scope="module")
def batch(tokenizer_file, reviews_small):
    tok = Tokenizer.from_file(str(tokenizer_file))
    texts, pairs, labels = read_classification(str(reviews_small), "train", "text", None)
    enc = encode_classification(tok, texts[:16], pairs[:16], labels[:16], {"negative": 0, "positive": 1}, 32)
    return next(iter(ExampleSource(enc, 16, 0, shuffle=False))), tok.get_vocab_size()


def _model(vocab, dropout=0.0, seed=0):
    torch.manual_seed(seed)
    arch = tiny_arch(vocab).model_copy(update={"dropout": dropout, "attn_dropout": dropout})
    return TaskModel(arch, "classification", ["negative", "positive"], dropout=dropout).train()


def _robust(**kw):
    return build_config(RobustConfig, kw, source="test")


@pytest.mark.parametrize("kind", ["fgm", "pgd"])
def test_adversarial_perturbation_raises_the_loss(batch, kind):
    data, vocab = batch
    model = _model(vocab)
    clean = FinetuneObjective(model, _robust())(model, data).loss_sum
    objective = FinetuneObjective(model, _robust(adversarial=kind, epsilon=2.0, pgd_steps=3, pgd_alpha=1.0))
    delta, clean_again, _, _ = objective.adversarial_delta(model, data)
    assert torch.allclose(clean, clean_again)
    norms = delta.flatten(1).norm(dim=1)
    assert torch.all(norms <= 2.0 + 1e-4) and torch.all(norms > 0)  # inside the epsilon ball, not empty
    if kind == "fgm":
        assert torch.allclose(norms, torch.full_like(norms, 2.0), atol=1e-4)  # FGM steps exactly epsilon
    total = objective(model, data).loss_sum
    adversarial = total - clean
    assert adversarial > clean  # the gradient direction increases the loss
    tiny = FinetuneObjective(model, _robust(adversarial=kind, epsilon=1e-6, pgd_alpha=1e-7))(model, data).loss_sum
    assert torch.allclose(tiny, 2 * clean, rtol=1e-4)  # no perturbation: clean + clean
    total.backward()  # one backward through clean and adversarial passes, as the loop does
    assert model.head.classifier.weight.grad is not None


def test_pgd_finds_a_stronger_perturbation_than_fgm(batch):
    data, vocab = batch
    model = _model(vocab)
    clean = FinetuneObjective(model, _robust())(model, data).loss_sum
    fgm = FinetuneObjective(model, _robust(adversarial="fgm", epsilon=3.0))(model, data).loss_sum - clean
    pgd = FinetuneObjective(model, _robust(adversarial="pgd", epsilon=3.0, pgd_steps=5, pgd_alpha=1.0))(model, data).loss_sum - clean
    assert pgd >= fgm - 1e-3


def test_evaluation_uses_the_clean_loss_only(batch):
    data, vocab = batch
    model = _model(vocab)
    clean = FinetuneObjective(model, _robust())(model, data).loss_sum
    with torch.no_grad():
        assert torch.allclose(FinetuneObjective(model, _robust(adversarial="pgd", rdrop_alpha=1.0))(model, data).loss_sum, clean)


def test_rdrop_adds_kl_only_when_dropout_differs(batch):
    data, vocab = batch
    still = _model(vocab, dropout=0.0)
    assert torch.allclose(FinetuneObjective(still, _robust(rdrop_alpha=4.0))(still, data).loss_sum,
                          FinetuneObjective(still, _robust())(still, data).loss_sum, atol=1e-4)
    noisy = _model(vocab, dropout=0.3)
    torch.manual_seed(5)  # same dropout masks in both calls: the difference is alpha x KL, KL > 0
    with_kl = FinetuneObjective(noisy, _robust(rdrop_alpha=4.0))(noisy, data).loss_sum
    torch.manual_seed(5)
    hardly = FinetuneObjective(noisy, _robust(rdrop_alpha=1e-9))(noisy, data).loss_sum
    assert with_kl > hardly + 1e-4


def test_label_smoothing_matches_torch(batch):
    data, vocab = batch
    model = _model(vocab).eval()
    out = FinetuneObjective(model, _robust(label_smoothing=0.2))(model, data)
    logits = model(data["input_ids"], data["attention_mask"], data["token_type_ids"])
    expected = F.cross_entropy(logits, data["labels"], label_smoothing=0.2, reduction="sum")
    assert torch.allclose(out.loss_sum, expected, atol=1e-5) and int(out.n_tokens) == 16


def test_freezing_keeps_embeddings_and_lower_layers(tmp_path, base_dir, reviews_small):
    out = tmp_path / "frozen"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=1,
                                             freeze={"embeddings": True, "layers": 1},
                                             train={"optim": {"layer_decay": 0.5}}), source="test"))
    base, tuned = load_file(str(base_dir / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for key, value in tuned.items():
        if key.startswith(("backbone.embed.", "backbone.blocks.0.")):
            assert torch.equal(value, base[key]), key
    assert not torch.equal(tuned["backbone.blocks.1.attn.qkv.weight"], base["backbone.blocks.1.attn.qkv.weight"])


def test_freeze_with_peft_is_a_clear_error(tmp_path, base_dir, reviews_small):
    with pytest.raises(ConfigError, match="freeze"):
        make_finetune_config(*ft_layers(tmp_path, base_dir, reviews_small, method="lora", freeze={"layers": 1}))


def test_augmentation_multiplies_training_examples(tmp_path, base_dir, reviews_small):
    plain = finetune(make_finetune_config(*ft_layers(tmp_path / "a", base_dir, reviews_small, epochs=1), source="t"))
    aug = finetune(make_finetune_config(*ft_layers(tmp_path / "b", base_dir, reviews_small, epochs=1,
                                                   augment={"enabled": True, "copies": 1}), source="t"))
    assert aug["result"].step == 2 * plain["result"].step


def test_checkpoint_averaging_exports_the_mean(tmp_path, base_dir, reviews_small):
    out = tmp_path / "avg"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=3, average_last=2), source="t"))
    last = [load_file(str(p / "model.safetensors")) for p in ckpt.complete_checkpoints(out / "checkpoints")[-2:]]
    tuned = load_file(str(out / "model.safetensors"))
    key = "head.classifier.weight"
    assert torch.allclose(tuned[key], (last[0][key] + last[1][key]) / 2, atol=1e-6)


def test_layer_wise_lr_decay_gives_lower_layers_smaller_steps():
    from lmforge.train.config import OptimConfig
    from lmforge.train.optim import param_groups

    model = TaskModel(tiny_arch(100), "classification", ["a", "b"])
    groups = param_groups(model, OptimConfig(lr=1.0, layer_decay=0.5), n_layers=2)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert lr_of[id(model.backbone.embed.tokens.weight)] == 0.125  # 0.5 ** 3
    assert lr_of[id(model.backbone.blocks[1].attn.qkv.weight)] == 0.5
    assert lr_of[id(model.head.classifier.weight)] == 1.0


def test_class_weights_and_focal_loss_for_imbalanced_labels(tmp_path, base_dir, reviews_small):
    """balanced weights are scikit-learn's; gamma 0 with no weights is plain cross-entropy; the focal
    term is (1 - p)^gamma on each unit; the stage passes both to the loss."""
    import torch.nn.functional as F
    from sklearn.utils.class_weight import compute_class_weight

    from lmforge.finetune.objective import balanced_class_weights

    labels = [0] * 30 + [1] * 6 + [2] * 4
    ours = balanced_class_weights(labels, 3)
    theirs = compute_class_weight("balanced", classes=np.arange(3), y=np.array(labels))
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-6)
    tagged = balanced_class_weights([[0, IGNORE, 1], [1, 1]], 3)  # tags: IGNORE left out, absent class 0
    assert tagged.tolist() == pytest.approx([4 / (2 * 1), 4 / (2 * 3), 0.0])

    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(16, 3, generator=g), torch.randint(0, 3, (16,), generator=g)
    model = TaskModel(tiny_arch(50), "classification", ["a", "b", "c"])
    plain = FinetuneObjective(model, _robust())
    assert torch.allclose(plain.loss(logits, target)[0], F.cross_entropy(logits, target, reduction="sum"))
    w = torch.tensor([1.0, 2.0, 0.5])
    weighted = FinetuneObjective(model, _robust(), class_weights=w).loss(logits, target)[0]
    assert torch.allclose(weighted, F.cross_entropy(logits, target, weight=w, reduction="sum"))
    focal = FinetuneObjective(model, _robust(), focal_gamma=2.0).loss(logits, target)[0]
    p = logits.softmax(-1)[torch.arange(16), target]
    assert torch.allclose(focal, ((1 - p) ** 2 * -p.log()).sum(), atol=1e-5)
    assert focal < plain.loss(logits, target)[0]  # easy units weigh less

    out = tmp_path / "weighted"
    finetune(make_finetune_config(*ft_layers(out, base_dir, reviews_small, epochs=1),
                                  {"loss": {"class_weights": "balanced", "focal_gamma": 1.0}}, source="t"))
    assert "class_weights: balanced" in (out / "config.yaml").read_text()
