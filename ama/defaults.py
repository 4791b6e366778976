"""The kernels' defaults and their checks: the paper's frame widths, the reference attack's passes, CAM weight and
seed.

Standard library only, and part of the kernel: :mod:`ama.attack.marginal` and :mod:`ama.kernels.occlusion` take their
defaults from here, and :mod:`ama.params` (a run's parameters, which the Makefile reads before ``.venv`` exists) builds
on them, so each number is written once and the kernel imports no run machinery.
"""
from __future__ import annotations

import math

__all__ = ["E", "N_ITER", "LAMB", "SEED", "ParamsError", "check_lamb", "check_n_iter", "check_seed", "check_int"]

E = (1, 2, 4, 8)         # frame / margin widths in pixels: the paper's grid
N_ITER = 100             # attack passes per image: the authors' 2022 code (and the kit's default)
LAMB = 100.0             # weight of the attack's CAM term
SEED = 0


class ParamsError(ValueError):
    """A parameter that cannot be used; the message is one line that says what is valid."""


def check_int(value, what: str, low: int = 0) -> int:
    """``value`` as an int of at least ``low`` (a bool, a float string or anything else is refused, naming ``what``)."""
    if isinstance(value, bool):
        raise ParamsError(f"{what} must be an integer, got {value!r}")
    try:
        out = int(str(value).strip())
    except ValueError:
        raise ParamsError(f"{what} must be an integer, got {value!r}") from None
    if out < low:
        raise ParamsError(f"{what} must be an integer of at least {low}, got {value!r}")
    return out


def check_lamb(lamb) -> float:
    """``lamb`` as a float: a non-negative finite number (not a bool)."""
    try:
        out = float(lamb) if not isinstance(lamb, bool) else math.nan
    except (TypeError, ValueError):
        out = math.nan
    if not (math.isfinite(out) and out >= 0):
        raise ParamsError(f"lamb must be a non-negative finite number, got {lamb!r}")
    return out


def check_seed(seed) -> int:
    """``seed`` as an int in ``[0, 2**63 - 1]`` (the range of ``torch.Generator.manual_seed``)."""
    out = check_int(seed, "seed")
    if out >= 2 ** 63:
        raise ParamsError(f"seed must be an integer in [0, 2**63 - 1], got {seed!r}; reduce it (e.g. seed % 2**63)")
    return out


def check_n_iter(n_iter) -> int:
    """``n_iter`` (attack passes per image) as a positive int."""
    if isinstance(n_iter, float) and not n_iter.is_integer():
        raise ParamsError(f"n_iter must be a positive integer, got {n_iter!r}")
    try:
        return check_int(n_iter, "n_iter", low=1)
    except ParamsError:
        raise ParamsError(f"n_iter must be a positive integer, got {n_iter!r}") from None
