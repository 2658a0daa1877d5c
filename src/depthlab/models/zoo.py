"""The model zoo as a table: one row per registered model (``depthlab models``).

Columns: name, family, parameters, GMACs for a 480x640 image (at the network input the Predictor feeds:
padded up to the model's ``multiple_of``, or an adapter's own processing size; counted with
``depthlab.evaluation.speed.count_macs``: attention included, MACs = FLOPs / 2), output
kind, training input size / ``multiple_of``, whether pretrained weights are available locally (bundled
file or already in the Hugging Face / torch.hub cache) and the weights' licence.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from depthlab.errors import one_line
from depthlab.evaluation.speed import COST_SIZE, count_macs, count_params, network_size, padded_size

log = logging.getLogger(__name__)


def weights_available_locally(info) -> bool:
    """True if ``info``'s pretrained weights are on disk: bundled/local file, or in the hub / torch.hub cache."""
    from depthlab.models.weights import resolve_local

    if resolve_local(info.local_file) is not None:
        return True
    if info.hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            hit = try_to_load_from_cache(info.hub_id, info.hub_filename or "model.safetensors")
            if isinstance(hit, str) and Path(hit).exists():
                return True
        except Exception:  # a malformed repo id is simply "not cached"
            pass
    if info.url:
        from torch.hub import get_dir

        if (Path(get_dir()) / "checkpoints" / Path(info.url).name).exists():
            return True
    return False


def _cost(name: str, info) -> tuple[int, float, tuple[int, int]]:
    """(params, MACs, network input size) of a randomly initialised model for a ``COST_SIZE`` image.
    Tries the meta device first (no memory, no compute)."""
    from depthlab.models.registry import create_model

    def cost(model, device):
        return (count_params(model), count_macs(model, multiple_of=info.multiple_of, device=device),
                network_size(model, COST_SIZE, info.multiple_of))

    try:
        with torch.device("meta"):
            model = create_model(name)
        return cost(model, "meta")
    except Exception as e:  # some models need real tensors (data-dependent code, weights read at init)
        log.debug("meta-device costing of %s failed (%s); using real tensors", name, e)
    return cost(create_model(name), "cpu")


def zoo_rows(pattern: str = "*", with_cost: bool = True, progress=None) -> list[dict[str, Any]]:
    """One dict per registered model matching ``pattern`` (shell-style).

    ``with_cost`` builds every network (randomly initialised) to count its parameters and MACs: seconds to
    minutes for the whole zoo; ``progress(i, n, name)`` is called before each model is costed."""
    from depthlab.models.registry import get_entry, list_models

    rows = []
    names = list_models(pattern)
    for i, name in enumerate(names):
        entry = get_entry(name)
        info = entry.info
        row: dict[str, Any] = {
            "name": name,
            "family": entry.family.rsplit(".", 1)[-1],
            "params": None,
            "gmacs": None,
            "cost_size": list(padded_size(COST_SIZE, info.multiple_of)),
            "output_kind": info.output_kind,
            "target_encoding": info.target_encoding,
            "input_size": list(info.input_size) if info.input_size else None,
            "multiple_of": info.multiple_of,
            "has_pretrained": info.has_pretrained,
            "weights_local": weights_available_locally(info),
            "license": info.license,
            "description": entry.description,
            "error": None,
        }
        if with_cost:
            if progress is not None:
                progress(i, len(names), name)
            try:
                params, macs, size = _cost(name, info)
                row["params"], row["gmacs"], row["cost_size"] = params, macs / 1e9, list(size)
            except Exception as e:  # an optional dependency missing, etc.: keep the row, say why
                row["error"] = one_line(e)
        rows.append(row)
    return rows


def _fmt_params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} M"


def _fmt_gmacs(g: float | None) -> str:
    return "-" if g is None else f"{g:.2f}"


def _fmt_size(row) -> str:
    size = "x".join(map(str, row["input_size"])) if row["input_size"] else "any"
    return f"{size}/{row['multiple_of']}"


def _short_license(text: str, n: int = 40) -> str:
    first = text.split(";")[0].split(" (")[0].strip()
    return first if len(first) <= n else first[: n - 1] + "…"


def _weights_cell(row) -> str:
    if not row["has_pretrained"]:
        return "n/a"
    return "yes" if row["weights_local"] else "no"


COLUMNS = ("model", "params", "GMACs@480x640", "output", "input / multiple_of", "weights local", "licence")
LEGEND = ("GMACs: one forward pass for a 480x640 image, attention included, MACs = FLOPs/2; * = at the network "
          "input the Predictor feeds for it: padded up to the model's multiple_of, or an "
          "adapter's own processing size (e.g. 518x686 for Depth Anything). "
          "input/multiple_of: training resolution / required divisor. weights local: yes = pretrained file on disk "
          "(bundled or cached), no = downloadable, n/a = none published.")
SHORT_COLUMNS = ("model", "params", "GMACs", "output", "input/mult.", "weights", "licence")


def _cells(row) -> list[str]:
    gm = _fmt_gmacs(row["gmacs"])
    if row["gmacs"] is not None and tuple(row["cost_size"]) != COST_SIZE:
        gm += "*"  # counted at another network size (see LEGEND)
    return [row["name"], _fmt_params(row["params"]), gm, row["output_kind"], _fmt_size(row), _weights_cell(row),
            _short_license(row["license"])]


def zoo_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "/").replace("*", r"\*") for c in _cells(r)) + " |")
    lines += ["", LEGEND]
    notes = [f"{r['name']}: {r['error']}" for r in rows if r.get("error")]
    if notes:
        lines += ["", "Not costed: " + "; ".join(notes)]
    return "\n".join(lines) + "\n"


def _costed_rows(pattern: str, status_console) -> list[dict[str, Any]]:
    """:func:`zoo_rows` with costs, showing which model is being built (a progress bar on a terminal, else
    one line per model on ``status_console``: costing the whole zoo takes minutes)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not status_console.is_terminal:
        return zoo_rows(pattern, with_cost=True, progress=lambda i, n, name: status_console.print(
            f"costing {i + 1}/{n}: {name}", highlight=False, markup=False))
    columns = (TextColumn("costing"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
               TimeElapsedColumn())
    with Progress(*columns, console=status_console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def step(i, n, name):
            bar.update(task, completed=i, total=n, description=name)

        return zoo_rows(pattern, with_cost=True, progress=step)


def print_zoo_table(pattern: str = "*", with_cost: bool = False, console=None,
                    status_console=None) -> list[dict[str, Any]]:
    """Print the zoo as a rich table; returns the rows. ``with_cost`` adds params and GMACs (builds every
    network; progress goes to ``status_console``, default stderr)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from depthlab.report.terminal import print_table

    console = console or Console()
    if with_cost:
        rows = _costed_rows(pattern, status_console or Console(stderr=True))
    else:
        rows = zoo_rows(pattern, with_cost=False)
    if not rows:
        console.print(f"no registered model matches {pattern!r}")
        return rows
    n = len(rows)
    table = Table(title=f"depthlab model zoo ({n} model{'' if n == 1 else 's'})", box=box.SIMPLE_HEAD)
    shown = [i for i, c in enumerate(SHORT_COLUMNS) if with_cost or c not in ("params", "GMACs")]
    for i in shown:
        c = SHORT_COLUMNS[i]
        table.add_column(c, justify="right" if c in ("params", "GMACs") else "left",
                         no_wrap=c in ("model", "params", "GMACs", "weights"), overflow="fold")
    for r in rows:
        cells = _cells(r)
        table.add_row(*[cells[i] for i in shown])
    print_table(console, table)
    for r in rows:
        if r["error"]:
            console.print(f"[yellow]{r['name']}[/yellow]: not costed ({r['error']})", highlight=False)
    if with_cost:
        console.print(LEGEND, highlight=False)
    else:
        console.print("params and GMACs: `depthlab models --cost` (builds every network: minutes for the "
                      "whole zoo, seconds for one model)", highlight=False, markup=False)
    return rows


__all__ = ["zoo_rows", "print_zoo_table", "zoo_markdown", "weights_available_locally"]
