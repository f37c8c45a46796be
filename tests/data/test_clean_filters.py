"""Cleaning and the quality rules: each rule keeps real prose and rejects generated junk with its reason."""

from __future__ import annotations

import random

import pytest

from lmforge.corpora import get_corpus
from lmforge.data.clean import clean_text
from lmforge.data.config import CleanConfig, FilterConfig
from lmforge.data.filters import apply_rules, build_rules, language_of
from lmforge.data.text import is_cjk, units


def peoples_daily(n: int) -> list[str]:
    out = []
    for record in get_corpus("peoples-daily").records():
        if len(record.text) > 40:
            out.append(record.text)
        if len(out) == n:
            return out
    return out


ENGLISH = (
    "The committee met on Tuesday to review the proposal. Members agreed that the budget was too small for "
    "the work that had to be done, and they asked the staff to prepare a second draft with the new figures. "
    "The chair said that the revised plan would be published before the end of the month. Several members "
    "noted that the public had not yet been consulted, and that this should happen before any decision. "
    "The meeting ended with a vote to continue the discussion next week, when the new numbers are ready."
)


def verdict(text: str, **rules) -> str | None:
    config = FilterConfig(**{name: {"enabled": True, **opts} for name, opts in rules.items()})
    rejection, _ = apply_rules(text, build_rules(config))
    return rejection.reason if rejection else None


def test_clean_normalises_unicode_invisibles_and_whitespace():
    dirty = "Ｈｅｌｌｏ\u200b  wor\u00adld\t!\r\n\n\n\nnext\ufeff line\x07"
    assert clean_text(dirty, CleanConfig()) == "Hello world !\n\nnext line"
    assert clean_text("全角　空格ＡＢＣ", CleanConfig(nfkc=False, fullwidth_to_halfwidth=True)) == "全角 空格ABC"
    assert clean_text("ＡＢＣ", CleanConfig(nfkc=False)) == "ＡＢＣ"


def test_units_are_script_aware():
    assert units("我爱北京 hello world!") == ["我", "爱", "北", "京", "hello", "world!"]
    assert is_cjk(peoples_daily(1)[0]) and not is_cjk(ENGLISH)


def test_real_prose_passes_every_quality_rule():
    long_english = "\n".join([ENGLISH] * 1).replace(". ", ".\n")
    assert verdict(long_english, c4={}, gopher_quality={}, gopher_repetition={}) is None
    chinese = "\n".join(peoples_daily(12))  # real People's Daily sentences, one per line
    assert verdict(chinese, c4={}, gopher_quality={}, gopher_repetition={}) is None


def test_gopher_quality_rejections():
    rng = random.Random(0)
    assert verdict("too few words here.", gopher_quality={}) == "gopher_too_few_words"
    long_words = " ".join("".join(rng.choice("abcdefghij") for _ in range(15)) for _ in range(80))
    assert verdict(long_words, gopher_quality={}) == "gopher_avg_word_length"
    no_stop = " ".join(rng.choice(["apple", "banana", "cherry", "grape"]) for _ in range(80))
    assert verdict(no_stop, gopher_quality={}) == "gopher_stop_words"
    hashes = ENGLISH + " #tag" * 20
    assert verdict(hashes, gopher_quality={}) == "gopher_symbol_ratio"
    bullets = "\n".join(f"- the item {i} of the list with words" for i in range(60))
    assert verdict(bullets, gopher_quality={}) == "gopher_bullet_lines"
    ellipsis = "\n".join(f"and the story {i} goes on and on and then..." for i in range(30))
    assert verdict(ellipsis, gopher_quality={}) == "gopher_ellipsis_lines"
    numbers = ENGLISH + " " + " ".join(str(rng.randint(0, 10**6)) for _ in range(200))
    assert verdict(numbers, gopher_quality={}) == "gopher_alpha_ratio"


def test_gopher_repetition_rejections():
    lines = "\n".join(["the same line repeated here."] * 10 + ["one different line with words."])
    assert verdict(lines, gopher_repetition={}) == "gopher_dup_line_ratio"
    spam = ENGLISH + " buy now" * 25
    assert verdict(spam, gopher_repetition={}) == "gopher_top_2gram"
    chinese_spam = "非常不错的" * 20
    assert verdict(chinese_spam, gopher_repetition={}) is not None  # counted per character in CJK text


def test_c4_line_rules():
    text = ENGLISH.replace(". ", ".\n") + "\nPlease enable JavaScript to view this page.\nRead our privacy policy.\nmenu home"
    rejection, kept = apply_rules(text, build_rules(FilterConfig(c4={"enabled": True})))
    assert rejection is None
    assert "JavaScript" not in kept and "privacy" not in kept and "menu home" not in kept
    assert verdict("Lorem ipsum dolor sit amet. " + ENGLISH, c4={}) == "c4_lorem_ipsum"
    assert verdict(ENGLISH + " function() { return 1; }", c4={}) == "c4_curly_bracket"
    assert verdict("One sentence only, with enough words.", c4={}) == "c4_too_few_sentences"
    assert verdict("no punctuation at all\nnone here either", c4={}) == "c4_no_lines_left"


def test_language_filter_uses_the_bundled_model():
    assert language_of(ENGLISH)[0] == "en"
    assert language_of(peoples_daily(1)[0])[0] == "zh"
    assert verdict(ENGLISH, language={"languages": ["zh"]}) == "language"
    assert verdict(peoples_daily(1)[0], language={"languages": ["zh"]}) is None


@pytest.mark.parametrize(
    "text, rules, reason",
    [
        ("", {}, "empty"),
        ("bad \ufffd\ufffd\ufffd bytes", {"encoding": {}}, "encoding"),
        ("x" * 50, {"length": {"max_chars": 10}}, "too_long"),
        ("两个字", {"length": {"min_units": 5}}, "too_short"),
    ],
)
def test_basic_rules(text, rules, reason):
    assert verdict(text, **rules) == reason
