"""``evolve demo``: the whole path on embedded defaults, in one command.

    evolve demo [--config PATH] [--out DIR] [--local] [--no-progress] [--port PORT] [--no-serve]

1. the search of ``evolve run`` (configs/demo.yaml: a synthetic market with a planted edge,
   islands on a local Ray), its holdout gates, and its lineage into MLflow (the registered
   versions are in the store when the run returns: ``RunLineage.finish`` waits for the sender);
2. :func:`shadow_step`: ``evolve shadow RUN_DIR``, as fast as possible: the run's promoted
   strategies paper-trade its held-out bars (bus in-process, traders as threads, unless
   $REDIS_URL is set), the promotion gates judge them and move the ``champion`` alias;
3. :func:`serve_step`: ``evolve serve`` on 127.0.0.1 (port 8000 if free, else a free one) on the
   same registry, until Ctrl-C or SIGTERM.

The tracking URI is resolved once (``evolution/lineage/tracking.py``) and handed to the
shadow and the Serve steps, so all three use one store.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 8000
REQUEST_FILE = "predict_request.json"  # RUN_DIR/...: candles for the printed curl line
REQUEST_MIN_BARS = 500
SHADOW_TOP = 3  # promoted strategies the demo shadows: about 20 s each on the demo's 12,500 held-out bars

EXAMPLES = """examples:
  evolve demo                          # search, shadow, promotion, then Serve on 127.0.0.1:8000 (or a free port)
  evolve demo --local --out runs/demo  # islands in this process, the run in runs/demo
  evolve demo --no-serve               # stop after the shadow replay and the promotion
  evolve demo --port 8100 --config my-run.yaml
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="the whole path on embedded defaults: search, gates, shadow replay, promotion, live endpoint",
        description="Run the demo search (configs/demo.yaml: a synthetic market, local Ray) with its lineage in "
        "MLflow (default sqlite:///mlflow.db); replay the run's held-out bars to its promoted strategies in "
        "shadow (`evolve shadow RUN_DIR`), where the promotion gates move the champion alias; then serve the "
        "registry over HTTP (`evolve serve`) until Ctrl-C, printing a curl command to try.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--config", type=Path, help="another run config (default: configs/demo.yaml)")
    demo.add_argument("--out", type=Path, help="run directory (default: runs/<run_id>)")
    demo.add_argument("--local", action="store_true", help="run islands in-process, without Ray")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--port", type=int, help=f"HTTP port of the endpoint (default {DEFAULT_PORT} if free, "
                      "else a free one)")
    demo.add_argument("--no-serve", action="store_true", help="stop after the shadow replay and the promotion")
    demo.add_argument("--shadow-top", type=int, default=SHADOW_TOP, metavar="N",
                      help=f"shadow the run's N best promoted strategies (default {SHADOW_TOP}; each trades every "
                      "held-out bar with the backtest's own code)")
    demo.set_defaults(func=demo_command, data=None, seed=None, resume=None, address=None,
                      tracking_uri=None, no_tracking=False, metrics_port=None)


def _say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def _error(message: str) -> int:
    print(f"evolve demo: error: {message}", file=sys.stderr)
    return 2


def demo_command(args: argparse.Namespace) -> int:
    from evolution.run_cli import launch_run, prepare_run

    if args.port is not None and not 0 < args.port < 65536:
        return _error(f"--port {args.port} is not a TCP port (1-65535)")
    prepared = prepare_run(args)
    if isinstance(prepared, int):
        return prepared
    tracking = prepared.tracking
    if not tracking.enabled:
        return _error("the demo shadows and serves the run's registered strategies, so it needs the MLflow "
                      "lineage: drop `tracking.enabled: false` from the config")
    code = launch_run(prepared)
    if code != 0:
        return code
    try:
        step = shadow_step(prepared.run.run_dir, tracking, top=args.shadow_top)
        _say(step.message)
        if step.code != 0:
            return step.code
        from evolution.report_html import write_report

        _say(f"report with the shadow equity: {write_report(prepared.run.run_dir, market=prepared.run.spec.market)}")
        if args.no_serve:
            _say(f"--no-serve: done; serve the registry later with `evolve serve --tracking-uri {tracking.uri}`")
            return 0
        return serve_step(tracking, args.port, run_dir=prepared.run.run_dir)
    finally:
        import ray

        if ray.is_initialized():  # the Ray of the shadow step (a Redis bus: traders as actors), Serve's too
            ray.shutdown()


# ---------------------------------------------------------------------------- shadow and promotion


@dataclass(frozen=True)
class ShadowStep:
    """What the shadow replay did: its exit code (non-zero: interrupted), the champion after it
    (version or None), whether the gates promoted a strategy of this run, and one line to print."""

    code: int
    champion: str | None
    promoted: bool
    message: str


def shadow_step(run_dir: str | Path, tracking, top: int | None = SHADOW_TOP) -> ShadowStep:
    """Replay the run's holdout to its ``top`` best promoted strategies exactly as ``evolve shadow
    RUN_DIR --top N`` does (speed: as fast as possible; state files under RUN_DIR/shadow_state), on the store of
    ``tracking`` (``evolution.lineage.tracking.TrackingSettings``); the promotion gates judge
    each shadow and move the ``champion`` alias of ``tracking.registered_model``."""
    from evolution.cli import build_parser
    from evolution.ray_session import interrupt_on_signals
    from serving.cli import shadow_command
    from serving.registry import ModelRegistry

    run_dir = Path(run_dir)
    registry = ModelRegistry(tracking.registered_model, tracking.uri)
    before = _champion(registry)
    result = json.loads((run_dir / "result.json").read_text(encoding="utf-8"))
    if not result.get("promoted"):
        return ShadowStep(0, before, False, _nothing_promoted(before, "the run promoted no strategy (none "
                          f"passed the holdout gates), so none went to shadow; try `evolve shadow {run_dir} --all` "
                          "(its whole hall of fame) or `evolve promote VERSION`"))
    missing = [sid for sid in result["promoted"] if _quiet(lambda sid=sid: registry.version_of(sid)) is None]
    if missing:
        return ShadowStep(0, before, False, _nothing_promoted(before, f"{len(missing)} promoted "
                          f"strategies have no registered version in {tracking.uri} (see the lineage line above: "
                          f"`evolve sync {run_dir}` sends a spooled lineage), so none went to shadow"))
    argv = ["shadow", str(run_dir), "--tracking-uri", tracking.uri, "--model-name", tracking.registered_model,
            "--state-dir", str(run_dir / "shadow_state")] + ([] if top is None else ["--top", str(top)])
    args = build_parser().parse_args(argv)
    which = "its promoted strategies" if top is None else f"its {top} best promoted strategies"
    _say(f"the run's held-out bars to {which} in shadow, as fast as possible: {' '.join(['evolve'] + argv[:2])}"
         + ("" if top is None else f" --top {top}"))
    with interrupt_on_signals():  # SIGTERM stops the replay as Ctrl-C does
        code = shadow_command(args)
    if code == 130:
        return ShadowStep(128 + signal.SIGINT, before, False, "interrupted during the shadow replay")
    after = _champion(registry)
    if code != 0:
        return ShadowStep(0, after, False, _nothing_promoted(after, "the shadow replay failed (the error "
                          f"above); try `evolve shadow {run_dir}` again, or `evolve promote VERSION`"))
    winner = _quiet(lambda: registry.version(after)) if after else None
    if winner is not None and winner.strategy_id in set(result["promoted"]):
        how = "passed the promotion gates in shadow and is the champion" if after != before else \
            "is the champion already (promoted before)"
        return ShadowStep(0, after, True, f"version {after} (strategy {winner.strategy_id}) {how}")
    return ShadowStep(0, after, False, _nothing_promoted(after, "no shadow passed the promotion gates (their "
                      f"verdicts above); try `evolve promote VERSION` or `evolve shadow {run_dir} --all`"))


def _nothing_promoted(champion: str | None, what: str) -> str:
    then = f"the champion stays version {champion}" if champion else "the endpoint starts without a champion"
    return f"{what}; {then}"


def _champion(registry) -> str | None:
    found = _quiet(registry.champion)
    return found.version if found else None


def _quiet(call):
    try:
        return call()
    except Exception:
        return None


# ---------------------------------------------------------------------------- the live endpoint


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def serve_step(tracking, port: int | None = None, *, run_dir: str | Path | None = None) -> int:
    """``evolve serve`` on the store of ``tracking`` until Ctrl-C or SIGTERM (port: ``port``, else
    8000 if free, else a free one); with ``run_dir``, a request of the run's last held-out candles
    is written to RUN_DIR/predict_request.json and a curl line that sends it is printed."""
    from evolution.cli import build_parser
    from serving.serve_cli import port_free, run_serve

    host = "127.0.0.1"
    if port is None:
        port = DEFAULT_PORT if port_free(host, DEFAULT_PORT) else free_port(host)
    if run_dir is not None and (request := _write_request(Path(run_dir))) is not None:
        _say(f"ask the champion about the run's last {request[1]} held-out bars once Serve is up: "
             f"curl -s http://{host}:{port}/v1/predict -H 'content-type: application/json' -d @{request[0]}")
    args = build_parser().parse_args(["serve", "--host", host, "--port", str(port), "--tracking-uri", tracking.uri,
                                      "--model-name", tracking.registered_model])
    code = run_serve(args)  # joins a Ray that is running (the shadow step's), else starts and stops its own
    if code == 0:
        _say(f"Serve stopped; the registry stays in {tracking.uri} (`evolve status --tracking-uri {tracking.uri}`)")
    return code


def _write_request(run_dir: Path) -> tuple[Path, int] | None:
    """RUN_DIR/predict_request.json: the last held-out candles, enough for every hall-of-fame
    strategy's warm-up (twice it, at least 500); None if the run's bars cannot be rebuilt."""
    from backtest.strategy import warmup_bars
    from serving.feed import FeedError, run_holdout

    try:
        holdout = run_holdout(run_dir)
    except (FeedError, OSError, ValueError):
        return None
    warmups = [warmup_bars(g) for g in holdout.genomes(promoted_only=False)] or [0]
    bars = min(holdout.end, max(REQUEST_MIN_BARS, 2 * max(warmups)))
    rows = holdout.market[holdout.end - bars:holdout.end].to_rows()
    candles = [[int(r[0]), *(float(x) for x in r[1:])] for r in rows]
    path = run_dir / REQUEST_FILE
    path.write_text(json.dumps({"candles": candles}), encoding="utf-8")
    return path, bars
