"""Checkpoints: one JSON file per finished generation, written atomically.

``<checkpoint dir>/generation-00007.json`` holds the island states after generation 7 and
its migration (populations with fitness, the generation counter, which with the run seed
fixes every later random draw), the trial-log position (rows written so far) and the ids
that tie it to its run (config id, market fingerprint). The newest
``runtime.keep_checkpoints`` of these files are kept.

Each island's seen-genome cache (every strategy it has scored, with its fitness) only
grows, so it is not rewritten every generation: ``seen-00007.json`` holds what generation 7
added, and :func:`latest` rebuilds the caches from the files up to the checkpoint's
generation. A checkpoint written without ``seen_added`` carries its caches in full (format 1
files read the same way).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

FORMAT = 2
READABLE = (1, 2)


def _path(folder: Path, generation: int) -> Path:
    return Path(folder) / f"generation-{generation:05d}.json"


def _seen_path(folder: Path, generation: int) -> Path:
    return Path(folder) / f"seen-{generation:05d}.json"


def _write_atomic(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data))
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save(folder: Path, generation: int, payload: dict, keep: int = 2,
         seen_added: list[dict] | None = None) -> Path:
    """Write the checkpoint of ``generation``. With ``seen_added`` (per island, what this
    generation added to ``seen``), the states' ``seen`` caches are left out of the file and
    the additions go to ``seen-GGGGG.json`` (written first: a checkpoint never points at
    additions that are not on disk)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "generation": generation, **payload}
    if seen_added is not None:
        _write_atomic(_seen_path(folder, generation), {"format": FORMAT, "generation": generation,
                                                       "seen_added": seen_added})
        data["states"] = [{k: v for k, v in state.items() if k != "seen"} for state in payload["states"]]
        data["seen"] = "incremental"
    path = _path(folder, generation)
    _write_atomic(path, data)
    for old in sorted(folder.glob("generation-*.json"))[:-keep]:
        old.unlink()
    return path


def latest(folder: Path, *, with_seen: bool = True) -> dict | None:
    """The newest readable checkpoint, or None. ``with_seen=False``: without rebuilding the
    islands' seen caches (enough to read its ids)."""
    folder = Path(folder)
    if not folder.exists():
        return None
    for path in sorted(folder.glob("generation-*.json"), reverse=True):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("format") in READABLE:
            if with_seen and data.get("seen") == "incremental":
                _rebuild_seen(folder, data)
            return data
    return None


def _rebuild_seen(folder: Path, data: dict) -> None:
    generation = int(data["generation"])
    seen: list[dict] = [{} for _ in data["states"]]
    for g in range(generation + 1):
        path = _seen_path(folder, g)
        try:
            added = json.loads(path.read_text())["seen_added"]
        except (OSError, json.JSONDecodeError, KeyError) as error:
            raise ValueError(
                f"{path}: missing or damaged ({type(error).__name__}); the checkpoint of generation {generation} "
                f"needs every seen-*.json up to it. Start the run again without --resume."
            ) from None
        for island, entries in zip(seen, added):
            island.update(entries)
    for state, island in zip(data["states"], seen):
        state["seen"] = island
    del data["seen"]


def drop_after(folder: Path, generation: int) -> None:
    """Delete the seen additions of generations after ``generation`` (they will be replayed)."""
    folder = Path(folder)
    if folder.exists():
        for path in folder.glob("seen-*.json*"):
            if path.name.endswith(".tmp") or int(path.name[5:10]) > generation:
                path.unlink()


def clear(folder: Path) -> None:
    folder = Path(folder)
    if folder.exists():
        for pattern in ("generation-*.json*", "seen-*.json*"):
            for path in folder.glob(pattern):
                path.unlink()
