"""The run config: one frozen model, errors that name the field, bad input stops before Ray."""
from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from evolution.cli import main
from evolution.config import DEFAULT_CONFIG, ConfigError, EvolutionConfig, load_config, parse_config


def test_demo_config_is_the_default_and_valid():
    config = load_config()
    assert DEFAULT_CONFIG.name == "demo.yaml"
    assert config == load_config(DEFAULT_CONFIG)
    assert config.selection.objectives == ("sharpe",) and config.islands >= 2  # bench_discovery's choice
    assert len(config.config_id) == 16


def test_config_is_frozen():
    config = load_config()
    with pytest.raises(ValidationError):
        config.seed = 3  # type: ignore[misc]


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"populaton": 10}))
    with pytest.raises(ConfigError, match=r"populaton.*did you mean 'population'"):
        load_config(path)


def test_unknown_nested_key_names_its_path():
    with pytest.raises(ConfigError, match=r"gates\.min_dsrr: unknown key .*did you mean 'min_dsr'"):
        parse_config({"gates": {"min_dsrr": 0.9}})


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"population": 2}, "population"),
        ({"migration": {"size": 40}, "population": 10}, "migration.size"),
        ({"selection": {"objectives": ["sharpee"]}}, "did you mean 'sharpe'"),
        ({"operators": {"crossover_probability": 0.8, "mutation_probability": 0.5}}, "<= 1"),
        ({"gates": {"pbo_blocks": 5}}, "even"),
        ({"market": {}}, "exactly one market source"),
        ({"market": {"synthetic": {"planted_edge": {"fast": 50, "slow": 40}}}}, "fast"),
        ({"islands": 2, "runtime": {"ray": {"actors": 3}}}, "runtime.ray.actors (3) is more than islands (2)"),
        ({"runtime": {"ray": {"actors": 0}}}, "runtime.ray.actors"),
    ],
)
def test_bad_values_name_the_field(data, needle):
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert needle in str(info.value)


def test_config_id_ignores_runtime_but_not_the_search():
    base = parse_config({})
    assert base.config_id == base.with_overrides(**{"runtime.backend": "local"}).config_id
    assert base.config_id != base.with_overrides(seed=99).config_id


def test_single_objective_means_tournament():
    config = parse_config({"selection": {"objectives": ["sharpe"]}})
    assert not config.multi_objective


def _ray_started() -> bool:
    import ray

    return ray.is_initialized()


def test_bad_config_stops_before_ray(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("islands: 2\ngenerashuns: 3\n")
    assert main(["run", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "generashuns" in err and "did you mean 'generations'" in err
    assert "Traceback" not in err
    assert not _ray_started()
    assert not (tmp_path / "run").exists()


def test_bad_data_names_the_row_before_ray(tmp_path, capsys):
    rows = ["timestamp,open,high,low,close,volume"]
    for i in range(300):
        price = 100 + i * 0.01
        rows.append(f"{1_700_000_000_000 + i * 60_000},{price},{price + 1},{price - 1},{price},10")
    rows[120] = rows[120].replace(",10", ",-5")  # negative volume on data row 119
    data = tmp_path / "bad.csv"
    data.write_text("\n".join(rows) + "\n")
    assert main(["run", "--data", str(data), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "row" in err and "evolve run: error" in err
    assert not _ray_started()


def test_too_little_data_for_the_folds_is_a_config_error(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"market": {"synthetic": {"n_bars": 300}}, "walk_forward": {"folds": 10}}))
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "walk_forward" in capsys.readouterr().err
    assert not _ray_started()


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_model_round_trips_through_json():
    config = load_config()
    assert EvolutionConfig.model_validate(config.model_dump(mode="json")) == config


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path):
    """Plain YAML keeps the last of two equal keys: a second ``ray:`` would drop the first's
    settings without a word. The loader names the key and both lines; YAML merge keys still work."""
    path = tmp_path / "twice.yaml"
    path.write_text("islands: 2\nruntime:\n  ray:\n    actors: 1\n  progress: false\n  ray:\n    lookahead: 1\n")
    with pytest.raises(ConfigError, match=r"the key 'ray' is given twice \(first on line 3\)") as caught:
        load_config(path)
    assert "line 6" in str(caught.value) and str(path) in str(caught.value)
    merged = tmp_path / "merged.yaml"
    merged.write_text("<<: {islands: 3, generations: 9}\ngenerations: 4\n")  # a key over a merged one: allowed
    config = load_config(merged)
    assert (config.islands, config.generations) == (3, 4)
