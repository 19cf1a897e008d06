"""Small configs for the evolution tests (fast on 2 CPUs)."""
from __future__ import annotations

from evolution.config import EvolutionConfig, parse_config


def small_config(**overrides) -> EvolutionConfig:
    return parse_config(small_config_data(**overrides))


def small_config_data(**overrides) -> dict:
    """The small config as plain data (dotted keys override), e.g. to write a YAML file for `evolve run`."""
    data = {
        "seed": 3,
        "market": {"synthetic": {"n_bars": 8000, "seed": 11, "regimes": False,
                                 "planted_edge": {"fast": 10, "slow": 40, "strength": 0.1}}},
        "islands": 2,
        "population": 12,
        "generations": 5,
        "migration": {"interval": 2, "size": 2},
        "operators": {"max_conditions": 1},
        "walk_forward": {"folds": 3, "holdout_fraction": 0.25, "train_fraction": 0.2, "bucket_bars": 20},
        "hall_of_fame": 5,
        "runtime": {"backend": "local", "progress": False, "ray": {"island_num_cpus": 0.5}},
    }
    for key, value in overrides.items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return data
