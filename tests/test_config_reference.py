"""The committed configuration reference is what the config models generate."""

from pathlib import Path

from lmforge.config_reference import render


def test_committed_reference_is_up_to_date():
    committed = (Path(__file__).resolve().parents[1] / "docs" / "config-reference.md").read_text(encoding="utf-8")
    assert committed.strip() == render().strip(), "run: lmforge config reference > docs/config-reference.md"


def test_reference_lists_nested_keys_with_defaults():
    text = render()
    assert "| `dedup.threshold` | float | `0.8` |" in text
    assert "| `split.group_threshold` |" in text and "| `filters.gopher_quality.min_words` | int | `50` |" in text
