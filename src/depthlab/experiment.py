"""``run_experiment(spec)``: a grid of training runs, evaluated, measured and compared in one report.

An experiment spec (YAML file or dict; typed by :class:`ExperimentSpec`, which holds every default; an unknown
key or a wrong type is a one-line error naming the file and the dotted key; docs/experiments.md)::

    name: nyu_losses
    base: ../nyu_study.yaml          # training config the runs start from (path relative to this file)
    config: {...}                    # or an inline training config (merged over ``base`` when both)
    overrides: [train.max_epochs=50] # dotted overrides applied to every run
    grid:                            # cartesian product of the axes, in this order
      model.name: [unet, leve]       #   a list  = values of one dotted key (label = the value)
      loss:                          #   a mapping = named presets, each a mapping of dotted overrides
        l1: {loss.terms: {l1: 1.0}}
        berhu: {loss.terms: {berhu: 1.0}}
    runs:                            # extra runs outside the product: {id, set: {dotted: value}}
      - {id: leve_kd_0.25, set: {model.name: leve, distill.epsilon: 0.25}}
    evaluation:
      title: "Figure 2: ..."         # optional headings of the metrics table and the depth-map figure, as a
      figure_title: "Figure 3: ..."  #   study names them (also per extra dataset)
      normalized_errors: false       # true: add l1_norm / mse_norm (L1, MSE on depth / max_depth)
      protocol: none                 # protocol of the test split of the training dataset
      limit: 32                      # test samples (null = all)
      batch_size: 8
      datasets:                      # extra evaluations: {name, dataset, root, split, protocol, limit, kwargs}
        - {name: nyu_real, dataset: folder, root: ..., protocol: nyu_eigen}
    speed: {repeats: 5, warmup: 1}   # CPU latency at batch 1 and the run's data.size
    report: {title: ..., samples: 3, colormap: Spectral_r,
             figures: [{name, kind: sweep|curves|samples, runs, ...}]}   # depthlab.report.spec_figures
    benchmark: {models: [...], datasets: [...], protocol: ...}   # optional zero-shot section (run_benchmark)
    fixtures:                        # real-format dataset trees written before the runs (usually in smoke:)
      nyu: {kind: nyu_mat, n: 8}     #   name -> depthlab.data.fixtures.write_fixture(kind, <out>/fixtures/<name>, ...)
                                     #   "fixture:nyu" anywhere in the spec's strings = that tree's data.root
    smoke:                           # merged over the spec by ``smoke=True``
      overrides: [data.size=[32,32], train.max_steps=2]   # appended to ``overrides``
      grid: {...}                    # any other key replaces the spec's key

Every run trains with :func:`depthlab.training.train` into ``<out>/runs/<run_id>/``, is evaluated
with :func:`depthlab.evaluation.runner.evaluate` (test split + extra datasets) and measured
(parameters, CPU latency). A run whose ``experiment_run.json`` (the finished marker, with the
run's results) exists and whose resolved config is unchanged is reused without training again; a
run that stopped part-way resumes from its ``last.ckpt``. A failing run is recorded with its
one-line error and the grid goes on. Outputs: ``results.json`` (everything), ``results.md`` and the
self-contained ``report.html``.
"""
from __future__ import annotations

import copy
import csv
import datetime as _dt
import hashlib
import itertools
import json
import re
import time
from pathlib import Path
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Sequence, Union

import yaml

from depthlab.config import ConfigError, check_fields, deep_merge, load_yaml
from depthlab.errors import DepthlabError, MissingFileError, first_line, one_line
from depthlab.io import write_json
from depthlab.report.spec_figures import FigureSpec
from depthlab.runtime import torch_threads

__all__ = ["ExperimentError", "ExperimentSpec", "EvaluationSpec", "EvalDataset", "RunSpec", "SpeedSpec",
           "ReportSpec", "BenchmarkSpec", "load_spec", "expand_grid", "with_fixtures", "run_experiment", "read_curves",
           "common_loss_fn", "weights_note", "run_configs"]

MARKER = "experiment_run.json"


class ExperimentError(DepthlabError, ValueError):
    """A bad experiment spec; ``str()`` is one line naming the file and the problem."""


# ------------------------------------------------------------------------------------------ spec schema
# Every default of a spec lives in these dataclasses; depthlab.config.check_fields reads YAML onto them.
InputSize = Union[int, str, list[int], None]  # as depthlab.predictor.parse_input_size reads it, plus "train"
Protocol = Union[str, dict[str, str]]  # a preset (spec) or {metric: P, relative: Q, disparity: R}


@dataclass
class _EvalSettings:
    """What an evaluation shares with the test split's: the split, its size, protocol, input size and headings."""

    split: str | None = None  # None: the run's data.test_split
    limit: int | None = None  # first N samples (None = all)
    protocol: Protocol = "none"
    input_size: InputSize = None  # None = the image's own size; "train" = the run's data.size; "model"; N; [H, W]
    title: str | None = None  # heading of the metrics table, as a study names it
    figure_title: str | None = None  # heading of the depth-map figure


@dataclass
class EvalDataset(_EvalSettings):
    """An extra evaluation (``evaluation.datasets``); dataset, root and kwargs default to the run's ``data``."""

    name: str | None = None  # key in the results (default: the dataset's name)
    dataset: str | None = None
    root: str | None = None  # relative to the experiment file when that path exists
    kwargs: dict[str, Any] | None = None


@dataclass
class EvaluationSpec(_EvalSettings):
    """``evaluation``: the test split of the training dataset (its settings here) plus extra ``datasets``."""

    test: bool = True  # false: no test split (e.g. zero-shot runs scored on the extra datasets only)
    batch_size: int | None = None  # test batches of the per-batch losses (None: the run's data.batch_size)
    common_loss: dict[str, dict[str, Any] | None] | None = None  # one loss for every run: {huber: {delta: 1.0}}
    normalized_errors: bool = False  # add l1_norm / mse_norm (L1, MSE on depth / max_depth)
    untrained: bool = False  # also score the architecture freshly initialised (learning check)
    datasets: list[EvalDataset] = field(default_factory=list)


@dataclass
class RunSpec:
    """An extra run outside the grid: ``set`` = dotted overrides (mapping or ``key=value`` strings)."""

    id: str
    set: dict[str, Any] | list[str] = field(default_factory=dict)
    base: str | None = None  # replaces the spec's base training config for this run
    train: bool = True  # false: evaluate the configured model as it is (pretrained / zero-shot)


@dataclass
class SpeedSpec:
    """``speed``: latency at batch 1 (depthlab.evaluation.speed.measure_latency)."""

    repeats: int = 5
    warmup: int = 1
    device: str = "cpu"
    size: list[int] | None = None  # [H, W]; None: the run's data.size
    backend: str | None = None  # auto | eager | onnx; None: $DEPTHLAB_BACKEND, else auto (depthlab.backends)


@dataclass
class ReportSpec:
    """``report``: options of the HTML / Markdown report and its figures."""

    title: str | None = None  # None: the spec's title, else its name
    samples: int = 3  # depth-map rows per evaluation (0 = none)
    samples_by: str | None = None  # a meta key, e.g. "category": one figure row per category
    colormap: str = "Spectral_r"
    image_label: str | None = None  # depth-map figure (depthlab.report.figures.depth_rows_figure): None = sample names
    truth_label: str = "ground truth"
    unit: str = "depth [m]"  # colour-bar label
    error_maps: bool = True  # false: no error columns
    figures: list[FigureSpec] = field(default_factory=list)


@dataclass
class BenchmarkSpec:
    """``benchmark``: a zero-shot section, the arguments of depthlab.evaluation.benchmark.run_benchmark."""

    models: list[Any]  # names, "name:checkpoint" or {name, label, pretrained, kwargs, checkpoint_path, input_size}
    datasets: list[str]
    roots: dict[str, str | None] = field(default_factory=dict)  # relative to the experiment file
    limit: int | None = None
    split: str = "test"
    device: str = "cpu"
    dataset_presets: dict[str, str] | None = None
    figure_rows: int = 3


@dataclass
class ExperimentSpec:
    """An experiment spec (module docstring; docs/experiments.md)."""

    name: str = "experiment"  # a file's own name (stem) when read from a file
    title: str | None = None
    description: str | None = None
    base: str | None = None  # training config the runs start from, relative to the experiment file
    config: dict[str, Any] | None = None  # inline training config (merged over base when both)
    overrides: list[str] = field(default_factory=list)
    grid: dict[str, list[Any] | dict[str, Any]] = field(default_factory=dict)
    runs: list[RunSpec] = field(default_factory=list)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    speed: SpeedSpec = field(default_factory=SpeedSpec)
    report: ReportSpec = field(default_factory=ReportSpec)
    benchmark: BenchmarkSpec | None = None
    fixtures: dict[str, dict[str, Any]] = field(default_factory=dict)
    output_dir: str | None = None
    threads: int | None = None  # torch intra-op threads while the runs train (None: leave torch's)
    smoke: bool = False  # whether the smoke block was applied


def _spec_from_dict(data: dict, where: str) -> ExperimentSpec:
    """The typed spec of a mapping; a bad key or value is a one-line ExperimentError naming ``where``."""
    try:
        return check_fields(ExperimentSpec, data)
    except ConfigError as e:
        raise ExperimentError(f"{where}: {e}") from None


def _as_spec(spec: ExperimentSpec | dict) -> ExperimentSpec:
    return spec if isinstance(spec, ExperimentSpec) else _spec_from_dict(copy.deepcopy(spec), "<spec>")


def _read_spec(spec_path_or_dict) -> tuple[dict, str, Path]:
    """(the spec's mapping, its name in messages, folder that relative paths start from)."""
    if isinstance(spec_path_or_dict, dict):
        return copy.deepcopy(spec_path_or_dict), "<spec>", Path.cwd()
    path = Path(spec_path_or_dict)
    if not path.is_file():
        raise ExperimentError(f"{path}: experiment file not found")
    try:
        spec = load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ExperimentError(f"{path}: invalid YAML ({first_line(e)})") from None
    if isinstance(spec, dict):
        spec.setdefault("name", path.stem)
    return spec, str(path), path.resolve().parent


def load_spec(spec_path_or_dict, smoke: bool = False) -> tuple[ExperimentSpec, Path]:
    """(typed spec with the smoke block applied when ``smoke``, folder that relative paths start from).

    The ``smoke:`` block is checked in both forms: its ``overrides`` are appended to the spec's, any other
    key replaces the spec's (mappings other than ``grid`` and ``benchmark`` merge key by key)."""
    spec, where, base_dir = _read_spec(spec_path_or_dict)
    if not isinstance(spec, dict):
        raise ExperimentError(f"{where}: an experiment is a mapping, got {type(spec).__name__}")
    smoke_block = spec.pop("smoke", None) or {}
    if not isinstance(smoke_block, dict) or "smoke" in smoke_block:
        raise ExperimentError(f"{where}: smoke: expected a mapping of spec keys (without a smoke block)")
    for key, items in (("overrides", spec.get("overrides")), ("smoke.overrides", smoke_block.get("overrides"))):
        for i, item in enumerate(items or []):
            if not isinstance(item, str) or "=" not in item:
                raise ExperimentError(f"{where}: {key}[{i}] must be a 'key=value' string, got {item!r} "
                                      "(quote overrides whose value is a YAML mapping: \"data.kwargs={n: 8}\")")
    try:
        check_fields(ExperimentSpec, smoke_block, "smoke")
    except ConfigError as e:
        raise ExperimentError(f"{where}: {e}") from None
    if smoke:
        if not smoke_block:
            raise ExperimentError(f"{where}: --smoke needs a 'smoke:' block in the experiment")
        extra = list(smoke_block.pop("overrides", None) or [])
        for k, v in smoke_block.items():
            merge = isinstance(v, dict) and isinstance(spec.get(k), dict) and k not in ("grid", "benchmark")
            spec[k] = deep_merge(spec[k], v) if merge else v
        spec["overrides"] = list(spec.get("overrides") or []) + extra
    return _spec_from_dict({**spec, "smoke": bool(smoke)}, where), base_dir


_FIXTURE_REF = re.compile(r"fixture:([A-Za-z0-9_]+)")


def with_fixtures(spec: ExperimentSpec | dict, folder: Path) -> ExperimentSpec:
    """Write the spec's ``fixtures`` (``name -> {kind, **kwargs}``) under ``folder/<name>`` and replace
    every ``fixture:<name>`` in the spec's strings by the written tree's path (its ``data.root``)."""
    from depthlab.data.fixtures import write_fixture

    spec = _as_spec(spec)
    paths = {}
    for name, item in spec.fixtures.items():
        if "kind" not in item:
            raise ExperimentError(f"fixtures.{name}: needs a 'kind' (one of the depthlab.data.fixtures kinds)")
        kwargs = {k: v for k, v in item.items() if k != "kind"}
        paths[name] = str(write_fixture(item["kind"], folder / name, **kwargs))

    def sub(obj):
        if isinstance(obj, str):
            def path_of(m):
                if m.group(1) not in paths:
                    raise ExperimentError(f"{obj!r} names fixture {m.group(1)!r}, which the spec's fixtures: "
                                          f"does not define (defined: {', '.join(paths) or 'none'})")
                return paths[m.group(1)]
            return _FIXTURE_REF.sub(path_of, obj)
        if isinstance(obj, dict):
            return {k: (v if k == "fixtures" else sub(v)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [sub(v) for v in obj]
        return obj

    return _spec_from_dict(sub(asdict(spec)), "<spec>")


def _override(key: str, value: Any) -> str:
    # JSON is valid YAML flow syntax, so config.apply_overrides parses it back to the same value
    return f"{key}={json.dumps(value)}"


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(text)).strip("_") or "x"


def expand_grid(spec: ExperimentSpec | dict) -> list[dict]:
    """Runs of a spec: ``[{id, labels: {axis: label}, overrides: [dotted=value, ...], base, train}]``.

    ``grid`` axes: a list = values of the dotted key named by the axis; a mapping = named presets
    (each a mapping ``{dotted.key: value}`` or a list of ``key=value`` strings). The cartesian
    product runs in axis order. ``runs`` adds explicit runs ``{id, set: {...}, base: FILE, train:
    bool}`` (``base`` replaces the spec's base config for that run; ``train: false`` evaluates the
    configured model as it is, e.g. a pretrained zero-shot model). Ids are unique.
    """
    spec = _as_spec(spec)
    axes: list[list[tuple[str, str, list[str]]]] = []  # per axis: (axis, label, overrides)
    for axis, options in spec.grid.items():
        if not options:
            raise ExperimentError(f"grid.{axis}: " + ("empty list of values" if isinstance(options, list) else "no presets"))
        if isinstance(options, list):
            axes.append([(axis, _label(v), [_override(axis, v)]) for v in options])
        else:
            axes.append([(axis, str(label), _settings(sets, f"grid.{axis}.{label}")) for label, sets in options.items()])
    runs = []
    if axes:
        for combo in itertools.product(*axes):
            runs.append({"id": "-".join(label for _, label, _ in combo),
                         "labels": {axis: label for axis, label, _ in combo},
                         "overrides": [o for _, _, ov in combo for o in ov], "base": None, "train": True})
    for i, extra in enumerate(spec.runs):
        runs.append({"id": _label(extra.id), "labels": {"run": extra.id},
                     "overrides": _settings(extra.set, f"runs[{i}].set"), "base": extra.base, "train": extra.train})
    if not runs and _has_training(spec):
        runs.append({"id": "base", "labels": {}, "overrides": [], "base": None, "train": True})
    seen: set[str] = set()
    for r in runs:
        if r["id"] in seen:
            raise ExperimentError(f"two runs have the id {r['id']!r}; give the extra runs distinct ids")
        seen.add(r["id"])
    return runs


def run_configs(spec_path_or_dict, smoke: bool = False, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """``{run id: resolved ExperimentConfig}`` of an experiment's runs, as :func:`run_experiment` trains them
    (without the per-run ``name``/``output_dir``); nothing is written or trained, ``fixture:`` names stay
    unresolved (override ``data.root`` to point at a tree)."""
    from depthlab.training.train import resolve_config

    spec, base_dir = load_spec(spec_path_or_dict, smoke=smoke)
    shared = [*spec.overrides, *list(overrides or ())]
    return {run["id"]: resolve_config(_base_source(spec, base_dir, run["base"]), [*shared, *run["overrides"]])
            for run in expand_grid(spec)}


def _has_training(spec: ExperimentSpec) -> bool:
    """Whether a spec describes runs at all (a benchmark-only spec has no base, config, grid or runs)."""
    return bool(spec.base or spec.config or spec.grid or spec.runs)


def _settings(sets, where: str) -> list[str]:
    if isinstance(sets, dict):
        return [_override(k, v) for k, v in sets.items()]
    if isinstance(sets, list) and all(isinstance(s, str) and "=" in s for s in sets):
        return list(sets)
    raise ExperimentError(f"{where}: expected a mapping of dotted keys to values or a list of key=value strings")


def _base_source(spec: ExperimentSpec, base_dir: Path, base: str | None = None):
    """The training config the runs start from: a path (``base``), a dict (``config``) or both merged."""
    base, inline = base or spec.base, spec.config
    if base is None:
        return copy.deepcopy(inline or {})
    path = (base_dir / base) if not Path(base).is_absolute() else Path(base)
    if not path.is_file():
        raise MissingFileError(f"{path}: base training config not found")
    if inline:
        return {"base": str(path.resolve()), **copy.deepcopy(inline)}
    return str(path)


def read_curves(run_dir: Path) -> dict[str, list[list[float]]]:
    """Loss curves from the CSV log: ``train`` / ``val`` = ``[[step, loss], ...]`` as logged, and per epoch
    ``train_epoch`` (the epoch's mean training loss: ``train/epoch_loss``, which the task logs over every step,
    else the mean of the epoch's logged steps) / ``val_epoch`` (the epoch's last validation loss) =
    ``[[epoch, loss], ...]``, epochs counted from 0 as Lightning counts them."""
    path = Path(run_dir) / "logs" / "csv" / "metrics.csv"
    curves: dict[str, list[list[float]]] = {"train": [], "val": [], "train_epoch": [], "val_epoch": []}
    if not path.is_file():
        return curves
    by_epoch: dict[str, dict[int, list[float]]] = {"train": {}, "val": {}, "epoch_loss": {}}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step, epoch = row.get("step"), row.get("epoch")
            for key, name in (("train", "train/loss"), ("val", "val/loss"), ("epoch_loss", "train/epoch_loss")):
                v = row.get(name)
                if v not in (None, "") and step not in (None, "") and key != "epoch_loss":
                    curves[key].append([int(float(step)), float(v)])
                if v not in (None, "") and epoch not in (None, ""):
                    by_epoch[key].setdefault(int(float(epoch)), []).append(float(v))
    exact = by_epoch["epoch_loss"]
    curves["train_epoch"] = [[e, exact[e][-1] if e in exact else sum(v) / len(v)]
                             for e, v in sorted({**by_epoch["train"], **exact}.items())]
    curves["val_epoch"] = [[e, v[-1]] for e, v in sorted(by_epoch["val"].items())]
    return curves


def _config_hash(cfg_dict: dict, spec_part: dict) -> str:
    blob = json.dumps({"config": cfg_dict, "eval": spec_part}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ datasets
class _EvalSet:
    """An evaluation set read lazily (a full test split does not fit in memory: NYU 654 frames are ~3 GB as
    float tensors); only the few samples shown in figures are kept (:meth:`head`)."""

    def __init__(self, ds, n: int, name: str, split: str, by: str | None = None, root: str | None = None):
        self.ds, self.n, self.dataset_name, self.split, self.root = ds, n, name, split, root
        self.by = by  # report.samples_by: "category" = one figure sample per category
        self.failures: dict[str, str] = {}  # unreadable items met by head() (evaluate records the rest)
        self._head: list | None = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.ds[i]

    def head(self, k: int) -> list:
        """The first ``k`` readable samples (read once, shared by every run and the figures); with ``by="category"``
        the first readable sample of each category instead, up to ``k``, in the dataset's ``category_order``
        (else in order of appearance)."""
        if self._head is None or len(self._head) < k:
            self._head, self.failures, seen = [], {}, set()
            for i in range(self.n):
                if len(self._head) >= k:
                    break
                if self.by and hasattr(self.ds, "item_category") and self.ds.item_category(i) in seen:
                    continue  # cheap skip without reading the files
                try:
                    sample = self.ds[i]
                except Exception as e:  # a bad file: recorded, the others still count
                    self.failures[f"#{i}"] = one_line(e)
                    continue
                if self.by:
                    cat = (sample.get("meta") or {}).get(self.by)
                    if cat in seen:
                        continue
                    seen.add(cat)
                self._head.append(sample)
            order = list(getattr(self.ds, "category_order", None) or [])
            if self.by and order:
                self._head.sort(key=lambda s: order.index(c) if (c := s["meta"].get(self.by)) in order else len(order))
        return self._head[:k]


def _load_eval_set(ev: EvalDataset, cfg, base_dir: Path) -> _EvalSet:
    """An evaluation set; without ``ev.dataset`` the run's own dataset (``cfg.data``: root, kwargs too)."""
    from depthlab.data import create_dataset

    name = ev.dataset or cfg.data.dataset
    root = ev.root if ev.dataset or ev.root is not None else cfg.data.root
    if root is not None and not Path(root).is_absolute():
        cand = base_dir / root
        root = str(cand) if cand.exists() else str(root)
    split = ev.split or cfg.data.test_split
    kwargs = dict(ev.kwargs or ({} if ev.dataset else dict(cfg.data.kwargs or {})))
    from depthlab.data import dataset_accepts

    if "size" not in kwargs and dataset_accepts(name, "size"):
        kwargs["size"] = tuple(int(s) for s in cfg.data.size)
    ds = create_dataset(name, root=root, split=split, **kwargs)
    n = len(ds) if ev.limit is None else min(len(ds), ev.limit)
    return _EvalSet(ds, n, name, split, root=root)


# ------------------------------------------------------------------------------------------ one run
def _test_batches(dataset: _EvalSet, batch_size: int):
    """The test split in fixed batches of ``batch_size`` (the same batches for every run; unreadable items are
    left out, evaluate() reports them in ``skipped``)."""
    from depthlab.training.datamodule import collate_samples

    for start in range(0, len(dataset), batch_size):
        items = []
        for i in range(start, min(len(dataset), start + batch_size)):
            try:
                items.append(dataset[i])
            except Exception:
                continue
        if items:
            yield collate_samples(items)


def _resized(image, depth, mask, size):
    """The batch at the training size ``(H, W)`` (bilinear image, nearest depth and mask)."""
    from depthlab.processing import resize_to

    h, w = int(size[0]), int(size[1])
    if image.shape[-2:] == (h, w):
        return image, depth, mask
    return (resize_to(image, (h, w)), resize_to(depth, (h, w), "nearest"),
            resize_to(mask.float(), (h, w), "nearest") > 0.5)


def _test_losses(task, dataset: _EvalSet, batch_size: int, size) -> list[float]:
    """Loss of the run's own objective on each test batch (resized to the training size)."""
    import torch

    losses = []
    task.eval()
    with torch.inference_mode():
        for batch in _test_batches(dataset, batch_size):
            image, depth, mask = _resized(batch["image"], batch["depth"], batch["mask"], size)
            total, _ = task.compute_loss(task(image), {"image": image, "depth": depth, "mask": mask})
            losses.append(float(total))
    return losses


def common_loss_fn(spec):
    """``evaluation.common_loss``, one loss named with its parameters (``{huber: {delta: 1.0}}``), as
    ``(fn(pred, target, mask), label)``: the same yardstick for runs trained on different objectives."""
    from depthlab.losses import build_loss

    if not isinstance(spec, dict) or len(spec) != 1:
        raise ExperimentError(f"evaluation.common_loss: expected one loss with its parameters, e.g. "
                              f"{{huber: {{delta: 1.0}}}}, got {spec!r}")
    (name, params), = spec.items()
    params = dict(params or {})
    fn = build_loss({name: 1.0}, {name: params} if params else None)
    return fn, f"{name}({', '.join(f'{k}={v}' for k, v in params.items())}) [m]"


def _common_losses(task, dataset: _EvalSet, batch_size: int, size, fn) -> list[float]:
    """``fn`` on each test batch, in metres at the ground truth's resolution: the run predicts at its training
    size (``task.predict_metres`` decodes its target encoding), the prediction is resized back bilinearly."""
    import torch

    from depthlab.processing import resize_to

    losses = []
    task.eval()
    with torch.inference_mode():
        for batch in _test_batches(dataset, batch_size):
            depth, mask = batch["depth"].float(), batch["mask"].bool() & (batch["depth"] > 0)
            image, _, _ = _resized(batch["image"], depth, mask, size)
            pred = resize_to(task.predict_metres(image), depth.shape)
            losses.append(float(fn(pred, depth, mask)))
    return losses


def weights_note(cfg) -> str:
    """How the run's network started, for the report: pretrained weights of the whole model and/or an ImageNet
    encoder, or random initialisation (a study that used pretrained weights then says the run went without)."""
    m, kw = cfg.model, dict(cfg.model.kwargs or {})
    parts = []
    if m.checkpoint_path:
        parts.append(f"weights from {m.checkpoint_path}")
    elif m.pretrained:
        parts.append("pretrained weights (model.pretrained=true)")
    if kw.get("encoder_checkpoint"):
        parts.append(f"ImageNet encoder from {kw['encoder_checkpoint']}")
    elif kw.get("encoder_pretrained"):
        parts.append("ImageNet encoder (model.kwargs.encoder_pretrained=true)")
    elif "encoder_pretrained" in kw:
        parts.append("encoder from random weights (model.kwargs.encoder_pretrained=false)")
    if not (m.pretrained or m.checkpoint_path):
        parts.append("no pretrained model weights" + ("" if parts else " (random initialisation)"))
    return "; ".join(parts)


def run_domain(cfg, model, ds: _EvalSet, trained: bool) -> str | None:
    """How a run's score on evaluation set ``ds`` relates to the data its weights saw: ``"in-domain"`` when
    they saw images of the set's dataset family -- the pretrained weights' ``WeightsInfo.train_datasets``
    (a ZoeDepth scored on NYU) or the dataset the run trained on --, ``"zero-shot"`` when they did not,
    None when the set's family is unknown (e.g. aerial tiles). Random weights saw nothing."""
    from depthlab.evaluation.benchmark import dataset_family, in_domain

    family = dataset_family(ds.dataset_name, ds.root)
    if family is None:
        return None
    pretrained = bool(cfg.model.pretrained or cfg.model.checkpoint_path)
    seen = (pretrained and in_domain(model, ds.dataset_name, ds.root)) or (
        trained and dataset_family(cfg.data.dataset, cfg.data.root) == family)
    return "in-domain" if seen else "zero-shot"


def _test_split_losses(cfg, model, eval_sets: dict, ev_spec: EvaluationSpec) -> tuple[list[float], dict[str, Any]]:
    """(the run's own objective per test batch, ``{"label", "batches"}`` of ``evaluation.common_loss`` or ``{}``)."""
    from depthlab.training.task import DepthTask

    if "test" not in eval_sets:
        return [], {}
    task, ds = DepthTask(cfg, model=model), eval_sets["test"][0]
    bs = ev_spec.batch_size or cfg.data.batch_size
    own = _test_losses(task, ds, bs, cfg.data.size)
    if not ev_spec.common_loss:
        return own, {}
    fn, label = common_loss_fn(ev_spec.common_loss)
    return own, {"label": label, "batches": _common_losses(task, ds, bs, cfg.data.size, fn)}


def _input_size(input_size, cfg):
    """The Predictor ``input_size`` of an evaluation: as the Predictor takes it (``None`` = the image's own
    size, ``"model"`` / ``"auto"`` = the size the weights were trained at when they declare one, an int or
    ``[H, W]``), plus ``"train"`` = the run's ``data.size``. The output is resized back to the image.
    """
    from depthlab.predictor import parse_input_size

    if input_size == "train":
        return tuple(int(v) for v in cfg.data.size)
    size = parse_input_size(input_size, "evaluate input_size")
    return "auto" if size == "model" else size  # "model" in a spec: the Predictor's "auto" rule, without failing


def _run_protocol(protocol, model):
    """An evaluation's protocol; ``{metric: P, relative: Q, disparity: R}`` picks by the model's output kind."""
    if isinstance(protocol, dict):
        kind = getattr(getattr(model, "depth_info", None), "output_kind", "metric")
        if kind not in protocol:
            raise ExperimentError(f"evaluation protocol has no entry for output kind {kind!r}: {protocol}")
        return protocol[kind]
    return protocol


def _predict_samples(model, samples: list, run_dir: Path, key: str, protocol, input_size=None) -> list[str]:
    """Predict the chosen figure samples (metres, clipped as the protocol clips them for scoring) and
    store them as ``.npy`` in the run directory."""
    import numpy as np

    from depthlab.evaluation.protocols import get_protocol
    from depthlab.io import write_npy
    from depthlab.predictor import Predictor

    pred = Predictor(model, device="cpu", input_size=input_size)
    proto = get_protocol(protocol)
    out = []
    folder = run_dir / "samples" / key
    folder.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(samples):
        depth = proto.clip(pred.predict_tensor(s["image"].unsqueeze(0)))[0, 0].cpu().numpy().astype(np.float32)
        path = folder / f"{i}.npy"
        write_npy(path, depth)
        out.append(str(path.relative_to(run_dir)))
    return out


def _run_one(run: dict, spec: ExperimentSpec, base_source, base_overrides: list[str], out_dir: Path, eval_sets: dict,
             base_dir: Path, progress) -> dict:
    """Train (or reuse), evaluate and measure one run; never raises (a failure is recorded)."""
    from depthlab.config import config_to_dict
    from depthlab.training.train import resolve_config

    runs_dir = out_dir / "runs"
    run_dir = runs_dir / run["id"]
    record: dict[str, Any] = {"id": run["id"], "labels": run["labels"], "overrides": run["overrides"],
                              "status": "failed", "error": None, "run_dir": str(run_dir.relative_to(out_dir))}
    t0 = time.perf_counter()
    try:
        overrides = [*base_overrides, *run["overrides"], _override("name", run["id"]),
                     _override("output_dir", str(runs_dir))]
        source = _base_source(spec, base_dir, run["base"]) if run["base"] else base_source
        cfg = resolve_config(source, overrides)
        cfg_dict = config_to_dict(cfg)
        record["config"] = cfg_dict
        # what a finished run's record depends on (the colormap or title only change the report)
        fingerprint = _config_hash(cfg_dict, {"evaluation": asdict(spec.evaluation), "speed": asdict(spec.speed),
                                              "samples": spec.report.samples, "train": run["train"]})
        marker = run_dir / MARKER
        if marker.is_file():
            try:
                done = json.loads(marker.read_text())
            except (OSError, json.JSONDecodeError):
                done = {}
            if done.get("fingerprint") == fingerprint and done.get("status") == "ok":
                done["reused"] = True
                return done
        record["trained"] = run["train"]
        record.update(_train_and_measure(cfg, run_dir, spec, eval_sets, progress, do_train=run["train"]))
        record.update(status="ok", fingerprint=fingerprint, reused=False)
        record["seconds"] = round(time.perf_counter() - t0, 2)
        write_json(marker, record)
    except Exception as e:  # one failed run must not stop the grid
        record["error"] = one_line(e)
        record["seconds"] = round(time.perf_counter() - t0, 2)
    return record


# a run may continue from its last checkpoint when only its length changed; any other change retrains it
RESUMABLE_CHANGES = {"train.max_steps", "train.max_epochs"}


def _can_resume(run_dir: Path, cfg) -> bool:
    """True when ``run_dir`` holds a checkpoint of the same run (config equal up to its length). A run whose
    config changed otherwise (learning rate, loss, data...) has its old checkpoints removed: resuming them would
    report the old weights under the new config."""
    import shutil

    from depthlab.config import config_diff, load_config

    ckpt_dir = run_dir / "checkpoints"
    if not (ckpt_dir / "last.ckpt").is_file():
        return False
    try:
        changed = config_diff(load_config(str(run_dir / "config.yaml")), cfg)
    except Exception:  # no readable config beside the checkpoint: do not trust it
        changed = {"config.yaml"}
    if changed <= RESUMABLE_CHANGES:
        return True
    shutil.rmtree(ckpt_dir)
    return False


def _train_and_measure(cfg, run_dir: Path, spec: ExperimentSpec, eval_sets: dict, progress, do_train: bool = True) -> dict:
    import torch

    from depthlab.checkpoint import load_checkpoint
    from depthlab.evaluation.runner import evaluate
    from depthlab.evaluation.speed import measure_latency
    from depthlab.training.task import DepthTask
    from depthlab.training.train import prepare_run_dir, train

    t0 = time.perf_counter()
    if do_train:
        resume = _can_resume(run_dir, cfg)
        progress(f"train {cfg.name}" + (" (resume)" if resume else ""))
        result = train(cfg, (), resume=resume, progress_lines=False)  # the grid shows its own progress
        ckpt = result.best_checkpoint or result.last_checkpoint
        validation, global_step = result.metrics, result.global_step
        if ckpt is None:
            raise RuntimeError(f"{run_dir}: training wrote no checkpoint")
        model = load_checkpoint(ckpt)
    else:  # evaluate the configured model as it is (pretrained / zero-shot): built once, its weights not copied
        progress(f"load {cfg.name}")
        prepare_run_dir(cfg, resume=False)  # config.yaml + git commit, as for a trained run
        ckpt, model = None, DepthTask(cfg).model
        validation, global_step = {}, 0
    train_seconds = time.perf_counter() - t0
    ev_spec = spec.evaluation
    metrics, protocols, per_category, skipped, sample_preds, domains = {}, {}, {}, {}, {}, {}
    for key, (ds, protocol, n_show, input_size) in eval_sets.items():
        progress(f"evaluate {cfg.name} on {key}")
        size = _input_size(input_size, cfg)
        res = evaluate(ds, model=model, protocol=_run_protocol(protocol, model), device="cpu", progress=False,
                       input_size=size)
        metrics[key] = res["summary"]
        if ev_spec.normalized_errors:  # a study reporting L1 / MSE on depth / max_depth in [0, 1]
            from depthlab.metrics import normalized_errors

            metrics[key].update(normalized_errors(res["summary"], model.depth_info.max_depth))
        protocols[key] = res["protocol_description"]
        domains[key] = run_domain(cfg, model, ds, do_train)
        skipped[key] = {**getattr(ds, "failures", {}), **res["skipped"]}
        if res.get("per_category"):  # evaluate's breakdown by meta["category"], averaged like the summary
            per_category[key] = res["per_category"]
        if n_show:
            sample_preds[key] = _predict_samples(model, ds.head(n_show), run_dir, key,
                                                 _run_protocol(protocol, model), size)
    untrained = None
    if "test" in eval_sets and ev_spec.untrained:
        # the same architecture freshly initialised with the run's seed: did training teach it anything?
        import lightning as L

        L.seed_everything(int(cfg.train.seed), verbose=False)
        fresh = DepthTask(cfg).model
        progress(f"evaluate untrained {cfg.name}")
        # eager: random weights evaluated once are not worth an ONNX export (and a place in the export cache)
        untrained = evaluate(eval_sets["test"][0], model=fresh, protocol=_run_protocol(eval_sets["test"][1], fresh),
                             device="cpu", input_size=_input_size(eval_sets["test"][3], cfg),
                             backend="eager")["summary"]
    test_loss, common = _test_split_losses(cfg, model, eval_sets, ev_spec)
    speed = spec.speed
    progress(f"measure {cfg.name}")
    with torch.inference_mode():
        sp = measure_latency(model, speed.size or cfg.data.size, repeats=speed.repeats, warmup=speed.warmup,
                             device=speed.device,
                             backend=speed.backend)
    return {"metrics": metrics, "untrained": untrained, "protocols": protocols, "domains": domains,
            "per_category": per_category, "skipped_images": skipped,
            "sample_predictions": sample_preds, "test_loss": test_loss, "common_test_loss": common,
            "weights": weights_note(cfg), "curves": read_curves(run_dir),
            "validation": validation, "global_step": global_step, "train_seconds": round(train_seconds, 2),
            "checkpoint": str(Path(ckpt).relative_to(run_dir)) if ckpt else None, **sp}


# ------------------------------------------------------------------------------------------ experiment
def _benchmark_section(spec: ExperimentSpec, out_dir: Path, base_dir: Path) -> dict | None:
    """Zero-shot benchmark section through :func:`depthlab.evaluation.benchmark.run_benchmark`.

    ``benchmark: {models, datasets, roots: {dataset: path}, limit, split, dataset_presets, figure_rows}``;
    roots are relative to the experiment file. Returns a report section: one table per dataset
    (metrics under each model's paper protocol, params, latency), the comparison figures, skipped models.
    """
    bench = spec.benchmark
    if not bench:
        return None
    from depthlab.evaluation.benchmark import domain_label as _domain, run_benchmark

    title = "Zero-shot benchmark"
    kwargs = {k: v for k, v in asdict(bench).items() if k not in ("models", "datasets", "roots")}
    roots = {}
    for ds, root in bench.roots.items():
        cand = base_dir / root if root is not None and not Path(root).is_absolute() else root
        roots[ds] = str(cand) if cand is not None and Path(cand).exists() else root
    try:
        res = run_benchmark(bench.models, bench.datasets, out_dir / "benchmark", roots=roots or None, **kwargs)
    except Exception as e:
        return {"title": title, "status": "failed", "message": one_line(e)}
    tables, figures, captions = [], [], []
    for ds in res["settings"]["datasets"]:
        rows = []
        described = {}
        for r in res["rows"]:
            if r["dataset"] != ds:
                continue
            if r.get("status") == "failed":
                rows.append({"model": r["model"], "status": "failed", "error": r.get("error")})
                continue
            described[r["protocol"]] = r.get("protocol_description", "")
            rows.append({"model": r["model"], "status": "ok", "domain": _domain(r, markdown=False),
                         **{k: r.get(k) for k in ("abs_rel", "rmse", "delta1", "n_images", "params", "latency_ms")}})
        tables.append({"id": f"benchmark-{_label(ds)}", "first": "model", "rows": rows, "title": f"Dataset {ds}",
                       "columns": ["domain", "abs_rel", "rmse", "delta1", "n_images", "params", "latency_ms"],
                       "caption": f"dataset {ds}; " + "; ".join(f"protocol {n}: {d}" for n, d in described.items())})
        fig = (res.get("figures") or {}).get(ds) or {}
        if fig.get("path") and Path(fig["path"]).is_file():
            figures.append(str(Path(fig["path"]).resolve().relative_to(out_dir.resolve())))
            captions.append(f"Dataset {ds}: RGB | ground truth | each model, aligned as scored")
    skipped = "; ".join(f"{m}: {why}" for m, why in (res.get("skipped_models") or {}).items())
    return {"title": title, "status": "ok", "tables": tables, "figures": figures, "figure_captions": captions,
            "message": ("Every model under the paper protocol of its output kind (depthlab.evaluation.benchmark); "
                        "latency = forward time per image." + (f" Skipped: {skipped}" if skipped else "")),
            "result_file": str((out_dir / "benchmark" / "results.json").relative_to(out_dir))}


def run_experiment(spec_path_or_dict, out_dir=None, smoke: bool = False, overrides: Iterable[str] = (),
                   console=None, quiet: bool = False, sections_before: Sequence[dict] = ()) -> dict:
    """Run (or resume) an experiment grid and write ``results.json``, ``results.md`` and ``report.html``.

    Args:
        spec_path_or_dict: experiment YAML path or dict (schema: module docstring, docs/experiments.md).
        out_dir: output folder (default ``spec.output_dir`` or ``outputs/experiments/<name>[_smoke]``).
        smoke: apply the spec's ``smoke:`` block (tiny data, few steps, reduced grid).
        overrides: dotted training overrides applied to every run (after the spec's own).
        console: a rich Console for progress (default: stderr); ``quiet`` hides progress.
        sections_before: report sections (``{"title", "html", "markdown", ...}``) placed before the grid's
            results, e.g. the demo's real-data evaluation; stored in ``results["sections_before"]``.

    Returns the results dict (also in ``results.json``): ``runs`` (one record per run: status,
    error, metrics per evaluation, per-category metrics, params, latency, curves, test losses,
    resolved config), ``evaluations`` (name, dataset, split, protocol and its settings),
    ``figures`` and ``sections``.
    """
    from rich.console import Console

    spec, base_dir = load_spec(spec_path_or_dict, smoke=smoke)
    name = spec.name
    out = Path(out_dir or spec.output_dir or Path("outputs/experiments") / (name + ("_smoke" if smoke else "")))
    out.mkdir(parents=True, exist_ok=True)
    spec = with_fixtures(spec, out / "fixtures")
    console = console or Console(stderr=True)
    results = _new_results(spec, name, smoke)
    t_start = time.perf_counter()
    planned = expand_grid(spec)
    results["planned_runs"] = [r["id"] for r in planned]
    try:
        base_source = _base_source(spec, base_dir)
        runs = planned
    except FileNotFoundError as e:  # e.g. a study whose training config is not in this checkout
        base_source, runs = None, []
        results.update(status="skipped", message=f"{e}; the training runs of this experiment are skipped")
        console.print(f"[yellow]skipped[/yellow]: {results['message']}", highlight=False, soft_wrap=True)
    base_overrides = [*spec.overrides, *list(overrides or ())]

    eval_sets: dict[str, tuple] = {}
    if runs:
        try:
            eval_sets = _eval_sets(spec, runs[0], base_source, base_overrides, base_dir, results, console)
        except Exception as e:
            results.update(status="failed", message=f"evaluation set-up failed: {one_line(e)}")
            runs = []
    if runs:
        _run_grid(runs, spec, base_source, base_overrides, out, eval_sets, base_dir, results, console, quiet)
    _write_outputs(results, spec, out, base_dir, eval_sets, sections_before, t_start)
    return results


def _new_results(spec: ExperimentSpec, name: str, smoke: bool) -> dict[str, Any]:
    """The results dict before any run: spec, report options (title, samples, colormap, ...), empty lists."""
    from depthlab import __version__

    report_opts = {**asdict(spec.report), "title": spec.report.title or spec.title or name}
    if smoke:  # the title names the study; a smoke run is not its results
        report_opts["title"] = f"Smoke run (tiny data and models, not the study's results): {report_opts['title']}"
    return {
        "name": name, "title": report_opts["title"], "description": spec.description, "smoke": bool(smoke),
        "status": "ok", "message": None, "spec": asdict(spec), "report": report_opts, "runs": [], "evaluations": [],
        "figures": {}, "sections": [], "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "depthlab_version": __version__,
    }


def _eval_sets(spec: ExperimentSpec, first_run: dict, base_source, base_overrides: list[str], base_dir: Path, results: dict,
               console) -> dict[str, tuple]:
    """key -> (dataset, protocol spec, figure samples, input size) of the test split and the extra datasets
    (resolved with the first run's config); each is described in ``results["evaluations"]``, an unavailable
    one as skipped."""
    from depthlab.evaluation.protocols import get_protocol
    from depthlab.training.train import resolve_config

    ev = spec.evaluation
    n_show = spec.report.samples
    first = _base_source(spec, base_dir, first_run["base"]) if first_run["base"] else base_source
    cfg0 = resolve_config(first, [*base_overrides, *first_run["overrides"]])
    test = EvalDataset(name="test", **{f.name: getattr(ev, f.name) for f in fields(_EvalSettings)})
    eval_sets: dict[str, tuple] = {}
    for item in ([test] if ev.test else []) + ev.datasets:
        key = _label(item.name or item.dataset)
        try:
            ds = _load_eval_set(item, cfg0, base_dir)
            ds.by = spec.report.samples_by
            p = item.protocol
            proto = get_protocol(p if isinstance(p, str) else p.get("metric", "none"))
        except Exception as e:  # an unavailable extra dataset: say so, keep the rest
            results["evaluations"].append({"key": key, "status": "skipped", "message": one_line(e)})
            console.print(f"[yellow]evaluation {key} skipped[/yellow]: {one_line(e)}", highlight=False,
                          soft_wrap=True)
            continue
        eval_sets[key] = (ds, item.protocol, n_show, item.input_size)
        results["evaluations"].append({
            "key": key, "status": "ok", "dataset": ds.dataset_name, "split": ds.split, "n_samples": len(ds),
            "protocol": proto.name, "protocol_spec": item.protocol,
            "protocol_description": proto.describe(), "protocol_settings": proto.to_dict(),
            "input_size": item.input_size, "read_failures": ds.failures,
            "title": item.title, "figure_title": item.figure_title})
    return eval_sets


def _run_grid(runs: list[dict], spec: ExperimentSpec, base_source, base_overrides: list[str], out: Path, eval_sets: dict,
              base_dir: Path, results: dict, console, quiet: bool) -> None:
    """Every run in order under a progress bar; records appended to ``results["runs"]``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    name = results["name"]
    columns = (TextColumn("[bold]experiment[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with torch_threads(spec.threads), Progress(*columns, console=console, transient=False,
                                                       disable=quiet) as bar:
        task = bar.add_task(name, total=len(runs))
        for run in runs:
            record = _run_one(run, spec, base_source, base_overrides, out, eval_sets, base_dir,
                              lambda msg: bar.update(task, description=f"{name}: {msg}"))
            results["runs"].append(record)
            if record["status"] != "ok":
                console.print(f"[red]run {record['id']} failed[/red]: {record['error']}", highlight=False,
                              soft_wrap=True)
            bar.advance(task)


def _write_outputs(results: dict, spec: ExperimentSpec, out: Path, base_dir: Path, eval_sets: dict,
                   sections_before: Sequence[dict], t_start: float) -> None:
    """Benchmark and figure sections, figures, then results.json, results.md and report.html."""
    from depthlab.report.figures import experiment_figures
    from depthlab.report.html import write_markdown, write_report
    from depthlab.report.spec_figures import figure_sections  # report.figures: sweeps, per-epoch curves

    section = _benchmark_section(spec, out, base_dir)
    if section:
        results["sections"].append(section)
    results["sections"].extend(figure_sections(results, out, eval_sets))
    # figures for the report (PNG files next to results.json; the HTML embeds them)
    results["figures"] = experiment_figures(results, out, eval_sets)
    results["seconds"] = round(time.perf_counter() - t_start, 2)
    results["report_path"] = str(out / "report.html")
    if sections_before:
        results["sections_before"] = list(sections_before)
    write_json(out / "results.json", results)
    write_markdown(results, out / "results.md")
    write_report(results, out / "report.html", base=out)
