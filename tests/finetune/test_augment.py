"""EDA augmentation on real review sentences: determinism, edit ratios, labels untouched, file errors."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from lmforge.config import ConfigError
from lmforge.corpora import get_corpus
from lmforge.finetune.augment import OPERATIONS, Augmenter, _is_content, augment_examples, load_synonyms
from lmforge.finetune.config import AugmentConfig

# A user's synonym file: one group per line, spaces or tabs; a comment and a blank line.
SYNONYMS = (
    "# common review words\n很 非常 十分 挺\n好\t不错 棒\n\n书 图书 书籍\n喜欢 喜爱\n便宜 实惠\n质量 品质\n"
)


@pytest.fixture(scope="module")
def synonym_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn") / "synonyms.txt"
    path.write_text(SYNONYMS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reviews() -> list[dict]:
    """200 real reviews of 10-120 characters, both labels."""
    records = (r for r in get_corpus("reviews").records() if 10 <= len(r.text) <= 120)
    picked = [r for i, r in enumerate(itertools.islice(records, 20_000)) if i % 100 == 0][:200]
    assert len(picked) == 200 and {r.label for r in picked} == {"positive", "negative"}
    return [{"text": r.text, "label": r.label, "source": r.source, "line": r.line} for r in picked]


@pytest.fixture(scope="module")
def augmenter(synonym_file) -> Augmenter:
    return Augmenter(
        AugmentConfig(
            synonyms=str(synonym_file),
            operations=list(OPERATIONS),
            copies=4,
            synonym_ratio=0.2,
            insertion_ratio=0.2,
            swap_ratio=0.2,
            deletion_prob=0.2,
        )
    )


def test_synonym_file_groups(synonym_file):
    table = load_synonyms(synonym_file)
    assert (
        table["很"] == ("非常", "十分", "挺") and table["不错"] == ("好", "棒") and "#" not in "".join(table)
    )


@pytest.mark.parametrize(
    "content,message",
    [
        ("很 非常\n好\n", r"synonyms.txt:2: a synonym group needs at least two words, got '好'"),
        ("很 非常 很\n", r"synonyms.txt:1: '很' appears twice in one group"),
    ],
)
def test_malformed_synonym_file_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "synonyms.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_synonyms(path)


def test_unreadable_or_missing_synonyms_are_config_errors(tmp_path):
    path = tmp_path / "synonyms.txt"
    path.write_bytes("很 非常\n".encode("gbk"))
    with pytest.raises(ConfigError, match="synonyms.txt: not UTF-8"):
        load_synonyms(path)
    with pytest.raises(ConfigError, match="synonym file not found"):
        load_synonyms(tmp_path / "none.txt")
    with pytest.raises(ConfigError, match="no augment.synonyms file"):
        Augmenter(AugmentConfig(operations=["synonym_replacement"]))


def test_deterministic_per_seed_and_index(reviews, augmenter, synonym_file):
    texts = [r["text"] for r in reviews[:40]]
    first = [augmenter.augment(t, i) for i, t in enumerate(texts)]
    again = Augmenter(augmenter.config)
    assert [again.augment(t, i) for i, t in enumerate(texts)] == first
    assert (
        list(reversed([again.augment(t, i) for i, t in reversed(list(enumerate(texts)))])) == first
    )  # order-free
    other = Augmenter(augmenter.config.model_copy(update={"seed": 1}))
    assert [other.augment(t, i) for i, t in enumerate(texts)] != first
    assert {op for copies in first for op, _ in copies} == set(OPERATIONS)  # operations take turns


def test_cjk_text_is_cut_into_words_and_joined_without_spaces(augmenter):
    tokens, joiner = augmenter.words("这本书质量非常好，物流也很快！")
    assert joiner == "" and "质量" in tokens and "非常" in tokens and "，" in tokens
    tokens, joiner = augmenter.words("The book is good, the delivery was fast")
    assert joiner == " " and tokens[:3] == ["The", "book", "is"]


def _content(tokens):
    return [t for t in tokens if _is_content(t)]


def _expected(ratio, tokens):
    return max(1, int(ratio * len(_content(tokens))))


def test_swap_keeps_words_and_punctuation_places(reviews, augmenter):
    rng = np.random.default_rng(0)
    for row in reviews:
        tokens, _ = augmenter.words(row["text"])
        out = augmenter.random_swap(tokens, rng)
        assert Counter(out) == Counter(tokens) and len(out) == len(tokens)
        assert all(a == b for a, b in zip(tokens, out) if not _is_content(a))
        moved = sum(a != b for a, b in zip(tokens, out))
        assert moved <= 2 * _expected(0.2, tokens)


def test_deletion_rate_and_order(reviews, augmenter):
    rng = np.random.default_rng(0)
    deleted = total = 0
    for row in reviews:
        tokens, _ = augmenter.words(row["text"])
        out = augmenter.random_deletion(tokens, rng)
        it = iter(tokens)
        assert all(t in it for t in out)  # a subsequence: order kept
        assert [t for t in out if not _is_content(t)] == [t for t in tokens if not _is_content(t)]
        assert _content(out)  # never everything
        deleted += len(tokens) - len(out)
        total += len(_content(tokens))
    assert 0.17 < deleted / total < 0.23  # p = 0.2 over ~2,000 words


def test_insertion_adds_n_words_from_the_text_or_its_synonyms(reviews, augmenter):
    rng = np.random.default_rng(0)
    for row in reviews:
        tokens, _ = augmenter.words(row["text"])
        out = augmenter.random_insertion(tokens, rng)
        assert len(out) - len(tokens) == _expected(0.2, tokens)
        added = Counter(out) - Counter(tokens)
        synonyms = {s for t in tokens for s in augmenter.synonyms.get(t, ())}
        assert set(added) <= set(tokens) | synonyms


def test_synonym_replacement_changes_n_words_into_synonyms(reviews, augmenter):
    rng = np.random.default_rng(0)
    replaced_somewhere = 0
    for row in reviews:
        tokens, _ = augmenter.words(row["text"])
        out = augmenter.synonym_replacement(tokens, rng)
        changed = [(a, b) for a, b in zip(tokens, out) if a != b]
        candidates = sum(t in augmenter.synonyms for t in tokens)
        assert len(out) == len(tokens) and len(changed) == min(_expected(0.2, tokens), candidates)
        assert all(b in augmenter.synonyms[a] for a, b in changed)
        replaced_somewhere += bool(changed)
    assert replaced_somewhere > 20  # the file's words do occur in real reviews


def test_labels_and_fields_are_untouched(reviews, augmenter):
    rows = reviews[:30]
    out = list(augment_examples(rows, augmenter.config, augmenter=augmenter))
    assert len(out) == len(rows) * 5
    for n, row in enumerate(rows):
        original, copies = out[5 * n], out[5 * n + 1 : 5 * n + 5]
        assert original is row and "augmentation" not in original
        for copy in copies:
            assert {k: v for k, v in copy.items() if k not in ("text", "augmentation")} == {
                k: v for k, v in row.items() if k != "text"
            }
            assert copy["augmentation"] in OPERATIONS
    assert sum(c["text"] != rows[i // 5]["text"] for i, c in enumerate(out) if "augmentation" in c) > 100
