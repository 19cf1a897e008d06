"""Watchdog of a local Ray started by ``evolve run``: when the driver is gone, however it went
(a clean exit, Ctrl-C, SIGTERM, SIGKILL, a crash), no process of that Ray outlives it.

The driver starts this module as a child process of its own (a new session, so a Ctrl-C to the
terminal does not stop it first) with a pipe on its stdin, and puts ``EVOLVE_RAY_OWNER=<tag>`` in
the environment that the processes of its local Ray inherit (GCS, raylet, dashboard and its
agents, runtime-env agent, workers). The pipe reaches end-of-file when the driver exits; the
watchdog then stops every process that carries the tag, SIGTERM first, SIGKILL after a grace
period, and exits. Processes without the tag (another user's Ray, another run's) are never
touched.

    python -m evolution.ray_watchdog TAG [GRACE_SECONDS]
"""
from __future__ import annotations

import os
import signal
import sys
import time

import psutil

OWNER_ENV = "EVOLVE_RAY_OWNER"


def tagged(tag: str, variable: str = OWNER_ENV) -> list[psutil.Process]:
    """Live processes whose environment holds ``variable=tag`` (``EVOLVE_RAY_OWNER``; this one aside)."""
    found = []
    me = os.getpid()
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue  # already dead; its parent, or init once the parent is gone, reaps it
            if process.environ().get(variable) == tag:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def stop_tagged(tag: str, grace_s: float = 5.0, rounds: int = 3, variable: str = OWNER_ENV) -> int:
    """SIGTERM every tagged process, SIGKILL what is left after ``grace_s``; a few rounds, as a
    dying raylet may still spawn a worker. Returns how many processes were signalled."""
    signalled = 0
    for _ in range(rounds):
        processes = tagged(tag, variable)
        if not processes:
            break
        for process in processes:
            try:
                process.send_signal(signal.SIGTERM)
                signalled += 1
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(processes, timeout=grace_s)
        for process in alive:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=grace_s)
    return signalled


def main(argv: list[str]) -> int:
    tag = argv[0]
    grace_s = float(argv[1]) if len(argv) > 1 else 5.0
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C is the driver's business
    try:
        while sys.stdin.buffer.read(4096):  # nothing is ever written: end-of-file = the driver exited
            pass
    except OSError:
        pass
    time.sleep(0.2)  # let a clean ray.shutdown() finish what it started
    stop_tagged(tag, grace_s)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
