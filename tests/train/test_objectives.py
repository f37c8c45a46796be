import pytest
import torch

from lmforge.model.heads import LanguageModel
from lmforge.model.transformer import TransformerConfig
from lmforge.train.objectives import IGNORE, MLMMasker, MLMObjective, causal_lm_objective, jieba_word_ids


def tiny(vocab: int, **kw) -> TransformerConfig:
    return TransformerConfig(
        vocab_size=vocab,
        max_positions=16,
        n_layers=2,
        d_model=32,
        n_heads=4,
        d_ff=64,
        dropout=0.0,
        attn_dropout=0.0,
        **kw,
    )


def blocks(corpus, B, T=16):
    ids = corpus.tokens[: B * (T - 1)].view(B, T - 1)
    return torch.cat([torch.full((B, 1), corpus.cls), ids], dim=1)  # (B, T) with [CLS] first


def test_masking_statistics(corpus):
    ids = blocks(corpus, 2000)  # 32k real tokens
    attn = torch.ones_like(ids)
    attn[:, -3:] = 0  # padding at the end of every row
    ids[:, -3:] = corpus.pad
    masker = MLMMasker(len(corpus.vocab), corpus.mask, corpus.special_ids, rate=0.15)
    masked, labels = masker(ids, attn, generator=torch.Generator().manual_seed(0))
    picked = labels != IGNORE
    special = torch.isin(ids, torch.tensor(corpus.special_ids))
    assert not (picked & special).any(), "special tokens were masked"
    assert not picked[:, -3:].any(), "padding was masked"
    assert torch.equal(labels[picked], ids[picked])
    rate = picked.sum() / (~special & attn.bool()).sum()
    assert abs(rate.item() - 0.15) < 0.01
    n = picked.sum().item()
    to_mask = (masked[picked] == corpus.mask).sum().item() / n
    kept = (masked[picked] == ids[picked]).sum().item() / n
    assert abs(to_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.02  # (a random draw equal to the token is rare)
    changed = picked & (masked != corpus.mask) & (masked != ids)
    assert abs(changed.sum().item() / n - 0.1) < 0.02
    assert not torch.isin(masked[changed], torch.tensor(corpus.special_ids)).any()
    assert torch.equal(masked[~picked], ids[~picked])


def test_masking_is_dynamic_and_seeded(corpus):
    ids = blocks(corpus, 8)
    masker = MLMMasker(len(corpus.vocab), corpus.mask, corpus.special_ids)
    a = masker(ids, generator=torch.Generator().manual_seed(1))[1]
    b = masker(ids, generator=torch.Generator().manual_seed(1))[1]
    c = masker(ids, generator=torch.Generator().manual_seed(2))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_whole_word_masking_masks_whole_jieba_words(corpus):
    tokens = [["[CLS]", "中", "国", "人", "民", "银", "行", "[SEP]"]]
    word_ids = jieba_word_ids(tokens)
    assert word_ids[0, 0] == -1 and word_ids[0, -1] == -1
    assert word_ids[0, 1] == word_ids[0, 2] and word_ids[0, 3] == word_ids[0, 4]  # 中国 / 人民
    ids = blocks(corpus, 64)
    rows = [[corpus.vocab[i] for i in row] for row in ids.tolist()]
    word_ids = jieba_word_ids(rows)
    masker = MLMMasker(len(corpus.vocab), corpus.mask, corpus.special_ids)
    _, labels = masker(ids, None, word_ids, torch.Generator().manual_seed(0))
    picked = labels != IGNORE
    assert picked.any()
    for b in range(ids.shape[0]):
        for w in word_ids[b].unique().tolist():
            if w < 0:
                continue
            inside = picked[b][(word_ids[b] == w) & (ids[b] != corpus.cls)]
            assert inside.all() or not inside.any(), "a word was partly masked"
    multi = sum(
        int((word_ids[b] == w).sum() > 1 and picked[b][word_ids[b] == w].all())
        for b in range(ids.shape[0])
        for w in word_ids[b].unique().tolist()
        if w >= 0
    )
    assert multi > 0  # multi-token words were masked as a whole


def test_mlm_objective_counts_only_masked_tokens(corpus):
    torch.manual_seed(0)
    model = LanguageModel(tiny(len(corpus.vocab)), heads=("mlm",))
    ids = blocks(corpus, 4)
    obj = MLMObjective(
        MLMMasker(len(corpus.vocab), corpus.mask, corpus.special_ids),
        generator=torch.Generator().manual_seed(0),
    )
    out = obj(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    assert 0 < out.n_tokens < ids.numel()
    mean = out.loss_sum / out.n_tokens
    assert (
        abs(mean.item() - torch.log(torch.tensor(float(len(corpus.vocab)))).item()) < 1.0
    )  # ~uniform at init
    assert 0 <= out.metrics["mlm_correct"] <= out.n_tokens


def test_nsp_loss_is_added_to_mlm(corpus):
    torch.manual_seed(0)
    model = LanguageModel(tiny(len(corpus.vocab)), heads=("mlm", "sentence"))
    ids = blocks(corpus, 4)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
        "sentence_label": torch.tensor([0, 1, 1, 0]),
    }
    mk = lambda: MLMObjective(
        MLMMasker(len(corpus.vocab), corpus.mask, corpus.special_ids),
        generator=torch.Generator().manual_seed(0),
    )
    both = mk()(model, batch)
    mlm_only = mk()(model, {k: v for k, v in batch.items() if k != "sentence_label"})
    sent = torch.nn.functional.cross_entropy(
        model(ids, token_type_ids=batch["token_type_ids"])["sentence_logits"], batch["sentence_label"]
    )
    torch.testing.assert_close(both.loss_sum / both.n_tokens, mlm_only.loss_sum / mlm_only.n_tokens + sent)
    assert "sentence_correct" in both.metrics


def test_causal_lm_loss_per_token(corpus):
    torch.manual_seed(0)
    model = LanguageModel(tiny(len(corpus.vocab), causal=True, norm="pre", type_vocab_size=0), heads=("lm",))
    ids = blocks(corpus, 2)
    attn = torch.ones_like(ids)
    attn[1, 10:] = 0
    out = causal_lm_objective(model, {"input_ids": ids, "attention_mask": attn})
    assert out.n_tokens.item() == 15 + 9  # next-token targets at real positions only
    logits = model(ids, attn)["lm_logits"]
    ref = torch.nn.functional.cross_entropy(
        logits[0, :-1], ids[0, 1:], reduction="sum"
    ) + torch.nn.functional.cross_entropy(logits[1, :9], ids[1, 1:10], reduction="sum")
    torch.testing.assert_close(out.loss_sum, ref)


def test_bad_rate_is_rejected(corpus):
    with pytest.raises(ValueError, match="mask rate"):
        MLMMasker(10, 4, [0], rate=1.5)
