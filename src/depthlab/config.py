"""Experiment configuration: YAML files mapped onto typed dataclasses, with dotted overrides.

A YAML experiment file has the sections of :class:`ExperimentConfig` (``model``, ``data``,
``loss``, ``optim``, ``train``, ``distill``) plus ``name`` and ``output_dir``; every key is
optional and falls back to the defaults below (a small CPU run on synthetic data). A file may
start from other files with ``base: other.yaml`` (or a list, or ``defaults: [...]``), paths
relative to the file; the bases are merged in order, then the file itself on top (mappings merge
key by key, lists and scalars are replaced).

Overrides use dotted paths and YAML values, e.g.::

    load_config("configs/nyu_unet.yaml", ["optim.lr=5e-5", "data.size=[128,128]",
                                          "model.kwargs.batch_norm=false", "loss.terms.l1=0.1"])

Values are type-checked against the dataclass fields (int -> float is accepted, ``"1e-4"`` is
read as a float where a float is expected, a string where an int is expected is an error); free
``dict`` fields (``model.kwargs``, ``data.kwargs``, ``loss.terms``, ...) accept new keys. Every
error is a one-line :class:`ConfigError` naming the key, with the valid keys and close matches.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from depthlab.errors import DepthlabError

__all__ = [
    "ConfigError", "ModelConfig", "DataConfig", "LossConfig", "OptimConfig", "TrainConfig",
    "DistillConfig", "ExperimentConfig", "load_config", "apply_overrides", "config_to_dict",
    "config_from_dict", "save_config", "validate_config",
]


class ConfigError(DepthlabError, ValueError):
    """A bad configuration value or key; ``str()`` is one line that names the key."""


# ----------------------------------------------------------------------------------------------
# schema


@dataclass
class ModelConfig:
    """Which network to build: ``create_model(name, pretrained, checkpoint_path, **kwargs)``."""

    name: str = "unet"
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    checkpoint_path: str | None = None


@dataclass
class DataConfig:
    """Dataset, splits, input size ``[H, W]`` and loader settings.

    ``train_transforms``/``val_transforms`` are lists read by
    ``depthlab.data.transforms.build_transforms``: each entry a transform name or a one-key
    mapping ``{name: kwargs}`` (``- random_crop: {size: [224, 304]}``). ``target_encoding`` and
    ``max_depth`` (metres) define what the network regresses (see ``depthlab.types``).
    ``kwargs`` go to the dataset constructor (e.g. ``n`` for ``synthetic``). ``limit_train``/
    ``limit_val`` cap the number of samples (``None`` = all).
    """

    dataset: str = "synthetic"
    root: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"  # None: no validation (the last weights are exported as best)
    test_split: str = "test"
    size: list[int] = field(default_factory=lambda: [128, 128])
    batch_size: int = 8
    num_workers: int = 0
    train_transforms: list[Any] = field(default_factory=lambda: ["random_horizontal_flip", "color_jitter"])
    val_transforms: list[Any] = field(default_factory=list)
    target_encoding: Literal["depth", "inverse", "normalized"] = "depth"
    max_depth: float = 10.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    limit_train: int | None = None
    limit_val: int | None = None


@dataclass
class LossConfig:
    """What ``depthlab.losses.build_loss`` takes: ``terms`` (``{name: weight}`` or a list of
    ``{name, weight, params, key}``) and per-name keyword ``params`` (``{"ssim": {"window_size": 7}}``).
    """

    terms: dict[str, float] | list[dict[str, Any]] = field(default_factory=lambda: {"l1": 1.0})
    params: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class OptimConfig:
    """Optimizer (``adam``, ``adamw``, or ``sgd`` with ``momentum``) and learning-rate schedule.

    ``encoder_lr`` (``None`` = ``lr``) applies to the encoder parameters. Schedulers: ``step``
    (``gamma`` every ``step_size`` epochs), ``cosine`` (to ``min_lr`` over the run), ``poly``
    (``(1 - t)^power`` to ``min_lr``) or ``None``; ``warmup_steps`` of linear warm-up first.
    """

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-4
    momentum: float = 0.9  # sgd only
    encoder_lr: float | None = None
    weight_decay: float = 0.0
    scheduler: Literal["step", "cosine", "poly"] | None = None
    step_size: int = 10
    gamma: float = 0.1
    power: float = 0.9
    warmup_steps: int = 0
    min_lr: float = 0.0


@dataclass
class TrainConfig:
    """Lightning ``Trainer`` settings and the run's bookkeeping.

    ``val_check_interval``: an int counts training batches, a float is a fraction of an epoch.
    ``protocol`` names the evaluation protocol used for validation metrics (``none`` = raw).
    ``freeze_encoder_epochs`` keeps the encoder frozen for that many first epochs.
    """

    max_epochs: int = 1
    max_steps: int = -1
    precision: str = "32-true"
    gradient_clip_val: float | None = None
    seed: int = 0
    val_every_n_epochs: int = 1
    val_check_interval: int | float | None = None
    monitor: str = "val/rmse"
    monitor_mode: Literal["min", "max"] = "min"
    freeze_encoder_epochs: int = 0
    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    num_nodes: int = 1
    deterministic: bool = False
    log_every_n_steps: int = 10
    loggers: list[str] = field(default_factory=lambda: ["csv", "tensorboard"])
    protocol: str = "none"
    checkpoint_every_n_steps: int | None = None  # last.ckpt interval; None = once per epoch


@dataclass
class DistillConfig:
    """Knowledge distillation from a frozen teacher (see ``depthlab.training.distill``).

    Active when ``teacher`` is set and ``epsilon > 0``: the loss becomes
    ``(1 - epsilon) * loss + epsilon * L1(out / max(out), teacher / max(teacher))``. The teacher is
    ``create_model(teacher, pretrained=teacher_pretrained, checkpoint_path=teacher_checkpoint,
    **teacher_kwargs)`` run through a ``Predictor``. ``teacher_input_size``: the processing size of a
    foundation adapter (the size keyword its registry entry declares: ``input_size`` for the transformers
    adapters, ``processing_resolution`` -- one integer, the longest side -- for Marigold; part of the
    cache key); for other models the Predictor's ``input_size``
    (``None`` = the image's own size padded to the model's multiple, an int = short side,
    ``[H, W]``). With ``cache: true``
    its predictions on the un-augmented training images are computed once and stored under
    ``cache_dir`` (default ``<run_dir>/teacher_cache``); ``cache: false`` runs it on every
    augmented batch. ``teacher_batch_size`` is the batch of the cache-filling pass.
    """

    teacher: str | None = None
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    teacher_checkpoint: str | None = None
    teacher_pretrained: bool = True
    teacher_input_size: int | list[int] | None = None
    epsilon: float = 0.0
    cache: bool = True
    cache_dir: str | None = None
    teacher_batch_size: int = 8


@dataclass
class ExperimentConfig:
    """One experiment: outputs go to ``<output_dir>/<name>``."""

    name: str = "experiment"
    output_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)


# ----------------------------------------------------------------------------------------------
# type checking and coercion

_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        args = typing.get_args(tp)
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]" if args else origin.__name__
    if tp is Any:
        return "any"
    return getattr(tp, "__name__", str(tp))


def _short(value: Any, limit: int = 60) -> str:
    s = repr(value).replace("\n", " ")
    return s if len(s) <= limit else s[: limit - 3] + "..."


class _Mismatch(Exception):
    """Internal: value does not fit a type (caught to try the next member of a union)."""


def _is_exact(value: Any, tp: Any) -> bool:
    """True when ``value`` already has type ``tp`` without any conversion (for union ordering)."""
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp in (int, float, str):
        return type(value) is tp
    origin = typing.get_origin(tp)
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is list or origin is list:
        return isinstance(value, list)
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    return False


def _coerce(value: Any, tp: Any, key: str, raw: str | None = None) -> Any:
    """Check ``value`` against ``tp`` and convert where lossless; raise ConfigError naming ``key``."""
    try:
        return _coerce_inner(value, tp, key, raw)
    except _Mismatch:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {_short(value)}") from None


def _coerce_inner(value: Any, tp: Any, key: str, raw: str | None) -> Any:
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        for m in members:  # an exact match wins (1 stays int in int | float)
            if _is_exact(value, m):
                return _coerce_inner(value, m, key, raw)
        others = [m for m in members if m is not type(None)]
        for m in others:
            try:
                return _coerce_inner(value, m, key, raw)
            except (_Mismatch, ConfigError):
                if len(others) == 1:  # Optional[X]: X's own message is the most precise
                    if value is None:
                        raise _Mismatch from None
                    raise
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        folded = [c for c in choices if isinstance(c, str) and isinstance(value, str) and c.lower() == value.lower()]
        if folded:
            return folded[0]
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{key}: {_short(value)} is not one of {', '.join(map(repr, choices))}{hint}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise _Mismatch
    if tp is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if tp is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if tp is str:
        if isinstance(value, str):
            return value
        if raw is not None and not isinstance(value, (list, dict)) and value is not None:
            return raw  # override text such as name=2024 or name=yes stays as typed
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch
    if tp is list or origin is list:
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _Mismatch
        (item_tp,) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        _, val_tp = typing.get_args(tp) or (str, Any)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return copy.deepcopy(value)
        if not isinstance(value, dict):
            raise _Mismatch
        return _from_dict(tp, value, key)
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _unknown_key(prefix: str, key: str, valid: list[str], root_cls: type | None = None) -> ConfigError:
    where = f"in '{prefix}'" if prefix else "at the top level"
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f"; did you mean: {', '.join(close)}?" if close else ""
    # a key that lives in another section (train.lr -> optim.lr) is a frequent slip
    if not close and root_cls is not None:
        elsewhere = [f"{f.name}.{key}" for f in dataclasses.fields(root_cls)
                     if dataclasses.is_dataclass(_hints(root_cls)[f.name])
                     and key in {g.name for g in dataclasses.fields(_hints(root_cls)[f.name])}]
        if elsewhere:
            hint = f"; did you mean: {', '.join(elsewhere)}?"
    full = f"{prefix}.{key}" if prefix else key
    return ConfigError(f"{full}: unknown key {where}{hint} (valid keys: {', '.join(valid)})")


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__} {_short(data)}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        k = str(k)
        if k not in hints:
            raise _unknown_key(prefix, k, names, ExperimentConfig)
        kwargs[k] = _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k)
    return cls(**kwargs)


def config_from_dict(data: dict) -> ExperimentConfig:
    """Plain mapping (as read from YAML, without ``base``) -> validated :class:`ExperimentConfig`."""
    cfg = _from_dict(ExperimentConfig, dict(data or {}))
    validate_config(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict:
    """Dataclass -> nested plain dicts/lists (deep copy), ready for YAML/JSON."""
    return dataclasses.asdict(cfg)


# ----------------------------------------------------------------------------------------------
# semantic checks


def validate_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Checks that types alone cannot express; raises a one-line ConfigError."""
    d = cfg.data
    if len(d.size) != 2 or any(s <= 0 for s in d.size):
        raise ConfigError(f"data.size: expected [H, W] with positive ints, got {d.size}")
    for key, val, low in (("data.batch_size", d.batch_size, 1), ("data.num_workers", d.num_workers, 0),
                          ("train.max_epochs", cfg.train.max_epochs, -1), ("train.num_nodes", cfg.train.num_nodes, 1),
                          ("train.freeze_encoder_epochs", cfg.train.freeze_encoder_epochs, 0),
                          ("optim.warmup_steps", cfg.optim.warmup_steps, 0)):
        if val < low:
            raise ConfigError(f"{key}: must be >= {low}, got {val}")
    for key, val in (("data.max_depth", d.max_depth), ("optim.lr", cfg.optim.lr)):
        if not val > 0:
            raise ConfigError(f"{key}: must be > 0, got {val}")
    if cfg.optim.encoder_lr is not None and cfg.optim.encoder_lr < 0:
        raise ConfigError(f"optim.encoder_lr: must be >= 0, got {cfg.optim.encoder_lr}")
    if not 0 <= cfg.distill.epsilon <= 1:
        raise ConfigError(f"distill.epsilon: must be in [0, 1], got {cfg.distill.epsilon}")
    if cfg.distill.teacher_batch_size < 1:
        raise ConfigError(f"distill.teacher_batch_size: must be >= 1, got {cfg.distill.teacher_batch_size}")
    if cfg.train.checkpoint_every_n_steps is not None and cfg.train.checkpoint_every_n_steps < 1:
        raise ConfigError(f"train.checkpoint_every_n_steps: must be >= 1 or null, "
                          f"got {cfg.train.checkpoint_every_n_steps}")
    _validate_loss_names(cfg.loss)
    return cfg


def _validate_loss_names(loss: LossConfig) -> None:
    from depthlab.losses import UnknownLossError, loss_class

    if isinstance(loss.terms, dict):
        names = [("loss.terms." + k, k) for k in loss.terms]
    else:
        names = []
        for i, item in enumerate(loss.terms):
            if "name" not in item:
                raise ConfigError(f"loss.terms[{i}]: a list term needs 'name' (and optional weight, params, key)")
            names.append((f"loss.terms[{i}].name", item["name"]))
            w = item.get("weight", 1.0)
            if isinstance(w, bool) or not isinstance(w, (int, float)):
                raise ConfigError(f"loss.terms[{i}].weight: expected a number, got {_short(w)}")
    names += [("loss.params." + k, k) for k in loss.params]
    for key, name in names:
        try:
            loss_class(name)
        except UnknownLossError as e:
            raise ConfigError(f"{key}: {e}") from None


# ----------------------------------------------------------------------------------------------
# overrides


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: ExperimentConfig, overrides: typing.Iterable[str] = ()) -> ExperimentConfig:
    """Return a copy of ``cfg`` with ``"dotted.key=value"`` overrides applied and re-validated.

    Values are parsed with ``yaml.safe_load`` (numbers, ``[lists]``, ``{maps}``, ``true``/``false``,
    ``null``; an empty value is ``null``) and checked against the field type. Dotted paths descend
    into sections and into free dict fields, creating keys there; lists can be indexed
    (``data.size.0=64``), and a list of ``{name: ...}`` mappings by name (``loss.terms.l1=0.1`` sets
    the weight of the term called ``l1``, adding it when missing).
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=1e-4")
        path, text = item.split("=", 1)
        path = path.strip()
        if not path or any(not p for p in path.split(".")):
            raise ConfigError(f"override {item!r}: empty key")
        _set_path(cfg, path.split("."), text.strip(), _parse_value(text.strip()))
    validate_config(cfg)
    return cfg


def _set_path(cfg: Any, parts: list[str], raw: str, value: Any) -> None:
    obj, tp, done = cfg, type(cfg), []
    # descend through dataclass sections
    while dataclasses.is_dataclass(obj):
        name = parts[0]
        hints = _hints(type(obj))
        if name not in hints:
            raise _unknown_key(".".join(done), name, [f.name for f in dataclasses.fields(obj)], ExperimentConfig)
        done.append(name)
        tp = hints[name]
        if len(parts) == 1:
            if dataclasses.is_dataclass(tp) and isinstance(value, dict):  # merge a mapping into a section
                merged = deep_merge(config_to_dict(getattr(obj, name)), value)
                setattr(obj, name, _coerce(merged, tp, ".".join(done)))
            else:
                setattr(obj, name, _coerce(value, tp, ".".join(done), raw))
            return
        parts = parts[1:]
        child = getattr(obj, name)
        if dataclasses.is_dataclass(child):
            obj = child
            continue
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"{'.'.join(done)}: holds a value of type {_type_name(tp)}, not a section; cannot set {parts[0]!r}")
        _set_in_container(child, tp, parts, raw, value, done)
        # re-check the whole field (e.g. a new dict key against dict[str, float])
        setattr(obj, done[-1], _coerce(child, tp, ".".join(done)))
        return


def _container_type(value: Any, tp: Any) -> Any:
    """Pick the member of a union type that describes the current container ``value``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for m in typing.get_args(tp):
            if _is_exact(value, m):
                return m
        return Any
    return tp


def _set_in_container(container: Any, tp: Any, parts: list[str], raw: str, value: Any, done: list[str]) -> None:
    tp = _container_type(container, tp)
    key = parts[0]
    here = ".".join(done)
    done = done + [key]
    last = len(parts) == 1
    if isinstance(container, dict):
        args = typing.get_args(tp)
        val_tp = args[1] if len(args) == 2 else Any
        if last:
            container[key] = _coerce(value, val_tp, ".".join(done), raw)
            return
        child = container.get(key)
        if child is None:
            child = container[key] = {}
        if not isinstance(child, (dict, list)):
            raise ConfigError(f"{'.'.join(done)}: holds a value of type {type(child).__name__}, not a section; cannot set {parts[1]!r}")
        _set_in_container(child, val_tp, parts[1:], raw, value, done)
        return
    # list: integer index, or the name of a {name: ...} entry
    args = typing.get_args(tp)
    item_tp = args[0] if args else Any
    if key.lstrip("-").isdigit():
        idx = int(key)
        if not -len(container) <= idx < len(container):
            raise ConfigError(f"{here}: index {idx} out of range for a list of {len(container)}")
        if last:
            container[idx] = _coerce(value, item_tp, ".".join(done), raw)
        elif isinstance(container[idx], (dict, list)):
            _set_in_container(container[idx], item_tp, parts[1:], raw, value, done)
        else:
            raise ConfigError(f"{'.'.join(done)}: holds a value of type {type(container[idx]).__name__}, not a section; cannot set {parts[1]!r}")
        return
    named = [e for e in container if isinstance(e, dict) and e.get("name") == key]
    if not named:
        if container and not all(isinstance(e, dict) and "name" in e for e in container):
            raise ConfigError(f"{here}: list items are addressed by integer index, got {key!r}")
        named = [{"name": key}]
        container.append(named[0])
    entry = named[0]
    if last:
        if isinstance(value, dict):
            entry.update(value)
        else:
            entry["weight"] = value  # loss.terms.l1=0.1 on the list form
        return
    _set_in_container(entry, dict[str, Any], parts[1:], raw, value, done)


# ----------------------------------------------------------------------------------------------
# files


def deep_merge(base: dict, top: dict) -> dict:
    """``top`` merged into a deep copy of ``base`` (nested mappings merged, everything else replaced)."""
    out = copy.deepcopy(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """Read a YAML mapping, resolving ``base``/``defaults`` (relative to the file) recursively."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{path}: circular base: {cycle}")
    if not path.is_file():
        where = f" (base of {chain[-1]})" if chain else ""
        raise ConfigError(f"{path}: config file not found{where}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return _resolve_bases(data, path.parent, (*chain, path))


def _resolve_bases(data: dict, folder: Path, chain: tuple[Path, ...] = ()) -> dict:
    data = dict(data)
    bases: list = []
    for key in ("base", "defaults"):
        b = data.pop(key, None)
        if b is None:
            continue
        if isinstance(b, (str, os.PathLike)):
            b = [b]
        if not isinstance(b, list) or not all(isinstance(x, (str, os.PathLike)) for x in b):
            raise ConfigError(f"{key}: expected a path or a list of paths, got {_short(b)}")
        bases += b
    merged: dict = {}
    for b in bases:
        p = Path(b)
        merged = deep_merge(merged, _read_yaml(p if p.is_absolute() else folder / p, chain))
    return deep_merge(merged, data)


def load_config(source: str | os.PathLike | dict | ExperimentConfig | None = None,
                overrides: typing.Iterable[str] = ()) -> ExperimentConfig:
    """YAML path, mapping or config (or ``None`` for the defaults) -> :class:`ExperimentConfig`.

    ``base``/``defaults`` inside a file are resolved relative to that file (relative to the
    current directory for a mapping); ``overrides`` are then applied with :func:`apply_overrides`.
    """
    if source is None:
        cfg = ExperimentConfig()
    elif isinstance(source, ExperimentConfig):
        cfg = copy.deepcopy(source)
    elif isinstance(source, dict):
        cfg = config_from_dict(_resolve_bases(source, Path.cwd()))
    else:
        path = Path(source)
        try:
            cfg = config_from_dict(_read_yaml(path))
        except ConfigError as e:
            msg = str(e)
            raise ConfigError(msg if msg.startswith(str(path.resolve())) else f"{path}: {msg}") from None
    return apply_overrides(cfg, overrides) if overrides else validate_config(cfg)


class _Dumper(yaml.SafeDumper):
    """Block-style sections; lists of scalars and empty mappings on one line (``size: [128, 128]``)."""


def _represent_list(dumper, data):
    flat = all(not isinstance(v, (list, dict)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


def _represent_dict(dumper, data):
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=not data)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)


def save_config(cfg: ExperimentConfig, path: str | os.PathLike) -> Path:
    """Write ``cfg`` as YAML atomically (temp file, then rename); ``load_config(path) == cfg``."""
    from depthlab.io import atomic_write

    text = yaml.dump(config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)
