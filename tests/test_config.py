"""The shared configuration mechanism: layered sources, one-line errors naming key and value."""

from __future__ import annotations

import pytest
import yaml

from lmforge.config import ConfigError, load_config_file, parse_overrides, write_config
from lmforge.data.prepare import make_prepare_config


def test_overrides_nest_and_parse_yaml_values():
    assert parse_overrides(["dedup.threshold=0.9", "input.paths=[a, b]", "preset=web"]) == {
        "dedup": {"threshold": 0.9},
        "input": {"paths": ["a", "b"]},
        "preset": "web",
    }


@pytest.mark.parametrize("bad", ["novalue", "=3", "a..b=1"])
def test_malformed_override_is_an_error(bad):
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_overrides([bad])


def test_unknown_key_names_the_key_and_the_allowed_keys():
    with pytest.raises(ConfigError) as err:
        make_prepare_config(parse_overrides(["dedup.treshold=0.9"]))
    message = str(err.value)
    assert "unknown key 'dedup.treshold'" in message and "threshold" in message and "\n" not in message


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError) as err:
        make_prepare_config(parse_overrides(["workers=many"]))
    assert "'workers'" in str(err.value) and '"many"' in str(err.value)


def test_out_of_range_value_names_the_limit():
    with pytest.raises(ConfigError) as err:
        make_prepare_config(parse_overrides(["dedup.threshold=1.5"]))
    assert "'dedup.threshold'" in str(err.value) and "1.5" in str(err.value) and "less than or equal to 1" in str(err.value)


def test_cross_field_rules_are_checked():
    with pytest.raises(ConfigError, match="must be 1.0"):
        make_prepare_config(parse_overrides(["split.train=0.9"]))
    with pytest.raises(ConfigError, match="group_threshold"):
        make_prepare_config(parse_overrides(["split.group_threshold=0.9"]))
    with pytest.raises(ConfigError, match="either lsh_preset"):
        make_prepare_config(parse_overrides(["dedup.lsh_preset=fast", "dedup.bands=8"]))


def test_explicit_lsh_parameters_replace_the_default_preset():
    config = make_prepare_config(parse_overrides(["dedup.num_perm=64", "dedup.bands=8", "dedup.rows=8"]))
    assert (config.dedup.lsh_preset, config.dedup.num_perm, config.dedup.bands, config.dedup.rows) == (None, 64, 8, 8)


def test_layers_override_in_order_and_presets_fill_the_rest(tmp_path):
    path = tmp_path / "prep.yaml"
    path.write_text("preset: web\nworkers: 2\nfilters:\n  language:\n    languages: [fr]\n")
    config = make_prepare_config(load_config_file(path), parse_overrides(["workers=3"]))
    assert config.workers == 3
    assert config.filters.language.enabled and config.filters.language.languages == ["fr"]
    assert config.filters.gopher_quality.enabled and config.pii.enabled  # from the web preset


def test_default_preset_follows_the_label_field():
    assert make_prepare_config({"input": {"label_field": "y"}}).preset == "labelled"
    assert make_prepare_config({}).preset == "clean"
    assert make_prepare_config({"input": {"paths": ["corpus:reviews"]}}).input.label_field == "label"


def test_config_files_in_toml_and_bad_files(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('workers = 2\n[dedup]\nthreshold = 0.85\n')
    assert make_prepare_config(load_config_file(toml)).dedup.threshold == 0.85
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config_file(broken)
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(tmp_path / "missing.yaml")


def test_resolved_config_round_trips(tmp_path):
    config = make_prepare_config({"preset": "web"})
    write_config(config, tmp_path / "config.yaml")
    again = make_prepare_config(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == config
