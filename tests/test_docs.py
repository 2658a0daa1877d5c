"""The commands in README.md and docs/ work on a fresh clone (no ../shared, no download).

* Every ``depthlab ...`` line of a shell code block parses against the CLI: the command exists, its options
  exist and take the values written, required options are there; every repository path it names
  (``configs/...``, ``src/depthlab/assets/...``) exists; none points into ``../shared``.
* Blocks fenced as ``bash runs-on-clone`` are run as they are, in order, in an empty folder that sees the
  repository's ``src/`` and ``configs/`` (so relative paths work and outputs land in the temporary folder):
  each command must exit 0.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from depthlab.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```", re.S | re.M)
RUN_MARK = "runs-on-clone"
REPO_PATH = re.compile(r"^(configs|src/depthlab/assets|benchmarks)/")


def _commands(text: str, marked_only: bool = False) -> list[str]:
    """``depthlab`` command lines of the shell blocks of a Markdown text (continuations joined, comments cut)."""
    out = []
    for lang, info, body in FENCE.findall(text):
        if lang not in ("", "bash", "sh", "shell", "console", "text") or (marked_only and RUN_MARK not in info):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("depthlab "):
                out.append(line)
    return out


def _argv(line: str) -> list[str] | None:
    """The arguments after ``depthlab``; ``[--opt]`` (optional, documented in brackets) kept as ``--opt``;
    None for an elided example (``...``)."""
    args = shlex.split(line, comments=True)[1:]
    if any("..." in a for a in args):
        return None
    return [a[1:-1] if a.startswith("[") and a.endswith("]") else a for a in args]


DOCUMENTED = [(p.relative_to(REPO).as_posix(), line) for p in DOCS for line in _commands(p.read_text())]


def test_commands_were_found():
    assert len(DOCUMENTED) > 30 and any(doc == "README.md" for doc, _ in DOCUMENTED)
    assert any(_commands(p.read_text(), marked_only=True) for p in DOCS)


@pytest.mark.parametrize("doc, line", DOCUMENTED, ids=[f"{d}:{i}" for i, (d, _) in enumerate(DOCUMENTED)])
def test_documented_command_parses(doc, line):
    assert "../shared" not in line, f"{doc}: {line} needs ../shared, which a clone does not have"
    argv = _argv(line)
    if argv is None:
        return
    group = typer.main.get_command(app)
    ctx = group.make_context("depthlab", list(argv), resilient_parsing=True)
    cmd, name, rest = group, None, list(argv)
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        name, rest = rest[0], rest[1:]
        assert name in cmd.commands, f"{doc}: `{line}`: no command {name!r}"
        cmd = cmd.commands[name]
    try:
        cmd.make_context(name or "depthlab", rest, parent=ctx)
    except click.UsageError as e:
        pytest.fail(f"{doc}: `{line}`: {e.format_message()}")
    for a in rest:
        for value in a.split("=", 1)[-1].split(","):
            if REPO_PATH.match(value):
                assert (REPO / value).exists(), f"{doc}: `{line}`: {value} does not exist in the repository"


@pytest.mark.parametrize("doc", [p.relative_to(REPO).as_posix() for p in DOCS
                                 if _commands(p.read_text(), marked_only=True)])
def test_marked_commands_run_on_a_clone(doc, tmp_path, monkeypatch):
    for name in ("src", "configs"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEPTHLAB_NO_PROGRESS", "1")
    for line in _commands((REPO / doc).read_text(), marked_only=True):
        r = CliRunner().invoke(app, _argv(line))
        assert r.exit_code == 0, f"{doc}: `{line}` exited {r.exit_code}:\n{r.output}"
