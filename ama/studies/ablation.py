"""The optimiser ablation (notebook 03, ``SCIENCE.md`` section 6): the reference optimiser against the stronger ones
of :mod:`ama.attack.optimizers` at the same budget (passes per image), each ingredient switched on and off.

* :func:`ablation_plan`: what a run computes (``ablation="strongest"``: the reference and the strongest at every
  ``e``; ``"full"``: every optimiser, the budget curve and keep mode);
* :func:`run_ablation`: the attacks and their metric rows, reusing results already computed;
* :func:`ingredient_variants`: each optimiser's default and each ingredient switched;
* :func:`ablation_summary`, :func:`ablation_lines`: per setting, what the tables and the notebook show;
* the ingredient study (:data:`INGREDIENT_STUDY`, :func:`run_ingredients`, :func:`ingredient_summary`): each
  ingredient alone on top of the reference, chosen on one half of the images (at the run's first seed), reported on
  the other at every seed.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..attack import optimizers
from ..attack.marginal import marginal_attack
from ..attack.result import AttackParams, OptimizerKey
from ..criteria import pct
from ..inputs.protocol import evenly
from ..kernels.cam_model import CAMModel
from ..params import E, LAMB, N_ITER, SEED, RunParams
from ..stats.intervals import Estimate
from ..stats.rows import eight_bit

ADVERSARIAL_OPTIMIZERS = (optimizers.ORIGINAL, optimizers.STRONGEST)  # at every e, their images kept (notebook 05)
INGREDIENTS = ("select", "restarts", "cam_loss", "label_loss")
_TOGGLE = {"select": {"best": "last", "last": "best"}, "cam_loss": {"normalized": "raw", "raw": "normalized"},
           "label_loss": {"ce": "margin", "margin": "ce"}}
ABLATION_E = (1, 2)            # frame widths of the budget curve and of the optimisers not kept as images (adam)
ABLATION_BUDGET_SHARE = 4      # the budget curve: n_iter / 4 and n_iter passes per image (the full study: 10 to 100)
ABLATION_KEEP = ADVERSARIAL_OPTIMIZERS  # keep mode at the smallest e: the reference and the default strongest


def ingredient_variants(optimizer_names=optimizers.NAMES, ingredients=INGREDIENTS) -> list[dict]:
    """Per optimiser its default settings (``variant`` ``"default"``) and, per ingredient, the default with that
    ingredient switched (``"select=last"``, ``"restarts=1"``, ``"cam_loss=raw"``, ...): ``select`` best <-> last,
    ``restarts`` 0 <-> 1 (restarts imply ``select="best"``), ``cam_loss`` normalized <-> raw, ``label_loss`` ce <->
    margin. Each a dict of :func:`ama.attack.optimizers.settings` plus ``variant``. ``ingredients``: the settings switched, of
    :data:`INGREDIENTS`."""
    out = []
    for opt in optimizer_names:
        base = optimizers.settings(opt)
        out.append({**base, "variant": "default"})
        for ing in ingredients:
            if ing not in INGREDIENTS:
                raise ValueError(f"unknown ingredient {ing!r}; use some of {', '.join(INGREDIENTS)}")
            s = dict(base)
            if ing == "restarts":
                s["restarts"] = 0 if base["restarts"] else 1
                if s["restarts"]:
                    s["select"] = "best"
            else:
                s[ing] = _TOGGLE[ing][base[ing]]
                if s["select"] == "last" and s["restarts"]:
                    continue  # restarts need the best iterate: no such variant
            out.append({**s, "variant": f"{ing}={s[ing]}"})
    return out


def ablation_plan(params: RunParams) -> dict:
    """The optimiser ablation of a run (keyword arguments of :func:`run_ablation`). ``ablation="strongest"``: the
    defaults of the optimisers of :data:`ADVERSARIAL_OPTIMIZERS` (the reference and the strongest) at every ``e`` and
    the run's ``n_iter``. ``"full"``: besides, every optimiser at ``e`` in :data:`ABLATION_E`, the budget curve
    (``n_iter / 4`` too) there and keep mode at the smallest ``e`` for :data:`ABLATION_KEEP`; no per-ingredient grid
    (time). FAST: the smallest ``e``, the FAST passes, every optimiser and each ingredient switched once."""
    low = min(params.e)
    common = dict(optimizer_names=list(optimizers.NAMES), keep_e=[low], keep_optimizers=list(ABLATION_KEEP),
                  lamb=params.lamb, seed=params.seed)
    if params.fast:
        return dict(e=[low], budgets=[params.n_iter], variant_e=[low], budget_e=[low], **common)
    if params.ablation == "strongest":
        return dict(e=list(params.e), budgets=[params.n_iter], variant_e=[], budget_e=[], **{
            **common, "optimizer_names": list(ADVERSARIAL_OPTIMIZERS), "keep_e": []})
    budgets = sorted({max(1, params.n_iter // ABLATION_BUDGET_SHARE), params.n_iter})
    few = [v for v in ABLATION_E if v in params.e] or [low]
    narrow = {o: few for o in optimizers.NAMES if o not in ADVERSARIAL_OPTIMIZERS}
    return dict(e=list(params.e), budgets=budgets, variant_e=[], budget_e=few, optimizer_e=narrow, **common)


def run_ablation(model: CAMModel, x: torch.Tensor, names: Sequence[str], e=E, budgets=(10, 30, N_ITER),
                 optimizer_names=optimizers.NAMES, ingredients=INGREDIENTS, variant_e=None, budget_e=None,
                 optimizer_e=None, keep_e=(), keep_optimizers=None, lamb: float | None = None, mode: str = "flip",
                 seed: int = SEED, results: dict | None = None, progress: bool = True) -> pd.DataFrame:
    """Every optimiser's default at the largest budget and every ``e`` (``optimizer_e``: ``{optimizer: [e, ...]}``
    narrows it per optimiser), at every budget (``n_iter`` in ``budgets``, passes per image) at each ``e`` of
    ``budget_e`` (default: every ``e``), each ingredient switched (:func:`ingredient_variants`) at the largest budget
    and each ``e`` of ``variant_e`` (default: every ``e``), and the default of each of ``keep_optimizers`` (default:
    all) in ``keep`` mode at the largest budget and each ``e`` of ``keep_e``. Returns the tidy table of
    :func:`ama.kernels.metrics.attack_metrics` rows (one per image x quantized) with the columns ``variant``,
    ``cam_loss``, ``label_loss`` and ``select`` added.

    ``results``: a dict of :class:`AttackResult` keyed by :class:`~ama.attack.result.OptimizerKey`; a setting found
    there is reused (e.g. the original loop's runs of :func:`run_grid`, ``OptimizerKey.default("sign", e, n_iter)``),
    the others are added to it. ``ingredients``: the settings switched one at a time (:func:`ingredient_variants`)."""
    from tqdm import tqdm

    widths = [e] if isinstance(e, int) else list(e)
    variant_e = widths if variant_e is None else variant_e
    budget_e = widths if budget_e is None else budget_e
    optimizer_e = optimizer_e or {}
    top = max(budgets)
    jobs = []
    for s in ingredient_variants(optimizer_names, ingredients):
        default = s["variant"] == "default"
        for w in optimizer_e.get(s["optimizer"], widths):
            for it in sorted(budgets):
                if (it == top and (default or w in variant_e)) or (default and w in budget_e):
                    jobs.append((s, w, it, mode))
            if default and w in keep_e and (keep_optimizers is None or s["optimizer"] in keep_optimizers):
                jobs.append((s, w, top, "keep"))
    results = {} if results is None else results
    kw = {} if lamb is None else {"lamb": lamb}
    frames = []
    for s, w, it, m in tqdm(jobs, desc=f"ablation {model.name}", mininterval=30, disable=not progress):
        key = OptimizerKey(s["optimizer"], s["variant"], w, it, m)
        if key not in results:
            opt = {k: s[k] for k in ("optimizer", "restarts", "cam_loss", "label_loss", "select")}
            results[key] = marginal_attack(model, x, e=w, n_iter=it, mode=m, seed=seed, names=names, **opt, **kw)
        frames.append(results[key].metrics.assign(variant=s["variant"], cam_loss=s["cam_loss"],
                                                  label_loss=s["label_loss"], select=s["select"]))
    return pd.concat(frames, ignore_index=True)


def ablation_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per ``model, mode, optimizer, variant, e, n_iter, quantized``: ``fooling_rate``, ``cam_cosine`` (means),
    ``kept_rate`` (share of images whose label is kept) and ``n_images``, from a :func:`run_ablation` table."""
    if "mode" not in table:
        table = table.assign(mode="flip")
    keys = ["model", "mode", "optimizer", "variant", "e", "n_iter", "quantized"]
    g = table.assign(kept=~table.fooled.astype(bool)).groupby(keys, sort=True)
    out = g.agg(fooling_rate=("fooled", "mean"), cam_cosine=("cam_cosine", "mean"), kept_rate=("kept", "mean"),
                n_images=("image", "size"))
    return out.reset_index()


def ablation_lines(summary: pd.DataFrame) -> list[str]:
    """One line per model, ``e``, mode, optimiser and variant of :func:`ablation_summary` at the largest budget
    (8-bit): fooling rate (flip) or labels kept (keep), and the CAM cosine."""
    top = eight_bit(summary[summary.n_iter == summary.n_iter.max()])
    return [f"{r.model} e={r.e} {r.mode:4s} {r.optimizer:5s} {r.variant:18s}: "
            + (f"fooling {r.fooling_rate:.0%}" if r.mode == "flip" else f"label kept {r.kept_rate:.0%}")
            + f", CAM cosine {r.cam_cosine:.3f}" for r in top.itertuples()]


# --- the ingredient study (SCIENCE.md section 6) ------------------------------------------------------------------
# Each ingredient of the stronger optimisers alone on top of the reference (sign steps, cross-entropy, last
# iterate), and each optimiser with all three; the setting is chosen on one half of the study's images and every
# variant reported on the other half, at each of the run's seeds.
INGREDIENT_STUDY = {
    "reference": {},
    "+margin loss": dict(label_loss="margin"),
    "+best 8-bit iterate": dict(select="best"),
    "+APGD schedule": dict(optimizer="apgd", label_loss="ce", select="last"),
    "+Adam": dict(optimizer="adam", label_loss="ce", select="last"),
    "APGD (all three)": dict(optimizer="apgd"),
    "Adam (all three)": dict(optimizer="adam"),
}
HALVES = ("tune", "report")
_RUN_KEYS = ("optimizer", "restarts", "cam_loss", "label_loss", "select", "e", "n_iter", "lamb", "seed", "mode")


def study_settings(variant: str) -> dict:
    """The :func:`ama.attack.optimizers.settings` of one variant of :data:`INGREDIENT_STUDY`. ``variant``: a name of
    :data:`INGREDIENT_STUDY`."""
    if variant not in INGREDIENT_STUDY:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(INGREDIENT_STUDY)}")
    return optimizers.settings(**{"optimizer": optimizers.ORIGINAL, **INGREDIENT_STUDY[variant]})


def study_halves(reported: Sequence[str], k: int) -> dict[str, str]:
    """``{image: "tune" | "report"}``: ``k`` of the run's ``reported`` images (class order) spread over them (all when
    ``k`` is 0 or at least their number), alternately in the half the setting is chosen on and the half it is
    reported on; the first image tunes."""
    return {name: HALVES[i % 2] for i, name in enumerate(evenly(list(reported), k))}


def ingredient_plan(params: RunParams) -> dict:
    """The study's attacks (keyword arguments of :func:`run_ingredients`): the smallest ``e``, the run's ``n_iter``,
    ``lamb`` and its ``n_seeds`` seeds from ``seed`` on (FAST: its passes)."""
    return dict(e=min(params.e), n_iter=params.n_iter, lamb=params.lamb, seeds=[params.seed + k for k in range(params.n_seeds)])


def run_key(params) -> tuple:
    """What identifies an attack run for reuse: its :class:`ama.attack.result.AttackParams`' optimiser settings,
    ``e``, ``n_iter``, ``lamb``, ``seed`` and ``mode`` (frame masks, untargeted)."""
    d = params.to_dict()
    return tuple(d[k] for k in _RUN_KEYS)


def run_ingredients(model: CAMModel, x: torch.Tensor, names: Sequence[str], halves: dict[str, str], e: int = 1,
                    n_iter: int = N_ITER, lamb: float = LAMB, seeds: Sequence[int] = (SEED,), made=(),
                    progress: bool = True) -> pd.DataFrame:
    """Every variant of :data:`INGREDIENT_STUDY` on the images of ``x`` ``(B, 3, H, W)`` that ``halves``
    (:func:`study_halves`) names, on the reported half at every seed and on the tuning half at the first (choosing
    needs no seed spread; time): the 8-bit rows of :func:`ama.kernels.metrics.attack_metrics` (flip) with the columns
    ``variant`` and ``half``. ``made``: attack results already computed on batches holding these images (the
    grid's, the seeds'); a run of the same settings (:func:`run_key`) is reused, not attacked again."""
    from tqdm import tqdm

    known = {run_key(r.params): r for r in made if r.params.mask == "frame" and not r.params.targeted}
    frames = []
    jobs = [(v, s) for v in INGREDIENT_STUDY for s in seeds]
    for variant, seed in tqdm(jobs, desc=f"ingredients {model.name}", mininterval=30, disable=not progress):
        idx = [k for k, n in enumerate(names) if halves.get(n) == "report" or (n in halves and seed == seeds[0])]
        if not idx:
            continue
        sub = [names[k] for k in idx]
        s = study_settings(variant)
        key = run_key(AttackParams(model=model.name, e=e, n_iter=n_iter, lamb=float(lamb), seed=int(seed), **s))
        r = known.get(key)
        if r is None or not set(sub) <= set(r.names):
            r = marginal_attack(model, x[idx], e=e, n_iter=n_iter, lamb=lamb, seed=seed, names=sub, **s)
        rows = eight_bit(r.metrics[r.metrics.image.isin(sub)])
        frames.append(rows.assign(variant=variant, half=rows.image.map(halves)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _choose(per_image: pd.DataFrame) -> str | None:
    """The variant with the highest mean fooled share over the images, then the lowest CAM cosine."""
    if per_image.empty:
        return None
    means = per_image.groupby(level="variant", sort=False).mean()
    return means.sort_values(["fooled", "cam_cosine"], ascending=[False, True], kind="stable").index[0]


def ingredient_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, ``e``, ``n_iter`` and variant of :func:`run_ingredients` rows, on the reported half: the fooling
    rate (each image's share of seeds fooled, mean over images) and the mean CAM cosine with bootstrap 95% intervals
    over images, the lowest and highest fooling rate across seeds, ``gain`` (fooled share minus the reference's, paired
    per image; ``more_fooled`` / ``less_fooled``: images where the variant fools more / less often across seeds) with
    the interval of the ``test`` that gives its ``verdict`` against 0 (``p_value``; holds: the variant fools more:
    McNemar's exact test at one seed, the paired t-test of shares over seeds, :meth:`Estimate.paired`), and
    ``cosine_drop`` (the reference's CAM cosine minus the variant's: above 0, it moves the CAM more); from the tuning
    half its fooling rate and cosine and ``chosen`` (the variant picked there: highest fooling, then lowest cosine)."""
    rows = []
    table = table.assign(fooled=table.fooled.astype(float))
    for (model, e, n_iter), g in table.groupby(["model", "e", "n_iter"], sort=False):
        per = g.groupby(["half", "variant", "image"], sort=False)[["fooled", "cam_cosine"]].mean()
        halves = set(per.index.get_level_values("half"))
        tune = per.xs("tune", level="half") if "tune" in halves else per.iloc[:0].droplevel("half")
        report = per.xs("report", level="half") if "report" in halves else per.iloc[:0].droplevel("half")
        chosen = _choose(tune)
        tune_means = tune.groupby(level="variant").mean()
        ref = report.xs("reference", level="variant") if "reference" in report.index.get_level_values(0) else None
        for variant in [v for v in INGREDIENT_STUDY if v in set(g.variant)]:
            s = study_settings(variant)
            row = dict(model=model, e=e, n_iter=n_iter, variant=variant, optimizer=s["optimizer"],
                       label_loss=s["label_loss"], select=s["select"], n_seeds=g[g.half == "report"].seed.nunique(),
                       tune_images=tune.xs(variant, level="variant").shape[0] if variant in tune_means.index else 0,
                       tune_fooling_rate=tune_means.fooled.get(variant, np.nan),
                       tune_cam_cosine=tune_means.cam_cosine.get(variant, np.nan), chosen=variant == chosen)
            if variant in report.index.get_level_values(0):
                r = report.xs(variant, level="variant")
                fooled, cosine = Estimate.of(r.fooled), Estimate.of(r.cam_cosine)
                by_seed = g[(g.half == "report") & (g.variant == variant)].groupby("seed").fooled.mean()
                row.update(n_images=fooled.n, fooling_rate=fooled.value, fooling_low=fooled.low,
                           fooling_high=fooled.high, seed_min=by_seed.min(), seed_max=by_seed.max(),
                           cam_cosine=cosine.value, cosine_low=cosine.low, cosine_high=cosine.high)
                if ref is not None and variant != "reference":
                    gain = Estimate.paired(r.fooled, ref.fooled.reindex(r.index))
                    drop = Estimate.of((ref.cam_cosine.reindex(r.index) - r.cam_cosine).to_numpy())
                    row.update(gain=gain.value, gain_low=gain.low, gain_high=gain.high, more_fooled=gain.discordant[0],
                               less_fooled=gain.discordant[1], test=gain.test, p_value=gain.p_value,
                               verdict=gain.verdict(0.0),
                               **gain.p_columns(0.0),
                               cosine_drop=drop.value, drop_low=drop.low, drop_high=drop.high)
            rows.append(row)
    return pd.DataFrame(rows)


def ingredient_lines(summary: pd.DataFrame) -> list[str]:
    """Per model and ``e`` of :func:`ingredient_summary`: which variant the tuning half chose and how each variant
    does on the reported half beside the reference, with intervals."""
    lines = []
    for (model, e, n_iter), g in summary.groupby(["model", "e", "n_iter"], sort=False):
        rep = g.dropna(subset=["fooling_rate"]) if "fooling_rate" in g else g.iloc[:0]
        chosen = g[g.chosen]
        n_rep = int(rep.n_images.max()) if len(rep) else 0
        head = (f"{model}, e = {e}, {n_iter} passes: chosen on {int(g.tune_images.max())} image(s) at the first seed: "
                + (f"{chosen.variant.iloc[0]}" if len(chosen) else "none") + f"; reported on {n_rep} other image(s)"
                + f" at {int(g.n_seeds.max())} seed(s)" + (" (rests on one image)" if n_rep == 1 else ""))
        lines.append(head)
        for r in rep.itertuples():
            text = (f"  {r.variant:20s} fools {pct(r.fooling_rate)} ({pct(r.fooling_low)} to {pct(r.fooling_high)}; "
                    f"seeds {pct(r.seed_min)} to {pct(r.seed_max)}), CAM cosine {r.cam_cosine:.2f} "
                    f"({r.cosine_low:.2f} to {r.cosine_high:.2f})")
            if isinstance(getattr(r, "verdict", None), str):
                text += (f"; gain over the reference {100 * r.gain:+.0f} points ({100 * r.gain_low:+.0f} to "
                         f"{100 * r.gain_high:+.0f}; {int(r.more_fooled)} vs {int(r.less_fooled)} images, "
                         f"{getattr(r, 'test', 'exact sign test')} p = {r.p_value:.2g}): {r.verdict}")
            lines.append(text)
    return lines


# --- capacity: a ten-times budget (SCIENCE.md section 6) --------------------------------------------------------------
CAPACITY_BUDGETS = (100, 1000)  # the run's budget and ten times it


def capacity_study(model: CAMModel, x: torch.Tensor, names: Sequence[str], e=(1, 2), budgets=CAPACITY_BUDGETS,
                   optimizer: str = optimizers.STRONGEST, lamb: float = LAMB, seed: int = SEED,
                   progress: bool = True) -> pd.DataFrame:
    """Is the frame limited by its capacity or by the optimiser's budget? ``optimizer``'s defaults at every ``e`` and
    every budget (``n_iter``, passes per image) on the images ``x`` ``(B, 3, H, W)``: the 8-bit rows of
    :func:`ama.kernels.metrics.attack_metrics` (flip)."""
    from tqdm import tqdm

    jobs = [(w, it) for w in ([e] if isinstance(e, int) else e) for it in budgets]
    frames = []
    for w, it in tqdm(jobs, desc=f"capacity {model.name}", disable=not progress):
        r = marginal_attack(model, x, e=w, n_iter=it, lamb=lamb, seed=seed, names=names, optimizer=optimizer)
        frames.append(eight_bit(r.metrics))
    return pd.concat(frames, ignore_index=True)


def capacity_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model, optimiser, ``e`` and budget of :func:`capacity_study` rows: the fooling rate with its exact 95%
    interval, the mean CAM cosine with its bootstrap interval, and, paired per image with the smallest budget,
    ``newly_fooled`` (images fooled here but not there) and ``no_longer_fooled``."""
    rows = []
    for (model, opt, e), g in table.groupby(["model", "optimizer", "e"], sort=False):
        base = g[g.n_iter == g.n_iter.min()].set_index("image").fooled.astype(bool)
        for n_iter, h in g.groupby("n_iter", sort=True):
            fooled = h.set_index("image").fooled.astype(bool)
            rate, cosine = Estimate.rate(int(fooled.sum()), len(fooled)), Estimate.of(h.cam_cosine)
            rows.append(dict(model=model, optimizer=opt, e=e, n_iter=n_iter, n_images=len(fooled),
                             fooled=int(fooled.sum()), fooling_rate=rate.value, fooling_low=rate.low,
                             fooling_high=rate.high, cam_cosine=cosine.value, cosine_low=cosine.low,
                             cosine_high=cosine.high, newly_fooled=int((fooled & ~base.reindex(fooled.index)).sum()),
                             no_longer_fooled=int((~fooled & base.reindex(fooled.index)).sum())))
    return pd.DataFrame(rows)
