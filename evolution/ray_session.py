"""Ray for ``evolve run``: join a cluster when asked, otherwise start a local Ray of its own,
and leave nothing behind.

    with ray_session(config, cli_address) as started:   # started: a local Ray of ours
        check_capacity(config, started)
        ...                                                          # RayPool(...)

* **Joining**: ``--address``, else ``runtime.ray.address``, else ``$RAY_ADDRESS`` (what
  ``ray job submit`` sets for its job: the cluster's GCS address). The address is tried
  with a plain TCP connection first, so an address where nothing listens fails within
  seconds, in one line that names it (Ray itself retries for about a minute). A dashboard
  URL (``http://...:8265``, what ``ray job submit --address`` takes) is refused with a
  line saying which address to pass instead.
* **Local**: ``ray.init(address="local")``, never a cluster or a ``ray_current_cluster``
  file that an earlier ``ray start`` left on the machine. Token authentication is what
  Ray 2.60 does for a new local Ray anyway (``RAY_AUTH_MODE=token`` unless set); setting
  it explicitly only spares the terminal Ray's notice about it. A watchdog process
  (evolution/ray_watchdog.py) stops every process of that Ray once the driver is gone,
  even after a SIGKILL.
* Only warnings and errors of Ray's own loggers reach the terminal.

Every failure is a :class:`RayUnavailable` whose message is one line that says what to do.
"""
from __future__ import annotations

import _thread
import contextlib
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

from evolution.config import EvolutionConfig, RayConfig
from evolution.ray_watchdog import OWNER_ENV

CONNECT_TIMEOUT_S = 3.0
AUTH_MODE_ENV = "RAY_AUTH_MODE"


class RayUnavailable(RuntimeError):
    """Ray cannot be joined or started, or cannot place the islands; the message says what to do."""


def requested_address(cli_address: str | None, config_address: str | None) -> tuple[str | None, str]:
    """The cluster to join and where that came from, or (None, "") for a local Ray."""
    for value, source in ((cli_address, "--address"), (config_address, "runtime.ray.address"),
                          (os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS")):
        if value and value.strip():
            return value.strip(), source
    return None, ""


def check_reachable(address: str, source: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Raise RayUnavailable unless something accepts a TCP connection at ``address``."""
    if address.startswith(("http://", "https://")):
        raise RayUnavailable(
            f"{source} {address} is a dashboard URL (what `ray job submit --address` takes); `evolve run` joins a "
            "cluster at its GCS address HOST:PORT (the --port of `ray start --head`)"
        )
    if address == "auto":
        return  # Ray looks the address up itself and says so when there is none
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise RayUnavailable(f"{source} {address}: expected HOST:PORT, e.g. 127.0.0.1:6380")
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        raise RayUnavailable(
            f"no Ray cluster answers at {address} ({source}): {reason}; start one with "
            f"`ray start --head --port {port}`, or leave out {source} to run on a local Ray"
        ) from None


def _join_failure(address: str, source: str, error: Exception, logged: str = "") -> str:
    token_mode = os.environ.get(AUTH_MODE_ENV, "").lower() == "token"
    if "InvalidAuthToken" in logged or "Unauthenticated" in logged:
        if not token_mode:
            return (f"the Ray cluster at {address} ({source}) uses token authentication: export {AUTH_MODE_ENV}=token "
                    "(the token is read from $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)")
        return (f"the Ray cluster at {address} ({source}) refused this token: use the cluster's "
                "($RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, as on the head node)")
    return f"cannot join the Ray cluster at {address} ({source}): {_first_line(error)}"


@contextlib.contextmanager
def interrupt_on_signals(retry_s: float = 2.0) -> Iterator[None]:
    """SIGTERM and SIGHUP stop the run as Ctrl-C does (KeyboardInterrupt), so the island actors
    and the local Ray are shut down on the way out. Ray's core worker installs a handler of its
    own in ``ray.init`` that aborts the process: ray_session puts this one back after it.

    An exception raised by a signal handler can land where Python only reports it ("Exception
    ignored in ...": a finalizer, a callback of numba's compiler) and the run would go on; until
    the interrupt has reached this block, it is raised again every ``retry_s`` seconds."""
    state = {"signal": None, "delivered": False}

    def retry() -> None:
        while not state["delivered"]:
            time.sleep(retry_s)
            if not state["delivered"]:
                _thread.interrupt_main(state["signal"])

    def interrupt(signum, _frame):
        if state["signal"] is None:
            state["signal"] = signum
            threading.Thread(target=retry, name="evolve-interrupt", daemon=True).start()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except KeyboardInterrupt:
        state["delivered"] = True
        raise
    finally:
        state["delivered"] = True
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _start_watchdog(tag: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != OWNER_ENV}
    return subprocess.Popen([sys.executable, "-m", "evolution.ray_watchdog", tag], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, start_new_session=True, env=env)


@contextlib.contextmanager
def ray_session(config: EvolutionConfig, cli_address: str | None = None) -> Iterator[bool]:
    """Ray for one run; yields True when it started a local Ray of its own, False when it joined
    a cluster (or Ray was initialized already: then it is left as it is). Islands that a local
    Ray could never place fail before it starts (:class:`RayUnavailable`)."""
    rc, actors = config.runtime.ray, config.island_actors
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        yield False
        return
    address, source = requested_address(cli_address, rc.address)
    if address and address != "local":
        with _joined(address, source, rc):
            yield False
        return
    _check_local_capacity(actors, rc)
    if "ray" not in sys.modules:  # Ray reads its auth mode once, when it is imported
        os.environ.setdefault(AUTH_MODE_ENV, "token")
    import ray

    tag = uuid.uuid4().hex
    watchdog = _start_watchdog(tag)
    os.environ[OWNER_ENV] = tag  # inherited by the processes of the local Ray, not by ours after it
    try:
        try:
            ray.init(address="local", num_cpus=rc.num_cpus or os.cpu_count(), include_dashboard=False,
                     **_options(rc))
        except Exception as error:  # OSError: a RAY_TMPDIR too long for its sockets; Exception: a start-up timeout
            raise RayUnavailable(f"cannot start a local Ray: {_first_line(error)}") from None
        finally:
            del os.environ[OWNER_ENV]
        with interrupt_on_signals():
            yield True
    finally:
        try:
            if ray.is_initialized():
                ray.shutdown()
        finally:
            watchdog.stdin.close()  # the watchdog stops whatever outlived the shutdown
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(timeout=30)


@contextlib.contextmanager
def _stderr_held() -> Iterator[dict]:
    """Hold what is written to file descriptor 2 (Ray's C++ logs included) until the block ends;
    ``box["text"]`` then has it. Joining a cluster that refuses the connection makes Ray's core
    worker log one line a second for about 20 s; the caller turns that into one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    box: dict = {}
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield box
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            box["text"] = sink.read().decode(errors="replace")


@contextlib.contextmanager
def _joined(address: str, source: str, rc: RayConfig) -> Iterator[None]:
    check_reachable(address, source)
    import ray

    failure = None
    with _stderr_held() as held:
        try:
            ray.init(address=address, **_options(rc))
        except Exception as error:  # ConnectionError, RuntimeError, ValueError, and a bare Exception on time-outs
            failure = error
    if failure is not None:
        raise RayUnavailable(_join_failure(address, source, failure, held["text"])) from None
    sys.stderr.write(held["text"])  # nothing is lost when it worked
    try:
        with interrupt_on_signals():
            yield
    finally:
        ray.shutdown()  # disconnects; the cluster stays


def _options(rc: RayConfig) -> dict:
    return dict(namespace=rc.namespace, log_to_driver=True, logging_level=logging.WARNING)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _too_few_cpus(actors: int, rc: RayConfig, total: float) -> str:
    need = actors * rc.island_num_cpus
    share = math.floor(total / actors * 100) / 100
    return (f"islands: {actors} island actors of runtime.ray.island_num_cpus {rc.island_num_cpus:g} need {need:g} CPUs, "
            f"this local Ray has {total:g}; use fewer islands, runtime.ray.island_num_cpus: {share:g}, "
            f"runtime.ray.actors: {max(1, int(total // rc.island_num_cpus))} (islands share actors), "
            f"runtime.ray.num_cpus: {math.ceil(need)} (CPUs shared), or --local")


def _check_local_capacity(actors: int, rc: RayConfig) -> None:
    total = rc.num_cpus or os.cpu_count() or 1
    if actors * rc.island_num_cpus > total + 1e-9:
        raise RayUnavailable(_too_few_cpus(actors, rc, total))


def check_capacity(config: EvolutionConfig, started: bool) -> None:
    """Fail at once when the islands can never be placed on a Ray we started; on a cluster, say
    what the run waits for when the CPUs it needs are not free now."""
    import ray

    rc = config.runtime.ray
    n = config.island_actors
    need = n * rc.island_num_cpus
    total = ray.cluster_resources().get("CPU", 0.0)
    free = ray.available_resources().get("CPU", 0.0)
    if need <= free + 1e-9:
        return
    if started and need > total + 1e-9:
        raise RayUnavailable(_too_few_cpus(n, rc, total))
    print(f"evolve: waiting for {need:g} CPUs for {n} island actors: the cluster has {total:g}, {free:g} free now "
          "(nodes that join or jobs that finish make room; Ctrl-C stops)", file=sys.stderr, flush=True)
