"""The run's market and folds, resolved and validated before Ray starts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backtest.data import OHLCV, PlantedEdge, load, synthetic_market
from backtest.validation import Split, walk_forward_split
from evolution.config import ConfigError, EvolutionConfig


@dataclass(frozen=True)
class MarketSpec:
    market: OHLCV
    split: Split
    source: dict  # what the market is, for result.json
    fingerprint: str  # OHLCV.fingerprint() (first 16 characters): a resumed run must see the same bars


def load_market(config: EvolutionConfig, data_path: str | Path | None = None) -> OHLCV:
    """``--data`` wins over the config's market; raises DataValidationError naming the row."""
    if data_path is not None:
        path = Path(data_path)
        if not path.exists():
            raise ConfigError(f"--data {path}: no such file")
        return load(path)
    m = config.market
    if m.synthetic is not None:
        s = m.synthetic
        edge = PlantedEdge(**s.planted_edge.model_dump()) if s.planted_edge is not None else None
        return synthetic_market(s.n_bars, seed=s.seed, interval_ms=s.interval_ms, regimes=s.regimes, planted_edge=edge)
    if m.file is not None:
        if not Path(m.file).exists():
            raise ConfigError(f"market.file: {m.file}: no such file")
        return load(m.file)
    from backtest.data.sources import load_exchange_market

    return load_exchange_market(m.exchange)


def market_source(config: EvolutionConfig, data_path: str | Path | None) -> dict:
    if data_path is not None:
        return {"file": str(data_path)}
    return config.market.model_dump(mode="json", exclude_none=True)


def _fold_problem(config: EvolutionConfig, n_bars: int) -> tuple[str | None, Split | None]:
    """Why ``n_bars`` bars cannot carry the config's folds, buckets and holdout (None: they can)."""
    wf = config.walk_forward
    try:
        split = walk_forward_split(
            n_bars, n_folds=wf.folds, holdout_fraction=wf.holdout_fraction,
            scheme=wf.scheme, train_fraction=wf.train_fraction,
        )
    except ValueError as error:
        return f"walk_forward: {error}", None
    test = split.test_ranges()
    span = int(test[-1, 1] - test[0, 0])
    if span // wf.bucket_bars < 2 * config.gates.pbo_blocks:
        return (
            f"walk_forward.bucket_bars: {wf.bucket_bars} bars per bucket leave {span // wf.bucket_bars} "
            f"out-of-sample buckets over the folds' {span} bars, fewer than 2 x gates.pbo_blocks "
            f"({2 * config.gates.pbo_blocks}); use smaller buckets or more data"
        ), split
    holdout = split.holdout_end - split.holdout_start
    if holdout // wf.bucket_bars < 3:
        return (
            f"walk_forward.holdout_fraction: the holdout has {holdout} bars, fewer than 3 buckets of "
            f"{wf.bucket_bars}; use a larger holdout_fraction or smaller bucket_bars"
        ), split
    return None, split


def bars_needed(config: EvolutionConfig, start: int = 1) -> int:
    """The fewest bars that carry the config's folds, out-of-sample buckets and holdout."""
    low, high = start, max(2 * start, 64)
    while _fold_problem(config, high)[0] is not None:
        low, high = high, 2 * high
    while high - low > 1:  # every window grows with the bars, so feasibility is monotone
        middle = (low + high) // 2
        low, high = (low, middle) if _fold_problem(config, middle)[0] is None else (middle, high)
    return high


def resolve(config: EvolutionConfig, data_path: str | Path | None = None) -> MarketSpec:
    market = load_market(config, data_path)
    problem, split = _fold_problem(config, len(market))
    if problem is not None:
        needed = bars_needed(config, len(market))
        if needed > len(market):
            wf = config.walk_forward
            raise ConfigError(
                f"too little data: the market has {len(market)} bars, but {wf.folds} walk-forward folds, a "
                f"{wf.holdout_fraction:g} holdout and {2 * config.gates.pbo_blocks} out-of-sample buckets of "
                f"{wf.bucket_bars} bars (walk_forward.bucket_bars, gates.pbo_blocks) need at least {needed}; "
                "use more data, or lower those settings"
            )
        raise ConfigError(problem)
    return MarketSpec(market, split, market_source(config, data_path), market.fingerprint()[:16])
