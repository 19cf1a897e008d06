"""The lineage sender: a child process of the driver that sends operations to MLflow.

:class:`ProcessSender` (the driver's side) starts ``python -m evolution.lineage.sender`` and
writes the operations to its standard input as JSON lines: the driver never imports MLflow,
and the HTTP requests, the JSON and the model files never take the driver's interpreter lock
from the search or the judging. The child runs at ``nice`` 10, so on a busy machine the search
gets the cores first, and sends with ``MlflowClient`` (``evolution/lineage/client.py``).

* Once written, an operation reaches the child even if the driver is killed the next instant;
  the child drains what it was given, then exits.
* If the child dies instead, the driver cannot know which operations went through, so it
  spools every operation of the session (they are idempotent) for ``evolve sync``.
* When MLflow fails (a server that went away), the child spools that operation and every
  later one to ``RUN_DIR/mlflow_spool/`` (or, with ``tracking.spool: false``, drops them and
  says so); the run goes on.

:class:`Sender` is the child's side: operations in order, and the hall of fame's independent
groups side by side on a few threads.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from evolution.lineage.ops import Spool, SyncState, first_line, send_environment

log = logging.getLogger(__name__)

NICENESS = 10  # the sender's scheduling priority below the driver and the island actors
WORKERS = 4  # threads for the hall of fame's groups (the server's request threads, see mlflow/server.sh)


class Sender:
    """Applies operations in order; spools (or drops) every operation from the first failure on.

    ``submit_parallel`` takes independent groups of operations (one hall-of-fame strategy
    each): they go out on up to ``workers`` threads, each group in its own order, and what
    comes after waits until all are through.
    """

    def __init__(self, applier, spool: Spool, *, keep: bool = True, workers: int = WORKERS):
        self.applier = applier
        self.spool = spool
        self.keep = keep  # spool what fails (True) or drop it
        self.failed = spool.exists() and spool.pending() > 0  # an older outage: keep the order, spool on
        self.dropped = 0
        self.error: str | None = (f"operations of an earlier attempt wait in {spool.dir} (evolve sync)"
                                  if self.failed else None)
        self.seconds: dict[str, float] = {}  # time spent sending, per operation kind (summed over threads)
        self.workers = max(1, int(workers))
        self._lock = threading.Lock()

    @property
    def state(self) -> SyncState:
        return self.applier.state

    def submit(self, op: dict) -> None:
        if not self.failed:
            started = time.perf_counter()
            try:
                self.applier.apply(op)
            except Exception as error:  # the run goes on: everything from here on is spooled
                self._fail(error)
            else:
                with self._lock:
                    self.seconds[op["op"]] = self.seconds.get(op["op"], 0.0) + time.perf_counter() - started
                return
        with self._lock:
            if self.keep:
                self.spool.append(op)
            else:
                self.dropped += 1

    def submit_parallel(self, groups: list[list[dict]]) -> None:
        groups = [group for group in groups if group]
        if self.failed or self.workers == 1 or len(groups) < 2:
            for group in groups:
                for op in group:
                    self.submit(op)
            return

        def run(group: list[dict]) -> None:
            for op in group:
                self.submit(op)

        with ThreadPoolExecutor(min(self.workers, len(groups)), thread_name_prefix="lineage-send") as pool:
            for future in [pool.submit(run, group) for group in groups]:
                future.result()

    def _fail(self, error: Exception) -> None:
        with self._lock:
            if self.failed:
                return
            self.failed = True
            self.error = first_line(error)
            if self.keep:
                state = self.applier.state
                state.applied = len(self.spool.read_ops())
                self.spool.save_state(state)


class ProcessSender:
    """The driver's side of the sender process: ``submit``, ``submit_parallel``, ``prepare_model``,
    ``close``; after ``close``: ``state``, ``failed``, ``dropped``, ``error``, ``seconds``."""

    def __init__(self, tracking_uri: str, state: SyncState, run_dir: str | Path, *, keep: bool = True):
        self.spool = Spool(run_dir)
        self.state = state
        self.keep = keep
        self.failed = False
        self.dropped = 0
        self.error: str | None = None
        self.seconds: dict[str, float] = {}
        self._start_state = state.to_dict()
        self._start_ops = self.spool.read_ops() if self.spool.exists() else []
        self._sent: list[dict] = []  # every operation of this session, in an order the child may apply them
        self._process = subprocess.Popen(
            [sys.executable, "-m", "evolution.lineage.sender"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=send_environment(), text=True, encoding="utf-8")
        self._lock = threading.Lock()
        self._alive = True
        try:  # room for a burst of operations while the child starts (Linux; a hint elsewhere)
            import fcntl

            fcntl.fcntl(self._process.stdin.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except (ImportError, OSError):
            pass
        self._put({"tracking_uri": tracking_uri, "state": self._start_state, "run_dir": str(run_dir), "keep": keep})

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def submit(self, op: dict) -> None:
        self._sent.append(op)
        self._put({"op": op})

    def submit_parallel(self, groups: list[list[dict]]) -> None:
        groups = [group for group in groups if group]
        self._sent.extend(op for group in groups for op in group)
        self._put({"parallel": groups})

    def prepare_model(self) -> None:
        """Find or build the pyfunc model template now, while the search runs."""
        self._put({"prepare": True})

    def close(self) -> None:
        """Wait until the child has sent or spooled everything; take over its state."""
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
        self.failed = bool(report["failed"])
        self.dropped = int(report.get("dropped", 0))
        self.error = report.get("error")
        self.seconds = dict(report.get("seconds", {}))

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
        """The child died without a report: the spool gets every operation of this session after
        what it held before (replaying one that went through changes nothing), keeping the MLflow
        ids the child may have saved."""
        state = SyncState.from_dict(self._start_state)
        if self.spool.exists():
            try:
                state.merge_ids(self.spool.load_state())
            except (OSError, ValueError):
                pass
        self.failed = True
        self.error = why
        self.state = state
        if not self.keep:
            self.dropped = len(self._sent)
            return
        self.spool.rewrite(self._start_ops + self._sent)
        self.spool.save_state(state)


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

    threading.Thread(target=read, name="lineage-sender-reader", daemon=True).start()
    first = lines.get()
    if first is None:
        os._exit(0)  # the driver went away before saying anything
    hello = json.loads(first)
    from evolution.lineage.client import OpApplier, open_client
    from evolution.lineage.template import ModelTemplate

    run_dir = Path(hello["run_dir"])
    template = ModelTemplate()
    applier = OpApplier(open_client(hello["tracking_uri"]), SyncState.from_dict(hello["state"]), run_dir, template)
    sender = Sender(applier, Spool(run_dir), keep=bool(hello.get("keep", True)))
    while (line := lines.get()) is not None:
        message = json.loads(line)
        if "op" in message:
            sender.submit(message["op"])
        elif "parallel" in message:
            sender.submit_parallel(message["parallel"])
        elif "prepare" in message:
            try:  # only preparation: log_model builds the template itself if this failed
                template.path()
            except Exception as error:
                log.debug("building the model template ahead of time failed: %s", error)
        elif message.get("close"):
            break
    template.close()
    try:
        report.write(json.dumps({"state": sender.state.to_dict(), "failed": sender.failed, "dropped": sender.dropped,
                                 "error": sender.error, "seconds": sender.seconds}) + "\n")
        report.flush()
    except (BrokenPipeError, OSError):  # the driver is gone; the spool (if any) holds the rest
        pass
    sys.stderr.flush()
    # Everything is sent or spooled (and fsynced): skip the interpreter's teardown and MLflow's
    # exit handlers, a few tenths of a second that the driver would otherwise wait for.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
