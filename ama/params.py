"""Run parameters: the one source of a run's defaults, their validation and the ``FAST`` variant.

Read by the Makefile (``python3 ama/params.py ...``: standard library only, so it works before
``.venv`` exists), by :mod:`ama.pipeline` (``params.json``), by the notebooks' parameters cells (a
``params`` dict, see :meth:`RunParams.from_dict`) and by the command line (its defaults).

``e`` is the frame (margin) width in pixels everywhere: the attack's frame, the occlusion margin and
the margin of the receptive-field tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import sys
from dataclasses import dataclass

FAST_N_IMAGES = 2      # FAST=1: at most this many images,
FAST_N_E = 2           # the smallest two frame widths,
FAST_N_ITER = 5        # and this many attack iterations: a smoke run, not a test of the claims


class ParamsError(ValueError):
    """A run parameter that cannot be used; the message is one line that says what is valid."""


def check_frame_width(e, size=None) -> int:
    """``e`` as an ``int``: a positive integer (numpy integers too, not bool) and, when the image ``size``
    ``(H, W)`` (or an int) is given, below half its smaller side. One message for every use of ``e``."""
    side = None if size is None else (size if isinstance(size, numbers.Integral) else min(int(s) for s in size))
    ok = isinstance(e, numbers.Integral) and not isinstance(e, bool) and e >= 1
    if ok and side is not None:
        ok = 2 * int(e) < side
    if not ok:
        limit = f" below half the smaller image side ({side} px), i.e. 1..{(side - 1) // 2}" if side else ""
        raise ParamsError(f"e (the frame width in pixels) must be a positive integer{limit}, got {e!r}")
    return int(e)


def _ints(value, what: str) -> tuple[int, ...]:
    items = str(value).replace(",", " ").split() if isinstance(value, str) else list(value)
    try:
        return tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise ParamsError(f"{what} must be integers, got {value!r}") from None


@dataclass(frozen=True)
class RunParams:
    """The parameters of one run. Defaults are the paper's setting on the offline model and photos."""

    models: tuple[str, ...] = ("lite0",)     # kit model names (ama.load_model)
    images: str = "data/samples"             # a folder (ImageNet val works) or a file
    n_images: int | None = None              # a seeded subset, or None for all
    e: tuple[int, ...] = (1, 2, 4, 8)        # frame / margin widths in pixels
    n_iter: int = 100                        # attack iterations (forward+backward passes per image)
    lamb: float = 100.0                      # weight of the attack's CAM term
    seed: int = 0                            # image subset, attack start, noise fill
    device: str = "auto"                     # auto (CUDA when present), cpu, cuda, cuda:N
    fast: bool = False                       # a smoke run: see fast_variant()

    def __post_init__(self):
        models = tuple(str(self.models).replace(",", " ").split()) if isinstance(self.models, str) else \
            tuple(str(m) for m in self.models)
        if not models:
            raise ParamsError("models is empty; give at least one model, e.g. MODELS=lite0")
        e = _ints(self.e, "e (frame widths)")
        if not e:
            raise ParamsError("e is empty; give at least one frame width, e.g. E=1")
        e = tuple(sorted(set(check_frame_width(v) for v in e)))
        n_images = None if self.n_images in (None, "", "None") else _int(self.n_images, "n_images")
        if n_images is not None and n_images < 1:
            raise ParamsError(f"n_images must be a positive number of images, got {self.n_images!r}")
        n_iter = _int(self.n_iter, "n_iter")
        if n_iter < 1:
            raise ParamsError(f"n_iter must be a positive integer, got {self.n_iter!r}")
        try:
            lamb = float(self.lamb)
        except (TypeError, ValueError):
            raise ParamsError(f"lamb must be a number, got {self.lamb!r}") from None
        if not (math.isfinite(lamb) and lamb >= 0):
            raise ParamsError(f"lamb must be a non-negative finite number, got {self.lamb!r}")
        seed = _int(self.seed, "seed")
        if not 0 <= seed < 2 ** 63:
            raise ParamsError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        fast = self.fast if isinstance(self.fast, bool) else str(self.fast).strip().lower() in ("1", "true", "yes")
        for name, value in dict(models=models, e=e, n_images=n_images, n_iter=n_iter, lamb=lamb, seed=seed,
                                images=str(self.images), device=str(self.device), fast=fast).items():
            object.__setattr__(self, name, value)

    # --- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready: lists for tuples (the form of ``params.json`` and the notebooks' ``params``)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict | None = None, **overrides) -> "RunParams":
        """From a (partial) dict: missing keys take the defaults; unknown keys are refused."""
        values = {**(values or {}), **overrides}
        unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ParamsError(f"unknown run parameter(s) {unknown}; known: {[f.name for f in dataclasses.fields(cls)]}")
        return cls(**{k: v for k, v in values.items() if v is not None or k == "n_images"})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    # --- what a run does ---------------------------------------------------------------------
    def fast_variant(self) -> "RunParams":
        """The parameters the experiments use: these, or with ``fast`` a smoke run's (few images, the two smallest
        frame widths, :data:`FAST_N_ITER` iterations)."""
        if not self.fast:
            return self
        n = FAST_N_IMAGES if self.n_images is None else min(self.n_images, FAST_N_IMAGES)
        return dataclasses.replace(self, n_images=n, e=self.e[:FAST_N_E], n_iter=min(self.n_iter, FAST_N_ITER))

    def run_name(self) -> str:
        """The run folder's name, e.g. ``lite0_samples_e1-2-4-8_it100_lamb100_seed0``."""
        images = self.images.rstrip("/").rsplit("/", 1)[-1]
        parts = ["-".join(self.models), images] + ([f"n{self.n_images}"] if self.n_images else [])
        parts += [f"e{'-'.join(map(str, self.e))}", f"it{self.n_iter}", f"lamb{self.lamb:g}", f"seed{self.seed}"]
        return "_".join(parts) + ("_fast" if self.fast else "")


def _int(value, what: str) -> int:
    if isinstance(value, bool):
        raise ParamsError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise ParamsError(f"{what} must be an integer, got {value!r}") from None


def from_make(models="", images="", n_images="", e="", n_iter="", lamb="", seed="", device="", fast="") -> RunParams:
    """From the Makefile's variables (strings; an empty one takes the default)."""
    given = dict(models=models, images=images, n_images=n_images, e=e, n_iter=n_iter, lamb=lamb, seed=seed,
                 device=device, fast=fast)
    return RunParams.from_dict({k: v for k, v in given.items() if str(v).strip()})


def main(argv=None) -> int:
    """``python3 ama/params.py run-name|json --models ... --e ...``: the Makefile's bridge."""
    parser = argparse.ArgumentParser(prog="ama/params.py", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("run-name", "json"))
    for f in dataclasses.fields(RunParams):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default="")
    args = vars(parser.parse_args(argv))
    what = args.pop("what")
    try:
        params = from_make(**args)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(params.run_name() if what == "run-name" else params.to_json(), end="\n" if what == "run-name" else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
