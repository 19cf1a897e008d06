"""The driver: plan a run (no Ray), run its generations over an island pool, judge it.

    spec = plan(config, data_path=None, out_dir=None)     # validates config + data, no Ray
    result = execute(spec, pool)                          # pool: LocalPool or RayPool

Run directory (default ``runs/<run_id>``):

* ``result.json``  the contract (see design.md); no timestamps, so a resumed run or a run
  whose island actor died ends byte-identical to an uninterrupted one
* ``trials/``      the trial log, one Parquet part per generation (evolution/trials.py)
* ``checkpoints/`` one JSON checkpoint per generation plus what each generation added to the
  islands' seen caches (evolution/checkpoint.py)
* ``config.json``  the full config (runtime included) and ``--data``, for ``--resume``
* ``timing.json``  wall times, evaluations per second and, per generation, where the driver's
  time went (see :func:`execute`; not part of the result)

``run_id`` is a hash of the config id and the market fingerprint: the same search on the
same bars has the same id.
"""
from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from backtest.engine import market_arrays
from backtest.jit_cache import is_compiled
from backtest.metrics import periods_per_year
from evolution import checkpoint, trials
from evolution.config import ConfigError, EvolutionConfig, parse_config
from evolution.fitness import weights
from evolution.gates import judge
from evolution.island import apply_state_delta
from evolution.jsonable import jsonable as _clean
from evolution.market import MarketSpec, resolve
from evolution.pools import IslandLost
from evolution.ranking import rank_trials
from evolution.telemetry import record_error, record_generation, record_result

MAX_RECOVERIES = 20
COMPILE_NOTICE = ("evolve: compiling the backtest kernels for this version of the code: about a minute, more on a busy "
                  "machine ('evolve warm' does it ahead; ./dev runs it); once per machine, later runs load them in under a "
                  "second")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class RunDirectoryError(RuntimeError):
    """The run directory could not be written (a full disk, a read-only file system, no
    permission). The message is one line: what failed, what is safe on disk, what to do."""


def _cannot_write(error: OSError, path: Path) -> str:
    if error.errno in DISK_FULL:
        return f"no space left on the device holding {path}"
    if error.errno == errno.EROFS:
        return f"cannot write {path}: the file system is read-only"
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write {path}: permission denied"
    return f"cannot write {path}: {error.strerror or error}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _writing(path: Path, run_dir: Path, done: int | None) -> Iterator[None]:
    """Turn an OSError while writing ``path`` into a RunDirectoryError that says what to do.
    ``done``: the newest generation whose checkpoint is on disk (-1: none yet; None: the run
    has not started, the directory is being laid out)."""
    try:
        yield
    except OSError as error:
        what = _cannot_write(error, path)
        if done is None:
            raise RunDirectoryError(f"{what}; pass an --out directory on a writable disk with free space") from None
        kept = (f"generations 0-{done} are checkpointed in {run_dir}" if done >= 0
                else f"no generation had finished, {run_dir} holds the run's config")
        raise RunDirectoryError(
            f"{what}. Nothing was lost: {kept}. Free space and run `evolve run --resume {run_dir}`, or copy "
            f"{run_dir} to a disk with room and resume the copy there: the result is the same"
        ) from None


@dataclass
class RunPlan:
    config: EvolutionConfig
    spec: MarketSpec
    run_id: str
    run_dir: Path
    checkpoint_dir: Path
    data_path: str | None
    start_generation: int = 0
    states: list = field(default_factory=list)
    trial_rows: int = 0
    last_rows: list = field(default_factory=list)  # the latest generation's trial-log rows, for on_generation


def make_run_id(config: EvolutionConfig, market_fingerprint: str) -> str:
    return hashlib.sha256(f"{config.config_id}:{market_fingerprint}".encode()).hexdigest()[:12]


def plan(config: EvolutionConfig, *, data_path: str | Path | None = None, out_dir: str | Path | None = None) -> RunPlan:
    """Validate data and folds and lay out the run directory. Raises ConfigError or
    DataValidationError (before any Ray work)."""
    spec = resolve(config, data_path)
    run_id = make_run_id(config, spec.fingerprint)
    run_dir = Path(out_dir) if out_dir is not None else Path("runs") / run_id
    ckdir = Path(config.runtime.checkpoint_dir) if config.runtime.checkpoint_dir else run_dir / "checkpoints"
    existing = checkpoint.latest(ckdir, with_seen=False)
    if existing is not None and existing.get("run_id") != run_id:
        raise ConfigError(
            f"{run_dir} holds checkpoints of another run ({existing.get('run_id')}); "
            "use another --out, or `evolve run --resume` to continue that run"
        )
    # the same run again: start over (it ends with the same result)
    with _writing(run_dir, run_dir, None):
        checkpoint.clear(ckdir)
        run_dir.mkdir(parents=True, exist_ok=True)
        for name in ("result.json", "timing.json"):
            (run_dir / name).unlink(missing_ok=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"config": config.model_dump(mode="json"), "data": None if data_path is None else str(data_path)},
            indent=2))
        trials.drop_parts_after(run_dir, -1)
    return RunPlan(config, spec, run_id, run_dir, ckdir, None if data_path is None else str(data_path),
                   states=[None] * config.islands)


def plan_resume(run_dir: str | Path, **runtime_overrides) -> RunPlan:
    """Continue a run from its newest checkpoint (same config, same bars)."""
    run_dir = Path(run_dir)
    meta_path = run_dir / "config.json"
    if not meta_path.exists():
        raise ConfigError(f"--resume {run_dir}: no config.json there; is this a run directory?")
    meta = json.loads(meta_path.read_text())
    config = parse_config(meta["config"])
    if runtime_overrides:
        config = config.with_overrides(**{f"runtime.{k}": v for k, v in runtime_overrides.items()})
    spec = resolve(config, meta.get("data"))
    run_id = make_run_id(config, spec.fingerprint)
    ckdir = Path(config.runtime.checkpoint_dir) if config.runtime.checkpoint_dir else run_dir / "checkpoints"
    latest = checkpoint.latest(ckdir)
    out = RunPlan(config, spec, run_id, run_dir, ckdir, meta.get("data"), states=[None] * config.islands)
    if latest is None:
        trials.drop_parts_after(run_dir, -1)
        return out
    if latest.get("run_id") != run_id:
        raise ConfigError(
            f"--resume {run_dir}: the checkpoint belongs to run {latest.get('run_id')}, but the config and "
            f"data now give run {run_id} (did the data file change?)"
        )
    trials.drop_parts_after(run_dir, latest["generation"])
    checkpoint.drop_after(ckdir, latest["generation"])
    out.start_generation = latest["generation"] + 1
    out.states = latest["states"]
    out.trial_rows = latest["trial_rows"]
    return out


# ---------------------------------------------------------------------- execution


def _migrates(config: EvolutionConfig, generation: int) -> bool:
    m = config.migration
    return (config.islands > 1 and m.size > 0 and (generation + 1) % m.interval == 0
            and generation + 1 < config.generations)


def _submit_generation(pool, config: EvolutionConfig, g: int) -> tuple[list, list, list]:
    """Queue generation g (and its migration) on every island; returns handles of
    (rows per island, migration rows per island, state deltas per island)."""
    n = config.islands
    if _migrates(config, g):
        stepped = pool.submit("step", [(g,)] * n)
        outgoing = pool.submit("emigrants", [(config.migration.size, g)] * n)
        migrated = pool.submit("immigrate", [(outgoing[(i - 1) % n], g) for i in range(n)])
        deltas = pool.submit("state_delta", [(g,)] * n)  # only what is new: the driver holds the rest
        return stepped, migrated, deltas
    return pool.submit("step_and_state", [(g,)] * n), [], []  # one round trip per island


def _collect_generation(pool, queued: tuple[list, list, list], states_before: list) -> tuple[list[dict], list, list, int]:
    stepped, migrated, deltas = queued
    answers = pool.collect([*stepped, *migrated, *deltas])  # one round trip, migration or not
    a, b = len(stepped), len(stepped) + len(migrated)
    stepped, migrated, deltas = answers[:a], answers[a:b], answers[b:]
    if not deltas:
        stepped, deltas = map(list, zip(*stepped))
    states = [apply_state_delta(before, delta) for before, delta in zip(states_before, deltas)]
    rows = [r for island_rows in stepped for r in island_rows]
    rows += [r for island_rows in migrated for r in island_rows]
    return rows, states, [delta["seen_added"] for delta in deltas], sum(delta.get("cached", 0) for delta in deltas)


class _Queue:
    """Generations queued on the islands ahead of the driver (``pool.lookahead`` at most).

    Calls to one island run in submission order, so islands go on evolving while the driver
    writes the trial log and checkpoint of an earlier generation, and a slow generation on one
    island is made up in the next ones. Migration needs every island's emigrants, so it
    synchronises the islands, nothing else does. Results are the same with any lookahead: each
    island's generation depends only on its own state and its seeded generator."""

    def __init__(self, pool, config: EvolutionConfig, start: int):
        self.pool, self.config = pool, config
        self.lookahead = max(0, int(getattr(pool, "lookahead", 0)))
        self.queued: dict[int, tuple] = {}
        self.next = start

    def take(self, g: int, states_before: list) -> tuple[list[dict], list, list, int]:
        """Generation g's rows, states, seen additions and offspring scored from the islands'
        caches; replays it after an island loss."""
        for attempt in range(MAX_RECOVERIES + 1):
            last = min(g + self.lookahead, self.config.generations - 1)
            while self.next <= last:
                self.queued[self.next] = _submit_generation(self.pool, self.config, self.next)
                self.next += 1
            try:
                return _collect_generation(self.pool, self.queued.pop(g), states_before)
            except IslandLost as error:
                record_error("island_lost")
                if attempt == MAX_RECOVERIES:
                    raise
                print(f"evolve: an island was lost in generation {g} ({str(error).splitlines()[0][:120]}); "
                      "restoring every island from the last checkpoint and replaying", file=sys.stderr)
                self.pool.drain([h for queued in self.queued.values() for handles in queued for h in handles])
                self.queued.clear()
                self.next = g
                self.pool.restore(states_before)
        raise AssertionError("unreachable")


class _Writer:
    """Writes a generation's trial-log part and then its checkpoint on one background thread,
    while the driver waits for the islands' next generation.

    At most one generation is in flight: :meth:`finish` of generation g comes before the
    driver hands over g+1, so parts and checkpoints land in order and, when ``on_generation(g)``
    runs, exactly generations 0..g are on disk (an exception raised there leaves the run
    resumable from g, as before). pyarrow's Parquet writer and fsync release the GIL: on a
    driver with a spare core the write runs beside deserializing the next results."""

    def __init__(self, run: RunPlan):
        from concurrent.futures import ThreadPoolExecutor

        self.run = run
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evolve-writer")
        self.pending = None  # (generation, future)

    def _write(self, g: int, rows: list[dict], payload: dict, seen_added: list) -> dict:
        run, t0, c0 = self.run, time.perf_counter(), time.thread_time()
        with _writing(trials.part_path(run.run_dir, g), run.run_dir, g - 1):
            trials.write_part(run.run_dir, g, rows)
        with _writing(run.checkpoint_dir, run.run_dir, g - 1):
            checkpoint.save(run.checkpoint_dir, g, payload, keep=run.config.runtime.keep_checkpoints,
                            seen_added=seen_added)
        return {"writing_seconds": time.perf_counter() - t0, "writing_cpu_seconds": time.thread_time() - c0}

    def submit(self, g: int, rows: list[dict], payload: dict, seen_added: list) -> None:
        assert self.pending is None, "finish the previous generation first"
        self.pending = (g, self.pool.submit(self._write, g, rows, payload, seen_added))

    def finish(self) -> tuple[int, dict] | None:
        """Wait for the generation in flight; its number and write times (None: none was).
        Raises what the write raised (a RunDirectoryError)."""
        if self.pending is None:
            return None
        g, future = self.pending
        self.pending = None
        return g, future.result()

    def close(self) -> None:
        """Let a write in flight end (its error, if any, is not raised: an error of the run's
        own is on its way), then stop the thread."""
        if self.pending is not None:
            self.pending[1].exception()
            self.pending = None
        self.pool.shutdown(wait=True)


def execute(
    run: RunPlan,
    pool,
    *,
    on_generation: Callable[[int, object], None] | None = None,
    on_hall_of_fame: Callable[[list[dict]], None] | None = None,
    compiling: bool = False,
) -> dict:
    """Run the remaining generations, then judge the hall of fame and write result.json.

    ``on_generation(g, pool)`` once generation g's trial-log part and checkpoint are on disk
    (and no later generation's): the driver writes g on a background thread while it waits for
    the islands' generation g+1 (:class:`_Writer`), so the call comes after g+1 is collected;
    ``run.last_rows`` then holds g's rows. ``on_hall_of_fame(members)`` between the search and
    the judging (see :func:`build_result`); ``compiling`` (see :func:`needs_compilation`): the
    progress bar starts after the first generation, so it never sits at 0% with an ETA of many
    minutes while the kernels compile.

    ``timing.json`` holds, per generation: ``seconds`` (the driver's wall time for it),
    ``waiting_seconds`` (for the islands' results: their generation, Ray's transfer and
    deserialization), ``driver_cpu_seconds`` (the driver's main thread), ``writing_seconds``
    and ``writing_cpu_seconds`` (the part and checkpoint, on the writer thread) and
    ``write_wait_seconds`` (the driver waiting for that write)."""
    config = run.config
    started = time.perf_counter()
    timing = {"generations": []}
    timing_path = run.run_dir / "timing.json"
    if run.start_generation > 0 and timing_path.exists():
        timing = json.loads(timing_path.read_text())
        timing["generations"] = [t for t in timing.get("generations", []) if t["generation"] < run.start_generation]
    if any(s is not None for s in run.states):
        pool.restore(run.states)
    states = list(run.states)
    total_rows = run.trial_rows
    bar = None if compiling else _progress(config, run.start_generation)  # compiling: from generation 1 on
    best = -math.inf
    sign = weights(config.selection.objectives)[0]
    queue = _Queue(pool, config, run.start_generation)
    writer = _Writer(run)
    held: dict[int, tuple[dict, list[dict]]] = {}  # generation in flight: its timing entry and rows

    def written(t_wait: float) -> None:
        """The generation in flight is on disk: its timing, then ``on_generation``."""
        done = writer.finish()
        if done is None:
            return
        g, times = done
        entry, rows = held.pop(g)
        entry.update(times, write_wait_seconds=time.perf_counter() - t_wait)
        entry["seconds"] += entry["write_wait_seconds"]
        timing["generations"].append(entry)
        run.last_rows = rows
        if on_generation is not None:
            on_generation(g, pool)

    # The cyclic GC's full collections scan every tracked object, most of them the imports'
    # (pandas, pyarrow, Ray: measured 14 ms growing to 162 ms each on the main thread, several a
    # run, landing in whichever generation they fall): frozen, they are left out of every scan
    # and a collection costs what this run's own objects do. Unfrozen after the search.
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        for g in range(run.start_generation, config.generations):
            t0, c0 = time.perf_counter(), time.thread_time()
            rows, states_after, seen_added, cached = queue.take(g, states)
            t_taken = time.perf_counter()
            written(t_taken)  # generation g-1 (written while the islands made g)
            t_wait_done = time.perf_counter()
            total_rows += len(rows)
            writer.submit(g, rows, {
                "run_id": run.run_id, "config_id": config.config_id, "market": run.spec.fingerprint,
                "states": states_after, "trial_rows": total_rows,
            }, seen_added)
            states = states_after
            evaluated = sum(1 for r in rows if r["evaluated"])
            for s in states:
                for ind in s["population"][:1]:
                    best = max(best, sign * ind["fitness"][0])
            if compiling and g == run.start_generation:  # the bar's rate from here on leaves the compilation out
                bar = _progress(config, g)
            if bar is not None:
                bar.set_postfix_str(f"best {config.selection.objectives[0]} {sign * best:.3g}, {evaluated} evaluated")
                bar.update(1)
            wall = time.perf_counter() - t0 - (t_wait_done - t_taken)  # the wait for g-1's write goes to g-1
            held[g] = ({"generation": g, "seconds": wall, "evaluations": evaluated,
                        "waiting_seconds": t_taken - t0, "driver_cpu_seconds": time.thread_time() - c0}, rows)
            record_generation(rows, wall, cached)
        written(time.perf_counter())  # the last generation
    except Exception:
        record_error("run")
        raise
    finally:
        writer.close()
        if bar is not None:
            bar.close()
        if freeze:
            gc.unfreeze()
    t_judge = time.perf_counter()
    result = build_result(run, on_hall_of_fame)
    with _writing(run.run_dir / "result.json", run.run_dir, config.generations - 1):
        _write_atomic(run.run_dir / "result.json", dump_result(result))  # never a truncated result
    record_result(result)
    total_eval = sum(t["evaluations"] for t in timing["generations"])
    total_gen_s = sum(t["seconds"] for t in timing["generations"])
    timing.update({
        "search_seconds": total_gen_s,
        "gates_seconds": time.perf_counter() - t_judge,
        "this_session_seconds": time.perf_counter() - started,
        "evaluations": total_eval,
        "evaluations_per_second": total_eval / total_gen_s if total_gen_s > 0 else None,
    })
    with _writing(timing_path, run.run_dir, config.generations - 1):
        timing_path.write_text(json.dumps(timing, indent=2))
    return result


def needs_compilation() -> bool:
    """True when this machine has not compiled this version of the kernels yet. Ask before
    anything runs a kernel (loading a synthetic market does), tell the user once the run is
    planned (:data:`COMPILE_NOTICE`)."""
    return is_compiled("backtest") is False


def _progress(config: EvolutionConfig, start: int):
    if not config.runtime.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=config.generations, initial=start, desc="evolving", unit="gen", file=sys.stderr,
                dynamic_ncols=True)


# ---------------------------------------------------------------------- result


def distinct_hall_of_fame(ranked: pd.DataFrame, size: int) -> pd.DataFrame:
    """The best ``size`` trials that trade differently: a trial whose out-of-sample return
    series equals one already taken (a clone: e.g. an extra condition that never binds, or a
    threshold no bar crosses) is skipped, so the hall of fame is not ten copies of one rule."""
    taken: list[int] = []
    seen: set[bytes] = set()
    for i, returns in enumerate(ranked["oos_returns"] if "oos_returns" in ranked.columns else [None] * len(ranked)):
        if returns is not None and len(returns):
            key = np.round(np.asarray(returns, dtype=np.float64), 12).tobytes()
            if key in seen:
                continue
            seen.add(key)
        taken.append(i)
        if len(taken) == size:
            break
    return ranked.iloc[taken].reset_index(drop=True)


def pareto_front(ranked: pd.DataFrame, config: EvolutionConfig, limit: int = 50) -> list[str]:
    """Strategy ids of the non-dominated distinct trials (best first, at most ``limit``)."""
    if len(config.selection.objectives) < 2 or ranked.empty:
        return list(ranked["strategy_id"].head(1))
    w = np.array(weights(config.selection.objectives))
    values = np.array([list(f) for f in ranked["fitness"]]) * w  # larger is better everywhere
    front = []
    for i in range(values.shape[0]):
        dominated = np.all(values >= values[i], axis=1) & np.any(values > values[i], axis=1)
        if not dominated.any():
            front.append(ranked["strategy_id"].iloc[i])
            if len(front) == limit:
                break
    return front


def build_result(run: RunPlan, on_hall_of_fame: Callable[[list[dict]], None] | None = None) -> dict:
    """The result: the distinct hall of fame judged on the holdout. ``on_hall_of_fame(members)``
    is called once the hall of fame is known and before it is judged, with each member as it
    will appear in the result minus what the judging adds (holdout metrics, DSR, PBO, gates)."""
    config = run.config
    frame = trials.read_trials(run.run_dir)
    buckets_per_year = periods_per_year(market_arrays(run.spec.market).interval_ms) / config.walk_forward.bucket_bars
    ranked = rank_trials(frame, config, buckets_per_year)
    hof = distinct_hall_of_fame(ranked, config.hall_of_fame)
    summary_cols = [c for c in ranked.columns if c.startswith("wf_")]
    members = [{
        "strategy_id": row["strategy_id"],
        "genome": json.loads(row["genome"]),
        "fitness": dict(zip(config.selection.objectives, row["fitness"])),
        "rank_score": row["rank_score"],
        "metrics": {"walk_forward": {c[3:]: row[c] for c in summary_cols}},
        "generation": int(row["generation"]),
        "island": int(row["island"]),
        "operator": row["operator"],
        "parents": list(row["parents"]),
    } for _, row in hof.iterrows()]
    if on_hall_of_fame is not None and members:
        on_hall_of_fame(_clean(members))
    judgement = judge(hof, ranked, run.spec, config) if len(hof) else None
    verdicts = judgement.members if judgement is not None else []
    for member, verdict in zip(members, verdicts):
        member["metrics"]["holdout"] = verdict["holdout"]
        member.update({key: verdict[key] for key in ("dsr", "holdout_dsr", "pbo", "gates", "promoted")})
    split = run.spec.split
    result = {
        "run_id": run.run_id,
        "seed": config.seed,
        "config_id": config.config_id,
        "config": config.search_dict(),
        "market": {
            "source": run.spec.source,
            "fingerprint": run.spec.fingerprint,
            "n_bars": len(run.spec.market),
            "walk_forward_folds": split.test_ranges().tolist(),
            "holdout": [split.holdout_start, split.holdout_end],
        },
        "n_trials": int(len(ranked)),
        "n_effective_trials": judgement.n_effective_trials if judgement is not None else None,
        "judgement": judgement.summary() if judgement is not None else None,
        "ranking": config.gates.rank_by,
        "n_evaluations": int(frame["evaluated"].sum()),
        "n_errors": int(frame.loc[frame["evaluated"], "error"].notna().sum()),
        "objectives": list(config.selection.objectives),
        "selection": "nsga2" if config.multi_objective else "tournament",
        "pbo": judgement.pbo if judgement is not None else None,
        "gate_thresholds": config.gates.model_dump(mode="json"),
        "hall_of_fame": members,
        "pareto_front": pareto_front(ranked, config),
        "promoted": [m["strategy_id"] for m in members if m["promoted"]],
    }
    return _clean(result)


def dump_result(result: dict) -> str:
    return json.dumps(result, indent=2, sort_keys=True, allow_nan=False) + "\n"
