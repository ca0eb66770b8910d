"""Typed configs: dataclasses that validate their fields and round-trip through JSON.

Every result folder holds the config that produced it, written with :func:`save_json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from .atomic import write_text
from .errors import TrainreconError

T = TypeVar("T")


def _check(value: Any, tp: Any, where: str) -> Any:
    """Coerce ``value`` (from JSON) to type ``tp``, or raise a one-line error naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(value, a, where)
            except TrainreconError as e:
                errors.append(str(e))
        raise TrainreconError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise TrainreconError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise TrainreconError(f"{where}: expected a list, got {type(value).__name__}")
        item = args[0] if args else Any
        out = [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict:
        if not isinstance(value, dict):
            raise TrainreconError(f"{where}: expected an object, got {type(value).__name__}")
        return {str(k): _check(v, args[1] if args else Any, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise TrainreconError(f"{where}: expected an object, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise TrainreconError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TrainreconError(f"{where}: expected an integer, got {value!r}")
        if abs(value) >= 2**63:
            raise TrainreconError(f"{where}: {value} is out of range (|value| < 2^63)")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TrainreconError(f"{where}: expected a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:
            raise TrainreconError(f"{where}: {value} is out of range for a float") from None
        if not math.isfinite(value):
            raise TrainreconError(f"{where}: must be a finite number, got {value}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise TrainreconError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from a JSON object, checking field names and types."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise TrainreconError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _check(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TrainreconError(f"{where}: {e}") from None


def is_whole(v: Any, low: int = 0, high: int = 2**63) -> bool:
    """Whether ``v`` is a whole number (a JSON integer, not a bool) in [low, high)."""
    return isinstance(v, int) and not isinstance(v, bool) and low <= v < high


def is_finite_number(v: Any) -> bool:
    """Whether ``v`` is a real, finite number (a JSON integer or float, not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_numbers(cfg: Any, where: str) -> None:
    """Raise a one-line error for a non-finite float field (NaN passes every ``<= 0`` check) or a seed outside
    [0, 2^63), in dataclass ``cfg`` built from Python rather than JSON."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        vals = v if isinstance(v, (list, tuple)) else [v]
        for x in vals:
            if isinstance(x, float) and not math.isfinite(x):
                raise TrainreconError(f"{where}.{f.name}: must be a finite number, got {x}")
        if f.name == "seed" or f.name.endswith("_seed"):
            if not is_whole(v):
                raise TrainreconError(f"{where}.{f.name}: must be an integer in [0, 2^63), got {v!r}")


def to_dict(obj: Any) -> Any:
    if hasattr(obj, "to_json") and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_dict(obj.to_json())  # a dataclass that writes only its meaningful fields (a model.json layer)
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def strict(obj: Any) -> Any:
    """``obj`` (plain data) with every non-finite float (NaN, +-inf, numpy's included) as None, so that what is
    written is strict JSON; a number a routine could not compute is null, and its reason sits beside it."""
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return strict(obj.item())
    return obj


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` (dataclass or plain data) as indented strict JSON (no NaN or infinity: :func:`strict`),
    atomically and durably (:mod:`.atomic`): the one writer of every JSON file trainrecon makes."""
    write_text(path, json.dumps(strict(to_dict(obj)), indent=2, sort_keys=False, allow_nan=False) + "\n")


def parse_json(text: str | bytes, where: str | os.PathLike) -> Any:
    """JSON text parsed, or one line naming ``where``: not JSON, not UTF-8, nested deeper than Python's parser
    goes, or an integer too long to convert (over 4300 digits)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise TrainreconError(f"{where}: not valid JSON here (nested too deep)") from None
    except UnicodeDecodeError:
        raise TrainreconError(f"{where}: not valid JSON (not UTF-8 text)") from None
    except ValueError as e:  # JSONDecodeError, and the integer-length limit
        msg = str(e).splitlines()[0] if str(e) else "unreadable"
        if "digits" in msg:
            msg = "an integer of more than 4300 digits"
        raise TrainreconError(f"{where}: not valid JSON ({msg})") from None


def load_json(path: str | os.PathLike) -> Any:
    """A JSON file, or one line naming it (missing, unreadable, not JSON: :func:`parse_json`)."""
    path = Path(path)
    if not path.is_file():
        raise TrainreconError(f"{path}: file not found")
    return parse_json(path.read_bytes(), path)


def load_config(cls: type[T], path: str | os.PathLike) -> T:
    data = load_json(path)
    if not isinstance(data, dict):
        raise TrainreconError(f"{path}: expected a JSON object")
    return from_dict(cls, data, where=str(path))


def config_from(cls: type[T], path: str | os.PathLike | None, overrides: dict[str, Any],
                base: dict[str, Any] | None = None) -> T:
    """``cls`` from a JSON file's fields (if any) with command-line options on top, validated once: fields
    left out take their defaults *after* the options, so defaults that follow other fields (a trainer's bias
    list on ``hidden``) follow the options.  ``base``: fields beneath the file's (a preset the file and the
    options may override)."""
    data = load_json(path) if path is not None else {}
    if not isinstance(data, dict):
        raise TrainreconError(f"{path}: expected a JSON object")
    data = {**(base or {}), **data, **{k: to_dict(v) for k, v in overrides.items() if v is not None}}
    return from_dict(cls, data, where=str(path) if path is not None else "option")
