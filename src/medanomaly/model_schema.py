"""The schema of ``model.json``: every field checked on load, with a message naming the field and what to do.

An edited or damaged ``model.json`` (a list instead of an object, a wrong type, an unknown key) is a
:class:`~medanomaly.errors.ModelError` that names the file and the field, never a traceback from deep inside.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from medanomaly.errors import ModelError

_RETRAIN = "restore the file from a backup or retrain the model"
# top-level key -> accepted JSON types (None = null allowed)
_TOP: dict[str, tuple[type | None, ...]] = {
    "format_version": (int,),
    "medanomaly_version": (str,),
    "method": (str,),
    "kind": (str,),
    "params": (dict,),
    "fitted": (dict,),
    "preprocessing": (dict,),
    "postprocessing": (dict,),
    "threshold": (dict, None),
    "domain": (dict, None),
    "info": (dict,),
}
_REQUIRED = ("method", "params", "fitted", "preprocessing")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _fail(path: Path, field: str, problem: str) -> ModelError:
    return ModelError(f"{path}: field {field!r} {problem}; {_RETRAIN}")


def validate_config(path: Path, config: Any) -> dict[str, Any]:
    """Check the structure of a parsed ``model.json``; return it.

    Raises:
        ModelError: Naming the file and the first field that is missing, unknown or of the wrong type.
    """
    if not isinstance(config, dict):
        raise ModelError(f"{path}: expected a JSON object, found {_type_name(config)}; {_RETRAIN}")
    unknown = sorted(set(config) - set(_TOP))
    if unknown:
        raise _fail(path, unknown[0], f"is not a model.json field (known: {', '.join(_TOP)})")
    for key in _REQUIRED:
        if key not in config:
            raise _fail(path, key, "is missing")
    for key, accepted in _TOP.items():
        if key in config and not _accepts(config[key], accepted):
            wanted = " or ".join("null" if t is None else _type_name(t()) for t in accepted)
            raise _fail(path, key, f"should be {wanted}, found {_type_name(config[key])}")
    _check_postprocessing(path, config.get("postprocessing") or {})
    return config


def _accepts(value: Any, accepted: tuple[type | None, ...]) -> bool:
    if value is None:
        return None in accepted
    if isinstance(value, bool):
        return bool in accepted
    return any(t is not None and isinstance(value, t) for t in accepted)


def _check_postprocessing(path: Path, values: dict[str, Any]) -> None:
    """Post-processing keys must be known and hold numbers/strings of the default's kind."""
    from medanomaly.model import Postprocessing

    defaults = {f.name: f.default for f in fields(Postprocessing)}
    for key, value in values.items():
        if key not in defaults:
            raise _fail(path, f"postprocessing.{key}", f"is unknown (known: {', '.join(defaults)})")
        default = defaults[key]
        numeric = isinstance(default, int | float) or default is None
        if value is None and default is None:
            continue
        ok = isinstance(value, str) if isinstance(default, str) else numeric and isinstance(value, int | float)
        if not ok or isinstance(value, bool):
            raise _fail(path, f"postprocessing.{key}", f"should be {_type_name(default or 0.0)}, found "
                        f"{_type_name(value)}")


def section_error(path: Path, section: str, error: Exception) -> ModelError:
    """A ModelError for a section of ``model.json`` that its own parser refused (bad value or unknown key)."""
    detail = error.args[0] if error.args else type(error).__name__
    return _fail(path, section, f"is invalid ({detail})")
