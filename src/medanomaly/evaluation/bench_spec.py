"""Command-line descriptions of a benchmark's data sets and methods, parsed and checked before anything runs."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from medanomaly.registry import detector_class
from medanomaly.training import TrainConfig
from medanomaly.transforms import Preprocessing


@dataclass(frozen=True)
class DataSpec:
    """A data set of the benchmark.

    Attributes:
        path: Folder (``<split>/<label>/``) or manifest CSV; it must have a ``test`` split.
        normal_label: The healthy label; None = a label named ``normal`` (any case).
        name: Short name used in file names and tables (default: the folder name).
    """

    path: Path
    normal_label: str | None = None
    name: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """A column of the benchmark: a registered method under a display name, with its own hyper-parameters.

    Attributes:
        name: Display name (the method name, or a variant name such as ``conv_ae_l2``).
        method: Registered detector name.
        params: Hyper-parameters given on the command line (added to, and winning over, the tiny ones).
        preprocessing: This method's own preprocessing settings (e.g. ``{"resolution": 224}``), over the shared ones.
        train: This method's own training-loop settings (e.g. ``{"batch_size": 8}``), over everything else.
    """

    name: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)


def parse_data_spec(text: str) -> DataSpec:
    """``DIR[:NORMAL_LABEL]``; a path that exists as given is never split at a colon."""
    path, sep, label = text.rpartition(":")
    if not sep or Path(text).exists() or not path:
        path, label = text, ""
    return DataSpec(Path(path), label or None, Path(path).stem if Path(path).is_file() else Path(path).name)


def parse_methods(text: str, params: list[str] | None = None) -> list[MethodSpec]:
    """``conv_ae,patchcore,ae_l2=conv_ae`` plus ``METHOD.KEY=VALUE`` items; unknown names fail here.

    ``METHOD.preprocessing.FIELD=VALUE`` and ``METHOD.train.FIELD=VALUE`` set that method's own preprocessing
    (:class:`~medanomaly.transforms.Preprocessing`) or training-loop (:class:`~medanomaly.training.TrainConfig`)
    fields, e.g. ``patchcore.preprocessing.resolution=224``.

    Raises:
        KeyError: For a method name that is not registered.
        ValueError: For a malformed item, a duplicate name or a hyper-parameter the method does not have.
    """
    specs: dict[str, MethodSpec] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, method = item.partition("=")
        name, method = name.strip(), (method or name).strip()
        if name in specs:
            msg = f"--methods lists {name!r} twice"
            raise ValueError(msg)
        detector_class(method)  # KeyError naming the registered methods
        specs[name] = MethodSpec(name, method)
    if not specs:
        msg = "--methods is empty: give e.g. --methods conv_ae,patchcore"
        raise ValueError(msg)
    for item in params or []:
        _apply_param(specs, item)
    for spec in specs.values():
        known = [name for name in inspect.signature(detector_class(spec.method).__init__).parameters if name != "self"]
        _check_fields(f"{spec.name} ({spec.method})", spec.params, known)
    return list(specs.values())


def _apply_param(specs: dict[str, MethodSpec], item: str) -> None:
    """Apply one ``METHOD.KEY=VALUE`` (or ``METHOD.preprocessing|train.FIELD=VALUE``) to ``specs`` in place."""
    from medanomaly.cli.options import parse_params

    target, dot, assignment = item.partition(".")
    if not dot or target not in specs:
        msg = f"--param {item!r}: expected METHOD.KEY=VALUE with METHOD one of {', '.join(specs)}"
        raise ValueError(msg)
    section, dot, rest = assignment.partition(".")
    spec = specs[target]
    if dot and section in _SECTIONS and "=" in rest and "=" not in section:
        value = parse_params([rest])
        _check_fields(f"{target}.{section}", value, _SECTIONS[section])
        specs[target] = replace(spec, **{section: {**getattr(spec, section), **value}})
    else:
        specs[target] = replace(spec, params={**spec.params, **parse_params([assignment])})


_SECTIONS = {
    "preprocessing": [f.name for f in fields(Preprocessing)],
    "train": [f.name for f in fields(TrainConfig) if f.name not in ("checkpoint_dir", "resume", "progress")],
}


def _check_fields(owner: str, given: dict[str, Any], known: list[str]) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        msg = f"{owner} has no hyper-parameter {', '.join(unknown)}; known: {', '.join(known)}"
        raise ValueError(msg)
