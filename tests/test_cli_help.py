"""Every `evolve` command answers --help with a description and examples (found by walking the
commands the help texts list, so a new command without examples fails here)."""
from __future__ import annotations

import contextlib
import io
import re

import pytest

from evolution.cli import main


def _help(*command: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        main([*command, "--help"])
    assert stop.value.code == 0
    return out.getvalue()


def _commands(prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    text = _help(*prefix)
    usage = text.split("\n\n", 1)[0]
    found = re.search(r"\{([a-z,-]+)\}", usage)
    if not found:
        return [prefix]
    out = [prefix] if prefix else []
    for name in found.group(1).split(","):
        out += _commands(prefix + (name,))
    return out


def test_every_command_has_help_with_examples():
    commands = _commands()
    assert {("run",), ("demo",), ("report",), ("sync",), ("data",), ("data", "fetch"), ("data", "show")} <= set(commands)
    for command in [(), *commands]:
        text = _help(*command)
        assert "\nexamples:\n" in text, f"`evolve {' '.join(command)} --help` has no examples"
        examples = text.split("\nexamples:\n", 1)[1]
        lines = [line.strip() for line in examples.splitlines() if line.strip().startswith("evolve ")]
        assert lines, command
        for line in lines:  # each example names a real command of its own
            assert line.split()[1] in {c[0] for c in commands}, line
