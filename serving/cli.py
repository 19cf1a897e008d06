"""``evolve shadow``, ``evolve promote``, ``evolve rollback``, ``evolve status``.

    evolve shadow RUN_DIR [--all] [--speed BARS_PER_S]        # replay the run's holdout to its winners
    evolve shadow VERSION... (--run RUN_DIR | --data FILE | --exchange ID --symbol S --timeframe T)
    evolve promote VERSION [--reason TEXT]
    evolve rollback [--reason TEXT]
    evolve status [--json]

Common: ``--tracking-uri`` (default $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db),
``--model-name`` (default strategy-evolution), ``--redis-url`` (default $REDIS_URL; without
one the bus is in-process and traders are threads). Bad input is one line on stderr and
exit code 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
STATUS_COLUMNS = ("version", "strategy_id", "stage", "aliases", "bars", "total_return", "max_drawdown", "win_rate",
                  "trades", "drift", "at")


class UserError(Exception):
    """Input the user can fix; printed as one line."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--model-name", default=None, help="registered model (default: strategy-evolution)")
    parser.add_argument("--redis-url", help="Redis for the event bus (default: $REDIS_URL; none: in-process bus)")
    parser.add_argument("--bus-prefix", default=None, help="Redis key prefix of the bus streams (default: evolve:)")


SHADOW_EXAMPLES = """examples:
  evolve shadow runs/<run_id>                 # replay the run's holdout to its promoted strategies
  evolve shadow runs/<run_id> --all --speed 50
  evolve shadow runs/<run_id> --top 3         # the three best promoted strategies only
  evolve shadow 3 4 --run runs/<run_id>       # registered versions 3 and 4 on that run's holdout
  evolve shadow 3 --exchange binance --symbol BTC/USDT --timeframe 1m   # live bars
"""
PROMOTE_EXAMPLES = """examples:
  evolve promote 4                            # version 4 becomes the champion
  evolve promote 4 --reason "passed review" --tracking-uri http://127.0.0.1:5000
"""
ROLLBACK_EXAMPLES = """examples:
  evolve rollback                             # the previous champion is live again
  evolve rollback --reason "slippage too high"
"""
STATUS_EXAMPLES = """examples:
  evolve status                               # versions by stage with their latest metrics
  evolve status --json
"""

def register(subparsers: argparse._SubParsersAction) -> None:
    shadow = subparsers.add_parser(
        "shadow", help="paper-trade strategies in shadow on a bar feed; the gates promote what holds up",
        description="Start a shadow trader (Ray actor shadow-<strategy_id>, or a thread with --local) per strategy, "
        "feed it bars, judge it with the promotion gates and move the champion alias.",
        epilog=SHADOW_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    shadow.add_argument("targets", nargs="+", metavar="RUN_DIR|VERSION",
                        help="a finished `evolve run` directory (its promoted strategies) or registered versions")
    shadow.add_argument("--all", action="store_true", help="with RUN_DIR: the whole hall of fame, not only the promoted")
    shadow.add_argument("--top", type=int, metavar="N",
                        help="with RUN_DIR: only the first N of them in hall-of-fame order (default: all)")
    source = shadow.add_argument_group("bar source for versions")
    source.add_argument("--run", type=Path, help="replay this run's holdout")
    source.add_argument("--data", type=Path, help="replay a CSV/Parquet OHLCV file")
    source.add_argument("--warmup-bars", type=int, default=2000,
                        help="--data: leading bars published as warm-up (history, not traded); live: bars fetched first")
    source.add_argument("--exchange", help="poll this ccxt exchange live (with --symbol, --timeframe)")
    source.add_argument("--symbol")
    source.add_argument("--timeframe")
    source.add_argument("--base-url", help="REST base URL of the exchange (a proxy or local server)")
    source.add_argument("--poll-s", type=float, default=10.0, help="seconds between two live polls")
    shadow.add_argument("--speed", type=float, help="replay speed in bars per second (default: as fast as possible)")
    shadow.add_argument("--judge-every", type=int, default=500, help="bars between two judgements of a shadow")
    shadow.add_argument("--local", action="store_true", help="traders as threads of this process, not Ray actors")
    shadow.add_argument("--address", help="Ray address to join (default: $RAY_ADDRESS, else a local Ray)")
    shadow.add_argument("--state-dir", default="shadow_state", help="trader state files when no Redis is configured")
    shadow.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve the serving metrics (promotions, rollbacks, stage changes, shadow bars and "
                        "drift of in-process traders) on 127.0.0.1:PORT/metrics while it runs (configs/prometheus.yml "
                        "scrapes 9478; 0: a free port); Ray actors and Serve replicas export through Ray")
    _common(shadow)
    shadow.set_defaults(func=shadow_command)

    promote = subparsers.add_parser("promote", help="make a registered version the champion (live)",
                                    epilog=PROMOTE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    promote.add_argument("version")
    promote.add_argument("--reason", default="manual: evolve promote")
    _common(promote)
    promote.set_defaults(func=promote_command)

    rollback = subparsers.add_parser("rollback", help="put the previous champion back live",
                                     epilog=ROLLBACK_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    rollback.add_argument("--reason", default="manual: evolve rollback")
    _common(rollback)
    rollback.set_defaults(func=rollback_command)

    status = subparsers.add_parser("status", help="strategies by stage with their latest shadow or live metrics",
                                   epilog=STATUS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(status)
    status.set_defaults(func=status_command)


# ---------------------------------------------------------------------------- plumbing


def _registry(args):
    from serving.registry import DEFAULT_MODEL_NAME, ModelRegistry

    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    return ModelRegistry(args.model_name or DEFAULT_MODEL_NAME, uri)


def _bus_config(args):
    from serving.bus import BusConfig

    prefix = {"prefix": args.bus_prefix} if args.bus_prefix else {}
    return BusConfig(redis_url=args.redis_url or os.environ.get("REDIS_URL") or None, **prefix)


def _bus(args):
    from serving.bus import open_bus

    config = _bus_config(args)
    return open_bus(config) if config.redis_url else None


def _guard(command: str, func, args) -> int:
    from pydantic import ValidationError

    from serving.bus import BusUnavailable
    from serving.feed import FeedError
    from serving.registry import RegistryError

    try:
        return func(args) or 0
    except (UserError, RegistryError, FeedError, BusUnavailable, ValidationError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        print(f"evolve {command}: error: {first}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"evolve {command}: stopped", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------- promote, rollback


def promote_command(args) -> int:
    return _guard("promote", _promote, args)


def _promote(args) -> int:
    from serving.controller import promote_version

    registry = _registry(args)
    event = promote_version(registry, _bus(args), str(args.version), reason=args.reason)
    previous = f" (previous champion: version {event['previous']})" if event["previous"] else ""
    print(f"version {event['version']} ({event['strategy_id']}) is the champion{previous}")
    return 0


def rollback_command(args) -> int:
    return _guard("rollback", _rollback, args)


def _rollback(args) -> int:
    from serving.controller import rollback_champion

    event = rollback_champion(_registry(args), _bus(args), reason=args.reason)
    print(f"rolled back: version {event['version']} ({event['strategy_id']}) is the champion again; "
          f"version {event['previous']} retired")
    return 0


# ---------------------------------------------------------------------------- status


def status_rows(registry) -> list[dict]:
    from serving.registry import CANDIDATE, LATEST_METRICS_TAG, LIVE, RETIRED, SHADOW

    order = {LIVE: 0, SHADOW: 1, CANDIDATE: 2, RETIRED: 3}
    rows = []
    for info in registry.versions():
        latest = json.loads(info.tags.get(LATEST_METRICS_TAG) or "null") or {}
        row = {"version": info.version, "strategy_id": info.strategy_id, "stage": info.stage,
               "aliases": list(info.aliases), "metrics": latest}
        rows.append(row)
    return sorted(rows, key=lambda r: (order.get(r["stage"], 9), int(r["version"])))


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ",".join(value) or "-"
    return str(value)


def status_command(args) -> int:
    return _guard("status", _status, args)


def _status(args) -> int:
    registry = _registry(args)
    rows = status_rows(registry)
    if args.json:
        print(json.dumps({"model": registry.name, "strategies": rows}, indent=2, sort_keys=True))
        return 0
    if not rows:
        print(f"no registered versions of {registry.name} at {registry.tracking_uri}")
        return 0
    table = [[_cell(r.get(c, r["metrics"].get(c))) for c in STATUS_COLUMNS] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) for i, c in enumerate(STATUS_COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(STATUS_COLUMNS, widths)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    return 0


# ---------------------------------------------------------------------------- shadow


def shadow_command(args) -> int:
    return _guard("shadow", _shadow, args)


def _specs_and_feed(args, registry):
    """Trader specs and the feed for the targets (run directories and versions)."""
    from serving.bus import bar_stream, replay_stream
    from serving.feed import replay, run_holdout
    from serving.registry import RegistryError
    from serving.trader import ShadowSpec

    runs = [Path(t) for t in args.targets if Path(t).is_dir()]
    versions = [t for t in args.targets if not Path(t).is_dir()]
    for v in versions:
        if not v.isdigit():
            raise UserError(f"{v!r} is neither a run directory nor a model version number")
    if len(runs) > 1 or (runs and (args.run or args.data)):
        raise UserError("give one bar source: one RUN_DIR, or versions with --run, --data or --exchange")
    run_dir = runs[0] if runs else args.run
    specs: list[ShadowSpec] = []
    if run_dir is not None:
        holdout = run_holdout(run_dir)
        stream = holdout.stream
        if runs:
            genomes = holdout.genomes(promoted_only=not args.all)
            if not genomes:
                raise UserError(f"{run_dir}: the run promoted no strategy; pass --all for its hall of fame, or versions")
            if args.top is not None:
                genomes = genomes[:args.top]
            for genome in genomes:
                spec = ShadowSpec(genome, stream, fees=holdout.fees, slippage=holdout.slippage)
                found = _quiet(lambda spec=spec: registry.version_of(spec.strategy_id))
                specs.append(ShadowSpec(genome, stream, fees=holdout.fees, slippage=holdout.slippage,
                                        version=found.version if found else None))
        last = int(holdout.holdout.timestamp[-1])

        def feed(stop, bus):
            return replay(bus, stream, holdout.holdout, warmup=holdout.warmup, speed=args.speed, stop=stop)
    elif args.data is not None:
        from backtest.data import load

        if not args.data.exists():
            raise UserError(f"--data {args.data}: no such file")
        candles = load(args.data)
        warm = min(max(args.warmup_bars, 0), len(candles) - 1)
        stream = replay_stream(args.data.stem)
        last = int(candles.timestamp[-1])

        def feed(stop, bus):
            return replay(bus, stream, candles[warm:], warmup=candles[:warm], speed=args.speed, stop=stop)
    elif args.exchange:
        if not (args.symbol and args.timeframe):
            raise UserError("--exchange needs --symbol and --timeframe (e.g. --symbol BTC/USDT --timeframe 1m)")
        from backtest.data.fetch import Fetcher

        stream = bar_stream(args.exchange, args.symbol, args.timeframe)
        last = None

        def feed(stop, bus):
            from serving.feed import LivePoller

            with Fetcher() as fetcher:
                poller = LivePoller(bus, fetcher, args.exchange, args.symbol, args.timeframe, base_url=args.base_url,
                                    warmup_bars=args.warmup_bars)
                poller.run(stop, args.poll_s)
    else:
        raise UserError("versions need a bar source: --run RUN_DIR, --data FILE or --exchange ID --symbol S --timeframe T")
    for v in versions:
        try:
            info = registry.version(v)
        except RegistryError as error:
            raise UserError(str(error)) from None
        fees, slippage = registry.costs(v)
        specs.append(ShadowSpec(registry.genome(v), stream, fees=fees, slippage=slippage, version=info.version))
    return specs, feed, last


def _quiet(call):
    try:
        return call()
    except Exception:
        return None


SERVING_PROCESS_METRICS = ("serving_promotions_total", "serving_rollbacks_total", "serving_stage_changes_total",
                           "serving_errors_total")


def _start_metrics(port: int) -> None:
    """The serving metrics of this process on http://127.0.0.1:PORT/metrics (a one-line error if busy)."""
    import prometheus_client

    from backtest.telemetry import PrometheusRecorder, install
    from backtest.telemetry.catalogue import BY_NAME

    prometheus_client.disable_created_metrics()
    rec = PrometheusRecorder(eager=tuple(BY_NAME[name] for name in SERVING_PROCESS_METRICS))
    try:
        server, _thread = prometheus_client.start_http_server(port, addr="127.0.0.1", registry=rec.registry)
    except OSError as error:
        raise UserError(f"metrics port 127.0.0.1:{port}: {error.strerror or error}; pick another --metrics-port "
                        "(0: any free port)") from None
    install(rec)
    print(f"metrics: http://127.0.0.1:{server.server_port}/metrics", flush=True)


def _shadow(args) -> int:
    from serving.controller import ControllerConfig
    from serving.registry import LIVE, RETIRED, SHADOW
    from serving.service import ShadowService
    from serving.shadow import open_store
    from serving.trader import ShadowConfig

    if args.speed is not None and args.speed <= 0:
        raise UserError(f"--speed must be positive bars per second, got {args.speed}")
    if args.top is not None and args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    if args.metrics_port is not None:
        _start_metrics(args.metrics_port)
    registry = _registry(args)
    specs, feed, last = _specs_and_feed(args, registry)
    bus_config = _bus_config(args)
    backend = "local" if args.local or not bus_config.redis_url else "ray"
    shadow_config = ShadowConfig(state_dir=args.state_dir)
    controller_config = ControllerConfig(judge_every_bars=args.judge_every)
    retired = [spec for spec in specs if spec.version is not None and registry.version(spec.version).stage == RETIRED]
    for spec in retired:  # judged already (rejected, or replaced as champion): a rerun does not judge it again
        history = registry.version(spec.version).history
        why = f" ({history[-1].get('reason')})" if history and history[-1].get("reason") else ""
        print(f"shadow: version {spec.version} is retired{why}; not shadowed again "
              f"(`evolve promote {spec.version}` makes it the champion)", flush=True)
    specs = [spec for spec in specs if spec not in retired]
    if not specs:
        print("shadow: nothing to shadow: every version asked for is retired", flush=True)
        return 0
    for spec in specs:
        if spec.version is not None and registry.version(spec.version).stage not in (SHADOW, LIVE):
            registry.set_stage(spec.version, SHADOW, reason="evolve shadow")
    if backend == "ray":
        import ray

        if not ray.is_initialized():
            address = args.address or os.environ.get("RAY_ADDRESS")
            ray.init(address=address or "local", namespace="serving", **({} if address else {"num_cpus": 2}))
    service = ShadowService(registry, bus_config, shadow_config, controller_config, backend=backend)
    try:
        for spec in specs:
            service.add(spec)
        print(f"shadow: {len(specs)} trader(s) ({backend}) on {specs[0].stream}; bus: "
              f"{'Redis' if bus_config.redis_url else 'in-process'}", flush=True)
        statuses = service.run(lambda stop: feed(stop, service.bus), until_timestamp=last)
        decisions = service.judge_all() if last is not None else []
    finally:
        service.close()
    for s in statuses:
        print(f"{s['name']}  version {s['version'] or '-'}  bars {s['bars']}  equity {s['equity']:.6g}  "
              f"max_drawdown {s['max_drawdown']:.4g}  trades {s['trades']}  errors {s['errors']}")
    for d in decisions:
        print(f"version {d.version}: {d.reason}")
    run_dir = next((Path(t) for t in args.targets if Path(t).is_dir()), None)
    if run_dir is not None and last is not None:
        path = _write_shadow_equity(run_dir, specs, open_store(shadow_config, bus_config))
        print(f"shadow equity: {path} (`evolve report {run_dir}` draws it)")
    return 0


def _write_shadow_equity(run_dir: Path, specs, store) -> Path:
    """The traders' paper equity over the replayed bars, for the run's report
    (``evolution.report_data.SHADOW_EQUITY_FILE``: strategy_id, timestamp, equity)."""
    import pandas as pd

    from evolution.report_data import SHADOW_EQUITY_FILE
    from serving.state import RECORD_FIELDS

    at = {name: i for i, name in enumerate(RECORD_FIELDS)}
    frames = []
    for spec in specs:
        _, records = store.load(spec.strategy_id)
        traded = records[records[:, at["warmup"]] == 0]
        frames.append(pd.DataFrame({"strategy_id": spec.strategy_id, "timestamp": traded[:, at["timestamp"]].astype("int64"),
                                    "equity": traded[:, at["equity"]]}))
    path = run_dir / SHADOW_EQUITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
    tmp.replace(path)
    return path
