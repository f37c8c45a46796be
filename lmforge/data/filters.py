"""Quality rules. Each rule looks at one text and answers keep (None), reject (a Reject with a
named reason), or a shortened text (line-level rules such as C4's drop lines, not documents).

References for the default thresholds: Gopher quality and repetition rules (Rae et al. 2021,
appendix A), C4's line rules (Raffel et al. 2020, section 2.2).
"""

from __future__ import annotations

import re
from collections import Counter
from functools import lru_cache
from typing import Callable, NamedTuple, Optional, Union

from lmforge.data.config import (
    C4Rule,
    EncodingRule,
    FilterConfig,
    GopherQualityRule,
    GopherRepetitionRule,
    LanguageRule,
    LengthRule,
)
from lmforge.data.text import TERMINAL_PUNCT, TextStats


class Reject(NamedTuple):
    reason: str
    detail: str = ""


Verdict = Union[None, Reject, str]  # keep / reject / keep this rewritten text


class Rule(NamedTuple):
    name: str
    check: Callable[[TextStats], Verdict]


def build_rules(config: FilterConfig) -> list[Rule]:
    """The enabled rules, in the order they run (cheap and text-rewriting rules first)."""
    rules = [Rule("empty", _not_empty)]
    if config.encoding.enabled:
        rules.append(Rule("encoding", _encoding(config.encoding)))
    if config.length.enabled:
        rules.append(Rule("length", _length(config.length)))
    if config.language.enabled:  # before the quality rules: some of them (stop words) are English-only
        rules.append(Rule("language", _language(config.language)))
    if config.c4.enabled:
        rules.append(Rule("c4", _c4(config.c4)))
    if config.gopher_quality.enabled:
        rules.append(Rule("gopher_quality", _gopher_quality(config.gopher_quality)))
    if config.gopher_repetition.enabled:
        rules.append(Rule("gopher_repetition", _gopher_repetition(config.gopher_repetition)))
    return rules


def _not_empty(stats: TextStats) -> Verdict:
    return Reject("empty") if not stats.text.strip() else None


def _encoding(rule: EncodingRule) -> Callable[[TextStats], Verdict]:
    def check(stats: TextStats) -> Verdict:
        bad = stats.text.count("\ufffd")
        if bad and bad / len(stats.text) > rule.max_replacement_ratio:
            return Reject("encoding", f"{bad} replacement characters (U+FFFD)")
        return None

    return check


def _length(rule: LengthRule) -> Callable[[TextStats], Verdict]:
    def check(stats: TextStats) -> Verdict:
        chars = len(stats.text)
        if chars < rule.min_chars:
            return Reject("too_short", f"{chars} chars < {rule.min_chars}")
        if rule.max_chars is not None and chars > rule.max_chars:
            return Reject("too_long", f"{chars} chars > {rule.max_chars}")
        if rule.min_units or rule.max_units is not None:
            n = len(stats.units)
            if n < rule.min_units:
                return Reject("too_short", f"{n} units < {rule.min_units}")
            if rule.max_units is not None and n > rule.max_units:
                return Reject("too_long", f"{n} units > {rule.max_units}")
        return None

    return check


_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_SENTENCE_END = re.compile(r"[.!?。！？]+(?=\s|$|[\"'”’」』])|[。！？]")


def _c4(rule: C4Rule) -> Callable[[TextStats], Verdict]:
    def check(stats: TextStats) -> Verdict:
        lowered = stats.text.lower()
        if rule.reject_lorem_ipsum and "lorem ipsum" in lowered:
            return Reject("c4_lorem_ipsum")
        if rule.reject_curly_bracket and "{" in stats.text:
            return Reject("c4_curly_bracket")
        kept = []
        for line in stats.text.split("\n"):
            line_stats = TextStats(line.strip())
            low = line_stats.text.lower()
            if not low:
                continue
            if rule.drop_javascript_lines and "javascript" in low:
                continue
            if rule.drop_policy_lines and any(p in low for p in _POLICY):
                continue
            if len(line_stats.units) < rule.min_words_per_line:
                continue
            if rule.drop_lines_without_terminal_punct and not low.endswith(TERMINAL_PUNCT):
                continue
            if any(len(w) > rule.max_word_length for w in line_stats.units):
                continue
            kept.append(line_stats.text)
        if not kept:
            return Reject("c4_no_lines_left")
        text = "\n".join(kept)
        sentences = len(_SENTENCE_END.findall(text))
        if sentences < rule.min_sentences:
            return Reject("c4_too_few_sentences", f"{sentences} < {rule.min_sentences}")
        return text if text != stats.text else None

    return check


_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
_BULLETS = ("•", "‣", "⁃", "◦", "-", "*", "·", "●", "▪")
_PUNCT_ONLY = re.compile(r"^[\W_]+$")


def _gopher_quality(rule: GopherQualityRule) -> Callable[[TextStats], Verdict]:
    def check(stats: TextStats) -> Verdict:
        words = [w for w in stats.units if not _PUNCT_ONLY.match(w)]
        n = len(words)
        if n < rule.min_words:
            return Reject("gopher_too_few_words", f"{n} < {rule.min_words}")
        if n > rule.max_words:
            return Reject("gopher_too_many_words", f"{n} > {rule.max_words}")
        if not stats.cjk:  # a CJK unit is one character: word length and English stop words do not apply
            mean = sum(map(len, words)) / n
            if not rule.min_avg_word_length <= mean <= rule.max_avg_word_length:
                return Reject("gopher_avg_word_length", f"{mean:.1f}")
            stop = sum(1 for w in words if w.lower() in _STOP_WORDS)
            if stop < rule.min_stop_words:
                return Reject("gopher_stop_words", f"{stop} < {rule.min_stop_words}")
        symbols = stats.text.count("#") + stats.text.count("...") + stats.text.count("…")
        if symbols / n > rule.max_symbol_word_ratio:
            return Reject("gopher_symbol_ratio", f"{symbols / n:.2f}")
        lines = stats.lines
        if lines:
            bullets = sum(1 for line in lines if line.lstrip().startswith(_BULLETS))
            if bullets / len(lines) > rule.max_bullet_lines_ratio:
                return Reject("gopher_bullet_lines", f"{bullets}/{len(lines)}")
            ellipsis = sum(1 for line in lines if line.rstrip().endswith(("...", "…")))
            if ellipsis / len(lines) > rule.max_ellipsis_lines_ratio:
                return Reject("gopher_ellipsis_lines", f"{ellipsis}/{len(lines)}")
        alpha = sum(1 for w in stats.units if any(c.isalpha() for c in w))
        if alpha / max(len(stats.units), 1) < rule.min_alpha_words_ratio:
            return Reject("gopher_alpha_ratio", f"{alpha / len(stats.units):.2f}")
        return None

    return check


def _duplicate_share(items: list[str]) -> tuple[float, float]:
    """(share of items that repeat an earlier one, share of characters in those repeats)."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items += 1
            dup_chars += len(item)
        else:
            seen.add(item)
    total_chars = sum(map(len, items)) or 1
    return dup_items / max(len(items), 1), dup_chars / total_chars


def _top_ngram_char_ratio(words: list[str], n: int, total_chars: int) -> float:
    ngrams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    if not ngrams:
        return 0.0
    gram, count = ngrams.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(map(len, gram)) * count / total_chars


def _dup_ngram_char_ratio(words: list[str], n: int, total_chars: int) -> float:
    """Characters covered by n-grams that occurred before (non-overlapping, as Gopher counts)."""
    seen: set[tuple[str, ...]] = set()
    covered = 0
    i = 0
    while i <= len(words) - n:
        gram = tuple(words[i : i + n])
        if gram in seen:
            covered += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return covered / total_chars


_CJK_CHARS_PER_WORD = 2


def _gopher_repetition(rule: GopherRepetitionRule) -> Callable[[TextStats], Verdict]:
    def check(stats: TextStats) -> Verdict:
        for name, items, max_share, max_chars in (
            ("line", stats.lines, rule.max_dup_line_ratio, rule.max_dup_line_char_ratio),
            ("para", stats.paragraphs, rule.max_dup_para_ratio, rule.max_dup_para_char_ratio),
        ):
            share, char_share = _duplicate_share(items)
            if share > max_share:
                return Reject(f"gopher_dup_{name}_ratio", f"{share:.2f}")
            if char_share > max_chars:
                return Reject(f"gopher_dup_{name}_char_ratio", f"{char_share:.2f}")
        words = stats.units
        if len(words) < rule.min_units:
            return None
        total_chars = sum(map(len, words)) or 1
        # Thresholds are calibrated on English words; a CJK unit is one character and a Chinese word
        # is about two, so n words compare with 2n characters.
        scale = _CJK_CHARS_PER_WORD if stats.cjk else 1
        for n, limit in sorted(rule.max_top_ngram_char_ratio.items()):
            ratio = _top_ngram_char_ratio(words, n * scale, total_chars)
            if ratio > limit:
                return Reject(f"gopher_top_{n}gram", f"{ratio:.2f}")
        for n, limit in sorted(rule.max_dup_ngram_char_ratio.items()):
            ratio = _dup_ngram_char_ratio(words, n * scale, total_chars)
            if ratio > limit:
                return Reject(f"gopher_dup_{n}gram", f"{ratio:.2f}")
        return None

    return check


def _language(rule: LanguageRule) -> Callable[[TextStats], Verdict]:
    wanted = set(rule.languages)

    def check(stats: TextStats) -> Verdict:
        lang, prob = language_of(stats.text)
        if wanted and lang not in wanted:
            return Reject("language", f"{lang} (p={prob:.2f})")
        if prob < rule.min_confidence:
            return Reject("language_low_confidence", f"{lang} (p={prob:.2f})")
        return None

    return check


@lru_cache(maxsize=1)  # loaded on first use, once per worker process
def _load_language_identifier() -> "object":
    # py3langid ships its model inside the wheel: nothing is downloaded at run time.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_of(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of a text, for reports and tests."""
    lang, prob = _load_language_identifier().classify(text[:2000])
    return lang, float(prob)


def apply_rules(text: str, rules: list[Rule]) -> tuple[Optional[Reject], str]:
    """Run rules in order; a rewritten text feeds the rules after it."""
    stats = TextStats(text)
    for rule in rules:
        verdict = rule.check(stats)
        if isinstance(verdict, Reject):
            return verdict, stats.text
        if isinstance(verdict, str):
            stats = TextStats(verdict)
    return None, stats.text
