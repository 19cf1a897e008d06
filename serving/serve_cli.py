"""`evolve serve`: the Serve app of ``serving/app.py`` on a local Ray (or a cluster), in the foreground.

    evolve serve [--host 127.0.0.1] [--port 8000] [--tracking-uri URI] [--model-name NAME]
                 [--alias-poll-s 0.5] [--min-replicas 2] [--max-replicas 4] [--address RAY_ADDRESS]

It serves the registry's champion (alias ``champion``) and any registered version, prints a
``curl`` line to try, and stops on Ctrl-C (or SIGTERM), taking Serve and a Ray it started down
with it. The declarative twin is ``serve run serving/serve_config.yaml``.
"""
from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading

EXIT_USER_ERROR = 2
APP_NAME = "evolve"


EXAMPLES = """examples:
  evolve serve                                 # the champion of sqlite:///mlflow.db on 127.0.0.1:8000
  evolve serve --port 8080 --tracking-uri http://127.0.0.1:5000
  evolve serve --address 127.0.0.1:6380        # on a running `ray start --head --port 6380` cluster
"""

def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="serve the registry's strategies over HTTP (Ray Serve): POST /v1/predict, GET /v1/strategies",
        description="Start the Ray Serve app of serving/app.py: the registry's champion answers POST /v1/predict, "
        "any version can be asked by model_version; GET /v1/strategies, GET /healthz, OpenAPI at /docs. "
        "Stage changes over HTTP need EVOLVE_SERVE_TOKEN in the environment.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    serve.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default $MLFLOW_TRACKING_URI, "
                       "else sqlite:///mlflow.db)")
    serve.add_argument("--model-name", help="registered model name (default strategy-evolution)")
    serve.add_argument("--alias-poll-s", type=float, help="seconds between reads of the champion alias (default 0.5)")
    serve.add_argument("--min-replicas", type=int, default=None, help="autoscaling lower bound (default 2)")
    serve.add_argument("--max-replicas", type=int, default=None, help="autoscaling upper bound (default 4)")
    serve.add_argument("--address", help="a running Ray cluster (e.g. 127.0.0.1:6380); default: start a local Ray")
    serve.set_defaults(func=run_serve)


def _error(message: str) -> int:
    print(f"evolve serve: error: {message}", file=sys.stderr)
    return EXIT_USER_ERROR


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def run_serve(args: argparse.Namespace) -> int:
    from serving.app_config import TOKEN_ENV, load_config

    if not 0 < args.port < 65536:
        return _error(f"--port {args.port} is not a TCP port (1-65535)")
    overrides = {"tracking_uri": args.tracking_uri, "model_name": args.model_name, "alias_poll_s": args.alias_poll_s}
    try:
        config = load_config({k: v for k, v in overrides.items() if v is not None})
    except ValueError as error:
        return _error(str(error))
    autoscaling = _autoscaling(args.min_replicas, args.max_replicas)
    if isinstance(autoscaling, str):
        return _error(autoscaling)
    if args.address is None and not port_free(args.host, args.port):
        return _error(f"{args.host}:{args.port} is in use; pass another --port")

    import os

    import ray
    from ray import serve

    from serving.app import application

    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=args.address or "local", namespace="serve", log_to_driver=False)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        serve.run(application(config, autoscaling_config=autoscaling), name=APP_NAME, route_prefix="/", blocking=False)
        base = f"http://{args.host}:{args.port}"
        champion = _champion(config)
        example = {"candles": [[1704067200000, 100.0, 101.0, 99.5, 100.5, 12.0]]}
        print(f"Serving {config.model_name!r} from {config.tracking_uri} on {base} (champion: {champion})")
        print(f"  try:  curl -s {base}/v1/predict -H 'content-type: application/json' -d '{json.dumps(example)}'")
        print("        (send at least the strategy's warm-up in candles, oldest first; a 422 says how many)")
        print(f"  list: curl -s {base}/v1/strategies     docs: {base}/docs     health: {base}/healthz")
        token = "enabled" if os.environ.get(TOKEN_ENV) else f"disabled (set {TOKEN_ENV} to enable)"
        print(f"  stage changes over HTTP: {token}.  Stop with Ctrl-C.", flush=True)
        stop.wait()
    finally:
        serve.shutdown()
        if started_ray:
            ray.shutdown()
    return 0


def _autoscaling(low: int | None, high: int | None) -> dict | str | None:
    if low is None and high is None:
        return None  # the deployment's own bounds (serving/app.py)
    from serving.app import AUTOSCALING

    bounds = dict(AUTOSCALING)
    low = low if low is not None else int(bounds.get("min_replicas", 1))
    high = high if high is not None else max(low, int(bounds.get("max_replicas", low)))
    if low < 1 or high < low:
        return f"replica bounds {low}..{high}: need 1 <= --min-replicas <= --max-replicas"
    bounds.update(min_replicas=low, initial_replicas=low, max_replicas=high)
    return bounds


def _champion(config) -> str:
    from serving.registry import ModelRegistry

    try:
        found = ModelRegistry(config.model_name, config.tracking_uri).champion()
    except Exception as error:
        return f"unknown, the registry did not answer: {str(error).splitlines()[0][:120]}"
    return f"version {found.version}, strategy {found.strategy_id}" if found else "none yet (promote a version)"
