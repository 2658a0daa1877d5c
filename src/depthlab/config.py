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
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from depthlab.errors import DepthlabError, did_you_mean

__all__ = [
    "ConfigError", "ModelConfig", "DataConfig", "LossConfig", "OptimConfig", "TrainConfig",
    "DistillConfig", "ExperimentConfig", "load_config", "apply_overrides", "config_to_dict",
    "config_from_dict", "check_fields", "save_config", "validate_config", "load_yaml", "config_diff",
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
    ``threads``: torch intra-op CPU threads for the run (``None`` = torch's default, one per core); small
    models on a CPU shared with other jobs often train faster with 1 (see docs/experiments.md).
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
    threads: int | None = None


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


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against ``tp`` and convert where lossless; raise ConfigError naming ``key``."""
    try:
        return _coerce_inner(value, tp, key)
    except _Mismatch:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {_short(value)}") from None


def _coerce_inner(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(tp), key)
    if origin is Literal:
        return _coerce_literal(value, typing.get_args(tp), key)
    if tp in (type(None), bool, int, float, str):
        return _to_scalar(value, tp)
    if tp is list or origin is list:
        if not isinstance(value, (list, tuple)):
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


def _coerce_union(value: Any, members: tuple, key: str) -> Any:
    for m in members:  # an exact match wins (1 stays int in int | float)
        if _is_exact(value, m):
            return _coerce_inner(value, m, key)
    others = [m for m in members if m is not type(None)]
    for m in others:
        try:
            return _coerce_inner(value, m, key)
        except (_Mismatch, ConfigError):
            if len(others) == 1 and value is not None:  # Optional[X]: X's own message is the most precise
                raise
    raise _Mismatch


def _coerce_literal(value: Any, choices: tuple, key: str) -> Any:
    if value in choices:
        return value
    folded = [c for c in choices if isinstance(c, str) and isinstance(value, str) and c.lower() == value.lower()]
    if folded:
        return folded[0]
    hint = did_you_mean(value, choices, n=1)
    raise ConfigError(f"{key}: {_short(value)} is not one of {', '.join(map(repr, choices))}{hint}")


def _to_scalar(value: Any, tp: type) -> Any:
    """``value`` as ``tp`` (None, bool, int, float or str), converting only where nothing is lost."""
    if isinstance(value, bool) or value is None:
        if tp is type(value):
            return value
    elif tp is bool and isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    elif tp is int and (isinstance(value, int) or isinstance(value, float) and value.is_integer()):
        return int(value)
    elif tp is float and isinstance(value, (int, float, str)):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    elif tp is str and isinstance(value, (str, int, float)):
        return str(value)
    raise _Mismatch


def _unknown_key(prefix: str, key: str, valid: list[str], root_cls: type | None = None) -> ConfigError:
    where = f"in '{prefix}'" if prefix else "at the top level"
    hint = did_you_mean(key, valid, cutoff=0.6)
    # a key that lives in another section (train.lr -> optim.lr) is a frequent slip
    if not hint and root_cls is not None:
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
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    # "train.lr -> optim.lr" hints look across the sections of a training config only
    root = ExperimentConfig if cls.__module__ == __name__ else None
    kwargs = {}
    for k, v in data.items():
        k = str(k)
        if k not in hints:
            raise _unknown_key(prefix, k, names, root)
        kwargs[k] = _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k)
    missing = [f.name for f in fields if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix or 'config'}: missing required key(s) {', '.join(missing)}")
    return cls(**kwargs)


def check_fields(cls: type, data: Any, where: str = "") -> Any:
    """A mapping as read from YAML -> dataclass ``cls``, checked the way training configs are: every key known
    (else a one-line :class:`ConfigError` with close matches), every value of its field's type (nested
    dataclasses, lists and unions included), required fields present. ``where`` is the dotted key of ``data``
    ("" at the top level) that messages start from. Defaults are the dataclass's own."""
    return _from_dict(cls, data, where)


def config_from_dict(data: dict) -> ExperimentConfig:
    """Plain mapping (as read from YAML, without ``base``) -> validated :class:`ExperimentConfig`."""
    cfg = _from_dict(ExperimentConfig, dict(data or {}))
    validate_config(cfg)
    return cfg


def config_to_dict(cfg: Any) -> dict:
    """Dataclass -> nested plain dicts/lists (deep copy), ready for YAML/JSON."""
    return dataclasses.asdict(cfg)


def config_diff(a: Any, b: Any) -> set[str]:
    """The dotted keys (``"optim.lr"``) whose values differ between two configs (dataclasses or nested dicts);
    a key present on one side only counts as changed."""
    as_dict = [config_to_dict(c) if dataclasses.is_dataclass(c) else c for c in (a, b)]
    return _dict_diff(*as_dict)


def _dict_diff(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return set().union(*(_dict_diff(a.get(k), b.get(k), f"{prefix}{k}.") for k in set(a) | set(b)))
    return set() if a == b else {prefix.rstrip(".")}


# ----------------------------------------------------------------------------------------------
# semantic checks


# lower bounds of numeric fields (None, where a field allows it, is not checked)
_AT_LEAST = {"data.batch_size": 1, "data.num_workers": 0, "train.max_epochs": -1, "train.num_nodes": 1,
             "train.freeze_encoder_epochs": 0, "train.checkpoint_every_n_steps": 1, "train.threads": 1, "optim.warmup_steps": 0,
             "optim.step_size": 1, "optim.encoder_lr": 0, "distill.teacher_batch_size": 1}


def validate_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """Checks that types alone cannot express; raises a one-line ConfigError."""
    for section in dataclasses.fields(cfg):
        obj = getattr(cfg, section.name)
        for f in dataclasses.fields(obj) if dataclasses.is_dataclass(obj) else ():
            value = getattr(obj, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section.name}.{f.name}: must be a finite number, got {value}")
    check_run_name(cfg.name)
    d = cfg.data
    if len(d.size) != 2 or any(s <= 0 for s in d.size):
        raise ConfigError(f"data.size: expected [H, W] with positive ints, got {d.size}")
    for key, low in _AT_LEAST.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is not None and value < low:
            raise ConfigError(f"{key}: must be >= {low}, got {value}")
    for key, val in (("data.max_depth", d.max_depth), ("optim.lr", cfg.optim.lr)):
        if not val > 0:
            raise ConfigError(f"{key}: must be > 0, got {val}")
    if not 0 <= cfg.distill.epsilon <= 1:
        raise ConfigError(f"distill.epsilon: must be in [0, 1], got {cfg.distill.epsilon}")
    if cfg.distill.teacher_input_size is not None:
        from depthlab.predictor import parse_input_size

        parse_input_size(cfg.distill.teacher_input_size, "distill.teacher_input_size")
    _validate_loss_names(cfg.loss)
    return cfg


def check_run_name(name: str, key: str = "name") -> str:
    """A run's name is one folder inside ``output_dir``: not empty, no ``/`` or ``\\``, not ``.`` or ``..``
    (``../../x`` or an absolute name would write outside it; ``''`` into it)."""
    text = str(name)
    if not text.strip() or text in (".", "..") or "/" in text or "\\" in text or "\0" in text:
        raise ConfigError(f"{key}: must be a plain folder name inside output_dir (no '/', not '', '.' or '..'), "
                          f"got {name!r}")
    return text


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
        return load_yaml(text) if text.strip() else None
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: ExperimentConfig, overrides: typing.Iterable[str] = ()) -> ExperimentConfig:
    """Return a copy of ``cfg`` with ``"dotted.key=value"`` overrides applied and re-validated.

    Values are parsed with ``yaml.safe_load`` (numbers, ``[lists]``, ``{maps}``, ``true``/``false``,
    ``null``; an empty value is ``null``; for a text field the text stays as typed: ``name=2024``,
    ``name=yes``). Each override is set in the config's dict form, which is then checked against the
    dataclasses in one pass (:func:`config_from_dict`). Dotted paths descend into sections and into
    free dict fields, creating keys there; a mapping given for a whole section merges into it; lists
    can be indexed (``data.size.0=64``), and a list of ``{name: ...}`` mappings by name
    (``loss.terms.l1=0.1`` sets the weight of the term called ``l1``, adding it when missing).
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    data = config_to_dict(cfg)
    for item in overrides:
        path, sep, text = item.partition("=")
        parts = path.strip().split(".")
        if not sep:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. optim.lr=1e-4")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key")
        _set_dotted(data, parts, _override_value(text.strip(), _field_type(parts)))
    return config_from_dict(data)


def _field_type(parts: list[str]) -> Any:
    """The declared type of a dotted path through the dataclass sections; ``None`` below a free dict or list."""
    tp = ExperimentConfig
    for name in parts:
        if not dataclasses.is_dataclass(tp) or name not in _hints(tp):
            return None
        tp = _hints(tp)[name]
    return tp


def _override_value(text: str, tp: Any) -> Any:
    """The YAML value of an override; its text as typed where the field is text (``name=2024``, ``name=yes``)."""
    value = _parse_value(text)
    if tp is None or value is None or isinstance(value, (list, dict)):
        return value
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return text if str in members and not any(_is_exact(value, m) for m in members) else value


def _set_dotted(data: dict, parts: list[str], value: Any) -> None:
    """Set ``value`` at a dotted path of the config's dict form (plain dicts and lists).

    Missing (or null) mapping entries on the way become ``{}``; a mapping given for a dataclass section
    merges into it; in a list, a part is an index or the ``name`` of a ``{name: ...}`` entry.
    """
    node = data
    for i, key in enumerate(parts):
        here, last = ".".join(parts[:i]), i == len(parts) - 1
        if isinstance(node, list) and not key.lstrip("-").isdigit():
            node = _named_entry(node, key, here)
            if last:  # loss.terms.l1=0.1 sets the weight of the term called l1
                node.update(value if isinstance(value, dict) else {"weight": value})
            continue
        if isinstance(node, list):
            key = int(key)
            if not -len(node) <= key < len(node):
                raise ConfigError(f"{here}: index {key} out of range for a list of {len(node)}")
        if last:
            merge = isinstance(value, dict) and dataclasses.is_dataclass(_field_type(parts))
            node[key] = deep_merge(node[key], value) if merge else value  # model={name: x} keeps model.kwargs
            return
        if isinstance(node, dict) and node.get(key) is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"{'.'.join(parts[:i + 1])}: holds a value of type {type(node).__name__}, "
                              f"not a section; cannot set {parts[i + 1]!r}")


def _named_entry(items: list, name: str, here: str) -> dict:
    """The ``{name: ...}`` entry of a list called ``name``, appended when missing."""
    for entry in items:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry
    if not all(isinstance(e, dict) and "name" in e for e in items):
        raise ConfigError(f"{here}: list items are addressed by integer index, got {name!r}")
    items.append({"name": name})
    return items[-1]


# ----------------------------------------------------------------------------------------------
# files

_MAX_YAML_VALUES = 100_000


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` that refuses a document whose aliases expand past ``_MAX_YAML_VALUES`` values
    (a "billion laughs" alias bomb, e.g. in ``model.kwargs``, would exhaust memory once copied or checked)."""

    def compose_document(self):
        node = super().compose_document()
        if _expanded_size(node, {}) > _MAX_YAML_VALUES:
            problem = f"aliases expand to more than {_MAX_YAML_VALUES} values (an alias bomb?)"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark)
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Number of values ``node`` stands for once every alias is expanded (each node is visited once)."""
    if id(node) not in sizes:
        sizes[id(node)] = 0  # a recursive anchor counts once
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        sizes[id(node)] = 1 + sum(_expanded_size(n, sizes) for n in children)
    return sizes[id(node)]


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that refuses alias bombs (see ``_Loader``): configs, overrides and experiment specs."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass



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
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"{path}: cannot read the config as UTF-8 text ({type(e).__name__})") from None
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
    elif isinstance(source, ExperimentConfig):  # type-checked too: a config built in Python may hold anything
        cfg = config_from_dict(config_to_dict(source))
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
