"""One frozen config for an evolution run, loaded from YAML.

Every key of a config file maps onto a field here, one to one. Unknown keys are errors
that say "did you mean ...?", and every error names the field's full path::

    from evolution.config import load_config
    config = load_config("configs/demo.yaml")        # raises ConfigError

``config_id`` is a content hash of the search-defining part of the config (everything
except ``runtime`` and ``tracking``), so the same search has the same id wherever it runs.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from backtest.data.sources import ExchangeMarket
from backtest.families import DEFAULT_FAMILY, FAMILY_NAMES
from backtest.metrics import METRIC_NAMES
from backtest.tracking_names import DEFAULT_EXPERIMENT, DEFAULT_REGISTERED_MODEL
from evolution.lineage.tracking import check_scheme
from evolution.operators import CROSSOVERS, MUTATIONS

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"

#: metrics that are better when smaller; every other objective is maximized
MINIMIZED = frozenset({"max_drawdown", "turnover"})
OBJECTIVE_NAMES = tuple(n for n in METRIC_NAMES if n not in ("n_bars", "final_value", "skew", "kurtosis"))
DEFAULT_FAMILIES = {DEFAULT_FAMILY: 1.0}


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field and what to do."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlantedEdgeConfig(_Model):
    fast: int = Field(10, ge=1)
    slow: int = Field(40, ge=2)
    strength: float = Field(0.008, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _order(self) -> PlantedEdgeConfig:
        if self.fast >= self.slow:
            raise ValueError(f"fast ({self.fast}) must be smaller than slow ({self.slow})")
        return self


class SyntheticMarketConfig(_Model):
    """A seeded synthetic market from ``backtest.data.synthetic_market``."""

    n_bars: int = Field(20_000, ge=200, le=50_000_000)
    seed: int = Field(0, ge=0)
    interval_ms: int = Field(60_000, ge=1)
    regimes: bool = True
    planted_edge: PlantedEdgeConfig | None = None


class MarketConfig(_Model):
    """Exactly one of ``synthetic``, ``file`` (CSV/Parquet OHLCV) or ``exchange`` (ccxt, cached)."""

    synthetic: SyntheticMarketConfig | None = None
    file: Path | None = None
    exchange: ExchangeMarket | None = None

    @model_validator(mode="after")
    def _one(self) -> MarketConfig:
        given = [n for n in ("synthetic", "file", "exchange") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one market source: synthetic, file or exchange"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self


class MigrationConfig(_Model):
    interval: int = Field(5, ge=1, description="migrate every `interval` generations")
    size: int = Field(2, ge=0, description="individuals each island sends to the next one on the ring")


class OperatorConfig(_Model):
    crossover_probability: float = Field(0.5, ge=0.0, le=1.0, description="share of offspring made by crossover")
    mutation_probability: float = Field(0.5, ge=0.0, le=1.0, description="share made by mutation (rest: copies)")
    immigrant_probability: float = Field(
        0.0, ge=0.0, le=1.0,
        description="share of offspring that are new random genomes (random immigrants, Grefenstette 1992): "
                    "the search keeps sampling the whole space after the population has converged")
    crossover_weights: dict[Literal[CROSSOVERS], float] = Field(default_factory=lambda: dict.fromkeys(CROSSOVERS, 1.0))
    mutation_weights: dict[Literal[MUTATIONS], float] = Field(
        default_factory=lambda: {
            "mutate_gaussian": 3.0,
            "mutate_categorical": 2.0,
            "mutate_add_condition": 1.0,
            "mutate_drop_condition": 1.0,
        }
    )
    gaussian_sigma: float = Field(0.1, gt=0.0, le=1.0, description="sigma as a fraction of each gene's range")
    gene_probability: float = Field(0.3, gt=0.0, le=1.0, description="chance each numeric gene is perturbed")
    max_conditions: int = Field(3, ge=1, le=3, description="conditions per block in random genomes")

    @model_validator(mode="after")
    def _weights(self) -> OperatorConfig:
        if self.crossover_probability + self.mutation_probability + self.immigrant_probability > 1.0 + 1e-12:
            raise ValueError(
                "crossover_probability + mutation_probability + immigrant_probability must be <= 1 (each "
                "offspring comes from one crossover, one mutation or one random draw, as DEAP's varOr); got "
                f"{self.crossover_probability} + {self.mutation_probability} + {self.immigrant_probability}"
            )
        for name in ("crossover_weights", "mutation_weights"):
            weights = getattr(self, name)
            if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise ValueError(f"{name}: weights must be >= 0 with a positive sum, got {weights}")
        return self


class SelectionConfig(_Model):
    """Two or more objectives: NSGA-II. One objective: tournament selection."""

    objectives: tuple[str, ...] = ("sharpe", "max_drawdown")
    tournament_size: int = Field(3, ge=2)
    min_trades: int = Field(
        1, ge=0, description="walk-forward trades per fold below which a strategy gets the worst fitness"
    )

    @model_validator(mode="after")
    def _objectives(self) -> SelectionConfig:
        if not 1 <= len(self.objectives) <= 3:
            raise ValueError(f"objectives: give 1 to 3 metric names, got {list(self.objectives)}")
        for name in self.objectives:
            if name not in OBJECTIVE_NAMES:
                hint = difflib.get_close_matches(name, OBJECTIVE_NAMES, n=1)
                raise ValueError(
                    f"objectives: unknown metric {name!r}"
                    + (f"; did you mean {hint[0]!r}?" if hint else f"; choose from {list(OBJECTIVE_NAMES)}")
                )
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives: names repeat in {list(self.objectives)}")
        return self


class WalkForwardConfig(_Model):
    folds: int = Field(4, ge=1, le=50)
    holdout_fraction: float = Field(0.2, gt=0.0, lt=0.9)
    scheme: Literal["rolling", "anchored"] = "rolling"
    train_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    bucket_bars: int = Field(
        20, ge=1, description="bars per out-of-sample return bucket (the series DSR and PBO use)"
    )


class CostConfig(_Model):
    fees: float = Field(0.0, ge=0.0, lt=0.1)
    slippage: float = Field(0.0, ge=0.0, lt=0.1)
    init_cash: float = Field(1.0, gt=0.0)


#: hall-of-fame orders (scores in evolution/ranking.py)
RANKINGS = ("fitness", "sharpe_lower_bound", "pooled_sharpe", "min_fold_sharpe")


class GateConfig(_Model):
    """The judging after the search (evolution/gates.py): how the hall of fame is ranked and
    which gates a member must pass to be promoted. A threshold set to null is not applied."""

    rank_by: Literal[RANKINGS] = Field(
        "fitness",
        description="hall-of-fame order (evolution/ranking.py): 'fitness' = the GA's objectives in order (mean "
        "walk-forward Sharpe first); the others as measured by benchmarks/bench_discovery.py",
    )
    min_dsr: float = Field(0.95, ge=0.0, le=1.0, description="deflated Sharpe ratio of the walk-forward "
                           "returns against the run's effective number of trials")
    min_holdout_dsr: float | None = Field(0.95, ge=0.0, le=1.0, description="deflated Sharpe ratio of the "
                                          "holdout returns against the hall of fame's effective number")
    max_pbo: float | None = Field(0.5, ge=0.0, le=1.0, description="probability of backtest overfitting")
    min_trades: int | None = Field(10, ge=0, description="holdout trades, absolute")
    min_trades_per_year: float | None = Field(
        4.0, description="holdout trades per year of holdout (years from the bar interval)")
    max_drawdown: float | None = Field(None, description="holdout maximum drawdown, absolute (e.g. 0.3)")
    max_drawdown_vs_market: float | None = Field(
        1.0, description="holdout maximum drawdown as a multiple of buy-and-hold's over the same bars")
    min_calmar: float | None = Field(None, description="holdout CAGR / max drawdown")
    pbo_candidates: int = Field(200, ge=2, description="clusters whose best trial joins the PBO matrix (the best "
                                "cluster and a seeded sample of the others when there are more)")
    cluster_correlation: float = Field(
        0.7, gt=0.0, le=1.0,
        description="trials whose walk-forward returns correlate at least this much with a better trial "
        "belong to its cluster (PBO candidates, cluster Sharpe variance)",
    )
    sharpe_variance: Literal["null", "clusters", "initial", "all"] = Field(
        "null",
        description="DSR's variance of trial Sharpe ratios: 'null' = the sampling variance of a zero-skill "
        "Sharpe ratio (1 / buckets); 'clusters' = across the clusters' Sharpe ratios; 'initial' = over the "
        "random initial population; 'all' = over every trial (measured ones floored at 'null')",
    )
    pbo_blocks: int = Field(8, ge=2, le=16)

    @field_validator("max_drawdown", "max_drawdown_vs_market", "min_trades_per_year", "min_calmar")
    @classmethod
    def _threshold(cls, value: float | None, info: ValidationInfo) -> float | None:
        hints = {
            "max_drawdown": "a fraction of the peak in (0, 1], e.g. 0.3 for at most a 30% drawdown",
            "max_drawdown_vs_market": "a multiple > 0 of buy-and-hold's drawdown over the holdout, e.g. 1.0",
            "min_trades_per_year": "a number of trades per year > 0, e.g. 4",
            "min_calmar": "a CAGR / max drawdown ratio > 0, e.g. 0.5",
        }
        if value is None:
            return value
        if not value > 0:
            raise ValueError(f"must be {hints[info.field_name]}, or null to turn the gate off")
        if info.field_name == "max_drawdown" and value > 1:
            raise ValueError(f"is a fraction of the peak (0.3 = 30%); did you mean {value / 100:g}?")
        return value

    @model_validator(mode="after")
    def _cross(self) -> GateConfig:
        if self.pbo_blocks % 2:
            raise ValueError(f"pbo_blocks must be even, got {self.pbo_blocks}; use {self.pbo_blocks + 1}")
        if self.max_drawdown is None and self.max_drawdown_vs_market is None and self.min_calmar is None:
            raise ValueError(
                "no drawdown gate: set max_drawdown_vs_market (e.g. 1.0), max_drawdown (e.g. 0.3) or min_calmar"
            )
        return self


class RayConfig(_Model):
    address: str | None = Field(None, description="None: $RAY_ADDRESS or a local Ray; 'auto': a running cluster")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (ignored on a cluster)")
    island_num_cpus: float = Field(1.0, gt=0.0, description="CPUs each island actor reserves")
    actors: int | None = Field(
        None, ge=1,
        description="island actors (None: one per island). Fewer actors than islands host several islands "
                    "each, stepped one after another in one process (island i on actor i mod actors): the "
                    "number of islands is a choice of the search, the number of actors one of the hardware. "
                    "Results do not depend on it.")
    max_restarts: int = Field(3, ge=-1)
    namespace: str = "evolution"
    spread: bool = Field(True, description="spread islands over nodes")
    lookahead: int = Field(
        2, ge=0, le=64,
        description="generations an island actor may run ahead of the driver: islands go on evolving while "
                    "the driver writes the trial log and checkpoints, and a slow generation on one island "
                    "is made up over the next ones instead of holding the other back (migration still "
                    "synchronises). Results do not depend on it.")


class RuntimeConfig(_Model):
    """How and where the run executes; not part of config_id (does not change results)."""

    backend: Literal["ray", "local"] = "ray"
    checkpoint_dir: Path | None = Field(None, description="default: <run dir>/checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    progress: bool = True
    metrics_port: int | None = Field(
        None, ge=0, le=65535,
        description="serve the driver's Prometheus metrics on this port (0: any free port); None: no endpoint")
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoint binds to")
    ray: RayConfig = Field(default_factory=RayConfig)


class TrackingConfig(_Model):
    """MLflow lineage of the run (evolution/lineage/tracking.py resolves it); not part of config_id.

    Overrides, first found: ``--tracking-uri`` / ``--no-tracking``, then MLflow's own
    ``$MLFLOW_TRACKING_URI`` and ``$MLFLOW_EXPERIMENT_NAME``, then these fields.
    """

    enabled: bool = Field(True, description="log the run's lineage to MLflow")
    uri: str | None = Field(
        None, description="MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                          "(a relative SQLite path is relative to the project folder)")
    experiment: str = Field(DEFAULT_EXPERIMENT, min_length=1, max_length=500)
    registered_model: str = Field(DEFAULT_REGISTERED_MODEL, min_length=1, max_length=500,
                                  description="registered model of the promoted strategies")
    spool: bool = Field(
        True, description="when MLflow cannot be reached, keep the lineage in RUN_DIR/mlflow_spool for "
                          "`evolve sync` (false: drop it, with a message)")

    @field_validator("uri")
    @classmethod
    def _uri(cls, uri: str | None) -> str | None:
        return check_scheme(uri) if uri is not None else None


class EvolutionConfig(_Model):
    seed: int = Field(0, ge=0)
    market: MarketConfig = Field(default_factory=lambda: MarketConfig(synthetic=SyntheticMarketConfig()))
    islands: int = Field(2, ge=1, le=256)
    population: int = Field(32, ge=4, le=100_000, description="individuals per island")
    generations: int = Field(10, ge=1, le=100_000)
    migration: MigrationConfig = Field(default_factory=MigrationConfig)
    operators: OperatorConfig = Field(default_factory=OperatorConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    walk_forward: WalkForwardConfig = Field(default_factory=WalkForwardConfig)
    costs: CostConfig = Field(default_factory=CostConfig)
    gates: GateConfig = Field(default_factory=GateConfig)
    families: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_FAMILIES),
        description="share of each genome family (backtest/families/) in the random initial population, e.g. "
                    "{rules: 0.8, asmbtr: 0.2}; offspring keep their parents' family (crossover mates within one)",
    )
    hall_of_fame: int = Field(10, ge=1, le=1000, description="best distinct trials kept and judged by the gates")
    evaluator_memory_mb: int = Field(256, ge=1)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("families")
    @classmethod
    def _families(cls, families: dict[str, float]) -> dict[str, float]:
        for name, share in families.items():
            if name not in FAMILY_NAMES:
                hint = difflib.get_close_matches(name, FAMILY_NAMES, n=1)
                raise ValueError(
                    f"unknown genome family {name!r}"
                    + (f"; did you mean {hint[0]!r}?" if hint else f"; choose from {list(FAMILY_NAMES)}")
                )
            if not share >= 0.0 or share == float("inf"):
                raise ValueError(f"the share of {name!r} must be a finite number >= 0, got {share}")
        if not families or sum(families.values()) <= 0:
            raise ValueError(f"give at least one family with a positive share, e.g. {{rules: 0.8, asmbtr: 0.2}}; got {families}")
        return families

    @model_validator(mode="after")
    def _cross(self) -> EvolutionConfig:
        if self.migration.size >= self.population:
            raise ValueError(
                f"migration.size ({self.migration.size}) must be smaller than population ({self.population})"
            )
        actors = self.runtime.ray.actors
        if actors is not None and actors > self.islands:
            raise ValueError(
                f"runtime.ray.actors ({actors}) is more than islands ({self.islands}): an actor hosts at least one "
                f"island; set runtime.ray.actors to at most {self.islands}, or leave it out for one actor per island"
            )
        return self

    @property
    def island_actors(self) -> int:
        """How many island actors a Ray run starts (runtime.ray.actors, or one per island)."""
        return self.runtime.ray.actors or self.islands

    # ------------------------------------------------------------------ identity

    def search_dict(self) -> dict:
        """The part of the config that determines the result (everything but runtime and tracking).
        The default ``families`` (rules only) is left out, so a config that does not name families
        keeps the config_id (and run ids) it had before they existed."""
        exclude = {"runtime", "tracking"} | ({"families"} if self.families == DEFAULT_FAMILIES else set())
        return self.model_dump(mode="json", exclude=exclude)

    @property
    def config_id(self) -> str:
        text = json.dumps(self.search_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def multi_objective(self) -> bool:
        return len(self.selection.objectives) > 1

    def with_overrides(self, **updates: Any) -> EvolutionConfig:
        """A validated copy with top-level (or dotted, e.g. 'runtime.backend') fields replaced."""
        data = self.model_dump(mode="python")
        for key, value in updates.items():
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                node = node[part]
            node[parts[-1]] = value
        return parse_config(data)


# ---------------------------------------------------------------------- loading


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model reached by following ``loc`` (best effort)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _format(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"])
        path = ".".join(str(p) for p in loc) or "config"
        if item["type"] == "extra_forbidden":
            key = str(loc[-1])
            allowed = _fields_at(EvolutionConfig, loc[:-1])
            hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
            where = ".".join(str(p) for p in loc[:-1]) or "the top level"
            msg = f"{path}: unknown key {key!r} in {where}"
            msg += f"; did you mean {hint[0]!r}?" if hint else f"; allowed keys: {', '.join(allowed)}"
            lines.append(msg)
        else:
            msg = item["msg"].removeprefix("Value error, ")
            value = item.get("input")
            shown = "" if isinstance(value, (dict, list)) or value is None else f" (got {value!r})"
            lines.append(f"{path}: {msg}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def parse_config(data: Any) -> EvolutionConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid config: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return EvolutionConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format(error)) from None


def _unique_keys_loader():
    """PyYAML's SafeLoader, refusing a key given twice in one mapping: plain YAML keeps the
    last one silently, so a second ``ray:`` under ``runtime`` would drop the first's settings."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            if isinstance(node, yaml.MappingNode):
                first: dict = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key = self.construct_object(key_node, deep=True)
                    try:
                        earlier = first.setdefault(key, key_node)
                    except TypeError:  # an unhashable key: SafeLoader says so itself
                        continue
                    if earlier is not key_node:
                        raise yaml.constructor.ConstructorError(
                            "while constructing a mapping", node.start_mark,
                            f"the key {key!r} is given twice (first on line {earlier.start_mark.line + 1}); "
                            "keep one and merge their settings", key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_config(path: str | Path | None = None) -> EvolutionConfig:
    """Load and validate a YAML config (default: configs/demo.yaml). Raises ConfigError."""
    import yaml

    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_unique_keys_loader())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    try:
        return parse_config(data)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
