"""Sending lineage operations to MLflow: in order, on background threads, or from a child process.

:class:`Sender` applies operations (:mod:`evolution.lineage_ops`) one after another, either
where it is called or on a background thread, and spools every operation from the first
failure on to ``RUN_DIR/mlflow_spool/`` (``evolve sync`` sends them later).

:class:`ProcessSender` runs a :class:`Sender` in a child process (``python -m
evolution.lineage_ship``) and hands it the operations as JSON lines. That is how the lineage
logger sends by default: the HTTP client, the JSON and the model files then never take the
driver's interpreter lock from the search or the judging, and the driver does not import
MLflow at all (nor does the child, for an HTTP server with the model template cached: see
:mod:`evolution.lineage_rest`). The child drains what it was given before it exits, also when the driver is
gone; when the child dies instead, the driver spools every operation of the session (they
are idempotent), so nothing is lost either way. The child runs at a lower priority (``nice``
10): on a busy machine the search and the judging get the cores first.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from evolution.lineage_ops import OpApplier, Spool, SyncState, fail_fast
from evolution.lineage_rest import tracking_client

log = logging.getLogger(__name__)

NICENESS = 10  # the sender process's scheduling priority below the driver and the island actors


class Sender:
    """Applies operations in order (here, or on a background thread); spools them once anything fails.

    ``submit_parallel`` hands over independent groups of operations (one hall-of-fame
    strategy each): they go out on up to ``workers`` threads, each group in its own order,
    and everything queued after them waits until all are through. Once any operation fails,
    that operation and every later one (of any group) is spooled instead of sent.
    """

    def __init__(self, applier: OpApplier, spool: Spool, asynchronous: bool, retries: int, timeout_s: int,
                 workers: int = 4):
        self.applier = applier
        self.spool = spool
        self.spooling = spool.exists() and spool.pending() > 0
        self.error: str | None = None
        self.seconds: dict[str, float] = {}  # time spent sending, per operation kind (summed over threads)
        self.retries, self.timeout_s = retries, timeout_s
        self.workers = max(1, int(workers))
        self._lock = threading.Lock()
        self._queue: queue.Queue | None = queue.Queue() if asynchronous else None
        self._thread: threading.Thread | None = None
        if self._queue is not None:
            self._thread = threading.Thread(target=self._loop, name="lineage-sender", daemon=True)
            self._thread.start()

    def submit(self, op: dict) -> None:
        if self._queue is None:
            self._deliver(op)
        else:
            self._queue.put(op)

    def submit_parallel(self, groups: list[list[dict]]) -> None:
        groups = [group for group in groups if group]
        if self._queue is None:
            self._deliver_groups(groups)
        else:
            self._queue.put(("parallel", groups))

    def warm(self, task) -> None:
        """Run ``task()`` on the sender thread when it is idle: preparation, never spooled, errors ignored."""
        if self._queue is not None:
            self._queue.put(task)

    def prepare_model(self, pip_requirements: list[str]) -> None:
        """Build the pyfunc model template ahead of time (see ``OpApplier.prepare``)."""
        self.warm(lambda: self.applier.prepare(list(pip_requirements)))

    @property
    def state(self) -> SyncState:
        return self.applier.state

    @property
    def info(self) -> dict:
        """How lineage was sent: in a child process or not, with which client, whether MLflow was imported."""
        return {"process": False, "client": type(self.applier.client).__name__,
                "imported_mlflow": "mlflow" in sys.modules}

    def close(self) -> None:
        if self._queue is not None and self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            op = self._queue.get()
            if op is None:
                return
            if callable(op):
                try:
                    op()
                except Exception as error:  # only preparation: the operations that need it redo it
                    log.debug("lineage warm-up failed: %s", error)
                continue
            if isinstance(op, tuple):
                self._deliver_groups(op[1])
                continue
            self._deliver(op)

    def _deliver_groups(self, groups: list[list[dict]]) -> None:
        if self.spooling or self.workers == 1 or len(groups) < 2:
            for group in groups:
                for op in group:
                    self._deliver(op)
            return
        from concurrent.futures import ThreadPoolExecutor

        def run(group: list[dict]) -> None:
            for op in group:
                self._deliver(op, bounded=False)

        # MLflow reads its retry settings from the environment: set them once around all threads
        with fail_fast(self.retries, self.timeout_s), \
                ThreadPoolExecutor(min(self.workers, len(groups)), thread_name_prefix="lineage-send") as pool:
            for future in [pool.submit(run, group) for group in groups]:
                future.result()

    def _deliver(self, op: dict, bounded: bool = True) -> None:
        if not self.spooling:
            started = time.perf_counter()
            try:
                if bounded:
                    with fail_fast(self.retries, self.timeout_s):
                        self.applier.apply(op)
                else:
                    self.applier.apply(op)
                with self._lock:
                    self.seconds[op["op"]] = self.seconds.get(op["op"], 0.0) + time.perf_counter() - started
                return
            except Exception as error:  # the run goes on: everything from here on is spooled
                with self._lock:
                    if not self.spooling:
                        self.spooling = True
                        self.error = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                        log.warning("MLflow tracking at %s failed (%s); spooling lineage to %s; send it later "
                                    "with `evolve sync %s`", self.applier.state.tracking_uri, self.error,
                                    self.spool.dir, self.spool.run_dir)
                        state = self.applier.state
                        state.applied = len(self.spool.read_ops())
                        self.spool.save_state(state)
                    self.spool.append(op)
                return
        with self._lock:
            self.spool.append(op)


class ProcessSender:
    """A :class:`Sender` in a child process; the same interface (``submit``, ``submit_parallel``,
    ``prepare_model``, ``close``; then ``state``, ``spooling``, ``error``, ``seconds``).

    Operations are written to the child's standard input as they are submitted: once written,
    they reach the child even if this process is killed the next instant. The child reads its
    input on a thread of its own into a queue, so the pipe does not fill up while it sends.
    ``close`` waits until the child has sent or spooled everything and takes over its state
    (MLflow ids of runs, models and versions).
    """

    def __init__(self, tracking_uri: str, state: SyncState, run_dir: str | Path, model_code: str | Path,
                 retries: int, timeout_s: int, workers: int = 4):
        self.spool = Spool(run_dir)
        self.state = state
        self.spooling = False
        self.error: str | None = None
        self.seconds: dict[str, float] = {}
        self.info: dict = {"process": True}
        self._start_state = state.to_dict()
        self._start_ops = self.spool.read_ops() if self.spool.exists() else []
        self._sent: list[dict] = []  # every operation of this session, in an order the child may apply them
        env = dict(os.environ)
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no calls home from a training box
        self._process = subprocess.Popen(
            [sys.executable, "-m", "evolution.lineage_ship"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, text=True, encoding="utf-8")
        self._lock = threading.Lock()
        self._alive = True
        try:  # room for a burst of operations while the child starts (Linux; a hint elsewhere)
            import fcntl

            fcntl.fcntl(self._process.stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except (ImportError, OSError):
            pass
        self._put({"tracking_uri": tracking_uri, "state": self._start_state, "run_dir": str(run_dir),
                   "model_code": str(model_code), "retries": retries, "timeout_s": timeout_s, "workers": workers})

    def submit(self, op: dict) -> None:
        self._sent.append(op)
        self._put({"op": op})

    def submit_parallel(self, groups: list[list[dict]]) -> None:
        groups = [group for group in groups if group]
        self._sent.extend(op for group in groups for op in group)
        self._put({"parallel": groups})

    def prepare_model(self, pip_requirements: list[str]) -> None:
        self._put({"prepare": list(pip_requirements)})

    def close(self) -> None:
        if self._process is None:
            return
        self._put({"close": True})
        with self._lock:
            self._alive = False
            try:
                self._process.stdin.close()
            except OSError:
                pass
        report = None
        for line in self._process.stdout:  # one JSON line, then the child exits at once
            try:
                report = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
        code = self._process.wait()
        self._process.stdout.close()
        self._process = None
        if code != 0 or not isinstance(report, dict) or "state" not in report:
            self._recover(f"the lineage sender process exited with code {code}")
            return
        self.state = SyncState.from_dict(report["state"])
        self.spooling = bool(report["spooling"])
        self.error = report.get("error")
        self.seconds = dict(report.get("seconds", {}))
        self.info.update(report.get("info", {}))

    def _put(self, message: dict) -> None:
        line = json.dumps(message, allow_nan=True) + "\n"
        with self._lock:
            if not self._alive:
                return
            try:
                self._process.stdin.write(line)
                self._process.stdin.flush()
            except (BrokenPipeError, OSError):  # the child died: close() spools everything
                self._alive = False

    def _recover(self, why: str) -> None:
        """The child died without a report: which operations went through is unknown, so the spool
        gets every operation of this session after what it held before (replaying an operation
        that went through changes nothing), keeping the MLflow ids the child may have saved."""
        state = SyncState.from_dict(self._start_state)
        if self.spool.exists():
            try:
                saved = self.spool.load_state()
            except (OSError, ValueError):
                saved = None
            if saved is not None:
                state.experiment_id = state.experiment_id or saved.experiment_id
                for mine, theirs in ((state.runs, saved.runs), (state.models, saved.models),
                                     (state.versions, saved.versions)):
                    for key, value in theirs.items():
                        mine.setdefault(key, value)
        ops = self._start_ops + self._sent
        self.spool.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.spool.ops_path.with_name(self.spool.ops_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for op in ops:
                handle.write(json.dumps(op, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.spool.ops_path)
        self.spool.save_state(state)
        self.state = state
        self.spooling = True
        self.error = why
        log.warning("%s; %d lineage operations spooled to %s; send them with `evolve sync %s`",
                    why, len(ops) - state.applied, self.spool.dir, self.spool.run_dir)


def main() -> int:
    """The child: a hello line (where to send, the state so far), then operations, until
    ``close`` or the end of its input; one JSON report line on standard output at the end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the driver; this drains and exits
    try:  # the search comes first: where the cores are busy, sending waits (it catches up at the end)
        os.nice(NICENESS)
    except (AttributeError, OSError):
        pass
    report = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever a library prints goes to standard error, not into the report
    lines: queue.Queue = queue.Queue()

    def read() -> None:  # keeps the driver's pipe empty, also while MLflow is imported
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, name="lineage-ship-reader", daemon=True).start()
    first = lines.get()
    if first is None:
        os._exit(0)  # the driver went away before saying anything
    hello = json.loads(first)
    run_dir = Path(hello["run_dir"])
    state = SyncState.from_dict(hello["state"])
    applier = OpApplier(tracking_client(hello["tracking_uri"]), state, run_dir, hello["model_code"])
    # operations are applied here, in order; the reader thread is the queue in front of them
    sender = Sender(applier, Spool(run_dir), False, int(hello["retries"]), int(hello["timeout_s"]),
                    workers=int(hello["workers"]))
    while (line := lines.get()) is not None:
        message = json.loads(line)
        if "op" in message:
            sender.submit(message["op"])
        elif "parallel" in message:
            sender.submit_parallel(message["parallel"])
        elif "prepare" in message:
            try:  # only preparation: log_model builds the template itself if this failed
                applier.prepare(message["prepare"])
            except Exception as error:
                log.debug("building the model template ahead of time failed: %s", error)
        elif message.get("close"):
            break
    applier.close()
    try:
        report.write(json.dumps({"state": sender.state.to_dict(), "spooling": sender.spooling,
                                 "error": sender.error, "seconds": sender.seconds,
                                 "info": {"client": type(applier.client).__name__,
                                          "imported_mlflow": "mlflow" in sys.modules}}) + "\n")
        report.flush()
    except (BrokenPipeError, OSError):  # the driver is gone; the spool (if any) holds the rest
        pass
    sys.stderr.flush()
    # Everything is sent or spooled (and fsynced): skip the interpreter's teardown and MLflow's
    # exit handlers, a few tenths of a second that the driver would otherwise wait for.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
