"""Checkpoints: one JSON file per finished generation, written atomically.

``<checkpoint dir>/generation-00007.json`` holds the island states after generation 7 and
its migration (populations with fitness, each island's seen-genome cache, the generation
counter, which with the run seed fixes every later random draw), the trial-log position
(rows written so far) and the ids that tie it to its run (config id, market fingerprint).
The newest ``runtime.keep_checkpoints`` files are kept.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

FORMAT = 1


def _path(folder: Path, generation: int) -> Path:
    return Path(folder) / f"generation-{generation:05d}.json"


def save(folder: Path, generation: int, payload: dict, keep: int = 2) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = _path(folder, generation)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"format": FORMAT, "generation": generation, **payload}))
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    for old in sorted(folder.glob("generation-*.json"))[:-keep]:
        old.unlink()
    return path


def latest(folder: Path) -> dict | None:
    """The newest readable checkpoint, or None."""
    folder = Path(folder)
    if not folder.exists():
        return None
    for path in sorted(folder.glob("generation-*.json"), reverse=True):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("format") == FORMAT:
            return data
    return None


def clear(folder: Path) -> None:
    folder = Path(folder)
    if folder.exists():
        for path in folder.glob("generation-*.json*"):
            path.unlink()
