"""Input checks shared by the library.

Every check names the argument and the value it refused, so a bad call fails at the door with a
sentence instead of deep inside numpy with a NaN or a shape error.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np


def _numeric(name: str, values) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numeric, got {values!r}") from error


def finite_array(name: str, values) -> np.ndarray:
    """``values`` as a float64 array, refusing NaN and infinities."""
    array = _numeric(name, values)
    if not np.all(np.isfinite(array)):
        bad = array[~np.isfinite(array)].ravel()[0]
        raise ValueError(f"{name} must be finite, got a value of {bad}")
    return array


def group_rewards(name: str, rewards, *, min_group_size: int, floor: float | None = None,
                  ceiling: float | None = None, allow_unknown: bool = False) -> np.ndarray:
    """Rewards shaped ``(..., G)`` with ``G >= min_group_size`` and every value inside ``[floor,
    ceiling]``.

    With ``allow_unknown`` a NaN marks an unknown reward and passes; infinities are still refused
    and the bounds apply to the known rewards.
    """
    array = _numeric(name, rewards)
    finite_array(name, np.where(np.isnan(array), 0.0, array) if allow_unknown else array)
    if array.ndim == 0:
        raise ValueError(f"{name} must have a group axis (shape (..., G)), got the scalar "
                         f"{array.item()}")
    group_size = array.shape[-1]
    if group_size < min_group_size:
        raise ValueError(
            f"{name} has group size G={group_size} (last axis of shape {array.shape}); "
            f"this estimator needs G >= {min_group_size}"
        )
    known = array[~np.isnan(array)]
    if ceiling is not None and known.size and known.max() > ceiling:
        raise ValueError(f"{name} holds {known.max()}, above r_max={ceiling}")
    if floor is not None and known.size and known.min() < floor:
        raise ValueError(f"{name} holds {known.min()}, below the lowest reward {floor}")
    return array


def number(name: str, value, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number inside the stated interval (closed unless ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value}")
    return value


def integer(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool, not a float) inside ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def choice(name: str, value, options) -> str:
    """One of a fixed set of strings."""
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return value


def output_folder(name: str, folder, *, fresh: bool = False) -> Path:
    """``folder`` as a Path, created if missing, after proving that a file can be written in it.

    Commands call this before any work, so that a folder they cannot write to costs a one-line
    error instead of a traceback at the end of a run. With ``fresh``, a folder that already holds
    files (an earlier run's) is refused, so that no run overwrites another.
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name} {str(folder)!r} is a file, not a folder; choose a folder")
    if fresh and folder.is_dir() and any(not entry.name.startswith(".")
                                         for entry in folder.iterdir()):
        raise ValueError(f"{name} {str(folder)!r} already holds an earlier run; choose another "
                         f"{name}, or pass --overwrite to replace its files")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ValueError(f"{name} {str(folder)!r} cannot be written: {error.strerror or error}; "
                         f"choose a folder you can write to") from None
    return folder


def available_memory() -> int:
    """Bytes the system can give a new allocation without swapping (psutil's ``available``)."""
    import psutil

    return psutil.virtual_memory().available


def _gib(size: float) -> str:
    return f"{size / 2 ** 30:.1f} GiB" if size >= 2 ** 30 else f"{size / 2 ** 20:.0f} MiB"


def fits_in_memory(what: str, needed: float, advice: str) -> None:
    """Refuse work whose estimated peak memory ``needed`` (bytes) exceeds what the machine has
    available now."""
    available = available_memory()
    if needed > available:
        raise ValueError(f"{what} needs about {_gib(needed)} of memory, more than the "
                         f"{_gib(available)} available now; {advice}")
