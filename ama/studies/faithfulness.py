"""How faithful are the saliency maps, and does a receptive-field-aware upsampling help? (notebook 05)

A module of its own because it combines four others: CAM and its upsamplings (:mod:`ama.kernels.cam`), the ERFs
(:mod:`ama.kernels.receptive_field`), the sliding-patch occlusion (:mod:`ama.kernels.occlusion`) and the
deletion/insertion AUC (:mod:`ama.kernels.metrics`).

Upsamplings compared (:data:`SALIENCY_UPSAMPLINGS`): ``bilinear`` (the reference's, corners aligned), ``gaussian`` (width
and centres fitted to the clean images' measured ERFs, :func:`ama.kernels.cam.fit_erf_gaussian`) and ``erf`` (the exact
projection with each image's own ERFs).

* Faithfulness: deletion (mean-colour baseline) and insertion (blurred start) AUC of each saliency map.
* Agreement with occlusion: Spearman correlation, over the positions of :func:`ama.kernels.occlusion.sliding_patch`,
  between how much occluding the patch moves the raw CAM (``max_abs_rel_change``) and the saliency's mean
  over the same patch.
* Where the evidence sits under the attack: the share of a saliency map's mass within ``e`` pixels of the
  border (``frame_mass``) and within ``e + band`` pixels (``band_mass``, the frame's neighbourhood, narrower where
  the image is too small for it), on the
  clean and on the attacked image (CAM of the clean class).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F

from ..artifacts import TABLES
from ..attack.result import OptimizerKey
from .attack_experiments import ORIGINAL, adversarial_result

from ..figures.study_charts import upsampling_under_attack_figure
from ..geometry import frame_mask
from ..inputs.images import list_images, load_records
from ..inputs.protocol import run_names, stratified_choice
from ..kernels.cam import compute_cam, normalize_maps
from ..kernels.metrics import FAITHFULNESS_STEPS, deletion_auc, insertion_auc, spearman
from ..kernels.occlusion import SLIDING_PATCH, sliding_patch
from ..kernels.receptive_field import effective_receptive_field
from ..kernels.upsampling import fit_erf_gaussian, upsample
from ..params import FAST_N_IMAGES
from ..paths import DATA_DIR
from ..stats.intervals import HOLDS, pooled
from ..store.tables import interval_text, read_table, readable
from .explanations import TRANSFER_METHODS
from .explanations import explanation
from .study import Figure, Finding, Study, Table, Verdicts, deciding, register

SALIENCY_UPSAMPLINGS = ("bilinear", "gaussian", "erf")
BAND = 16  # px beyond the frame counted as its neighbourhood (half the stride of a 7 x 7 CAM at 224 px)


def saliency_maps(cams: torch.Tensor, size, erf: torch.Tensor, fit: dict, upsamplings=SALIENCY_UPSAMPLINGS) -> dict:
    """``{upsampling: (B, H, W)}`` saliency of CAMs ``(B, h, w)``, each min-max normalised to ``[0, 1]``. ``fit``: the
    Gaussian's ``{"sigma", "centres"}``; ``upsamplings``: names of :data:`SALIENCY_UPSAMPLINGS`."""
    out = {}
    for mode in upsamplings:
        if mode == "gaussian":
            s = upsample(cams, size, "gaussian", **fit)
        elif mode == "erf":
            s = upsample(cams, size, "erf", erf=erf)
        else:
            s = upsample(cams, size, mode)
        out[mode] = normalize_maps(s.float())
    return out


def mass_share(maps: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """``(B,)`` share of each non-negative map's mass ``(B, H, W)`` inside the boolean ``region`` ``(H, W)``."""
    m = maps.clamp_min(0).flatten(1)
    return (m * region.flatten()[None].to(m)).sum(1) / m.sum(1).clamp_min(1e-12)


def patch_means(maps: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """``(B, n_positions)``: each map's mean over every ``patch x patch`` square at ``stride``, row-major (the
    order of :func:`ama.kernels.occlusion.sliding_patch`)."""
    return F.avg_pool2d(maps[:, None].float(), patch, stride).flatten(1)


def occlusion_agreement(occlusion: pd.DataFrame, maps: torch.Tensor, names, patch: int, stride: int) -> torch.Tensor:
    """``(B,)`` Spearman correlation between the sliding-patch occlusion effect (``max_abs_rel_change`` per
    position) and the saliency's patch means. ``occlusion``: rows of :func:`ama.kernels.occlusion.sliding_patch`."""
    means = patch_means(maps, patch, stride)
    effect = torch.stack([torch.tensor(occlusion[occlusion.image == n].sort_values(["top", "left"])
                                       .max_abs_rel_change.to_numpy(), dtype=torch.float32) for n in names])
    return spearman(effect[:, None], means[:, None])  # (B, 1, P): one correlation per image


def upsampling_comparison(model, x: torch.Tensor, names, attack=None, occlusion: pd.DataFrame | None = None,
                          patch: int = SLIDING_PATCH, stride: int = SLIDING_PATCH, steps: int = FAITHFULNESS_STEPS,
                          band: int = BAND, batch_size: int = 32, fit: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """One row per image x upsampling: ``deletion_auc, insertion_auc, occlusion_spearman`` on the clean images and,
    given ``attack`` (an :class:`~ama.attack.marginal.AttackResult` of ``x``), ``e, frame_share`` (the frame's share of
    the image), ``clean_frame_mass, adv_frame_mass, clean_band_mass, adv_band_mass`` (the attacked image's map uses its
    own ERFs in ``erf`` mode; ``gaussian`` the same fit). ``fit``: the Gaussian's ``{"sigma", "centres"}``
    (:func:`calibration_fit`: images held out); default fitted to the ERFs of ``x`` themselves. Returns the table and
    ``{"sigma", "centres", "saliency", "adv_saliency"}`` (``{upsampling: (B, H, W)}`` maps of the clean and the attacked
    images; the latter None without ``attack``). ``occlusion``: the images' sliding-patch rows (computed when None);
    ``band``: pixels beyond the frame in its neighbourhood."""
    x = x.to(model.device)
    B, _, H, W = x.shape
    with torch.no_grad():
        clean = compute_cam(model, x)
    erf = effective_receptive_field(model, x, clean.target)
    h, w = clean.cam.shape[-2:]
    fit = fit_erf_gaussian(erf, (h, w)) if fit is None else fit
    sal = saliency_maps(clean.cam, (H, W), erf, fit)
    rows = {"image": list(names) * len(SALIENCY_UPSAMPLINGS), "model": model.name,
            "upsampling": [m for m in SALIENCY_UPSAMPLINGS for _ in range(B)]}
    cols = {"deletion_auc": [], "insertion_auc": [], "occlusion_spearman": []}
    for mode in SALIENCY_UPSAMPLINGS:
        cols["deletion_auc"].append(deletion_auc(model, x, sal[mode], clean.target, steps, batch_size=batch_size))
        cols["insertion_auc"].append(insertion_auc(model, x, sal[mode], clean.target, steps, batch_size=batch_size))
        cols["occlusion_spearman"].append(occlusion_agreement(occlusion, sal[mode].cpu(), names, patch, stride)
                                          if occlusion is not None else torch.full((B,), float("nan")))
    if attack is not None:
        e = int(attack.params.e)
        adv = attack.adv_q.to(model.device)
        c = attack.clean_class.to(model.device)
        adv_erf = effective_receptive_field(model, adv, c)
        adv_sal = saliency_maps(attack.adv_q_cam.to(model.device), (H, W), adv_erf, fit)
        band = min(band, (min(H, W) - 1) // 2 - e)  # the neighbourhood stays inside a small image
        frame, ring = frame_mask((H, W), e), frame_mask((H, W), e + band)
        rows["e"], rows["frame_share"] = e, frame.float().mean().item()
        for key, region in (("frame_mass", frame), ("band_mass", ring)):
            cols[f"clean_{key}"] = [mass_share(sal[m].cpu(), region) for m in SALIENCY_UPSAMPLINGS]
            cols[f"adv_{key}"] = [mass_share(adv_sal[m].cpu(), region) for m in SALIENCY_UPSAMPLINGS]
    else:
        adv_sal = None
    table = pd.DataFrame({**rows, **{k: torch.cat(v).numpy() for k, v in cols.items()}})
    return table, {"sigma": fit["sigma"], "centres": fit["centres"], "saliency": sal, "adv_saliency": adv_sal,
                   "table": table}


def faithfulness_table(model, x: torch.Tensor, names, maps: dict, target=None, steps: int = FAITHFULNESS_STEPS,
                       batch_size: int = 32) -> pd.DataFrame:
    """Deletion and insertion AUC per image of each saliency in ``maps`` ``{(method, upsampling): (B, H, W)}``:
    columns ``image, model, method, upsampling, deletion_auc, insertion_auc``."""
    frames = []
    for (method, up), s in maps.items():
        frames.append(pd.DataFrame(dict(
            image=list(names), model=model.name, method=method, upsampling=up,
            deletion_auc=deletion_auc(model, x, s, target, steps, batch_size=batch_size).numpy(),
            insertion_auc=insertion_auc(model, x, s, target, steps, batch_size=batch_size).numpy())))
    return pd.concat(frames, ignore_index=True)


CALIBRATION_IMAGES = 8  # images of the kit's ImageNet set the Gaussian upsampling is fitted on, none of a run's


def calibration_fit(model, params, exclude=()) -> dict:
    """The Gaussian upsampling's ``{"sigma", "centres"}`` fitted (:func:`ama.kernels.upsampling.fit_erf_gaussian`) to the ERFs
    of :data:`CALIBRATION_IMAGES` images (FAST: :data:`~ama.params.FAST_N_IMAGES`) of the kit's ``data/imagenet`` set,
    drawn by a class-stratified choice with the run's seed among those not named in ``exclude`` (the run's own): the
    fit is tuned on images the run does not report, and the same for every shard of a run. ``params``: the run's."""
    records = [r for r in list_images(DATA_DIR / "imagenet") if r.name not in set(exclude)]
    n = FAST_N_IMAGES if params.fast else CALIBRATION_IMAGES
    keep = set(stratified_choice([r.name for r in records], [r.label for r in records], n, params.seed))
    x = load_records([r for r in records if r.name in keep], model).images.to(model.device)
    return fit_erf_gaussian(effective_receptive_field(model, x), model.feature_size(tuple(x.shape[-2:])))


def faithfulness_experiment(model, x: torch.Tensor, names, attack, steps: int = FAITHFULNESS_STEPS,
                            methods=(), fit: dict | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Notebook 05's faithfulness study for one model: :func:`upsampling_comparison` of CAM's upsamplings on the
    clean images (occlusion agreement with the kit's sliding patch; where the mass goes under ``attack``, an
    :class:`~ama.attack.result.AttackResult` of ``x``), and the deletion / insertion AUC of CAM under each upsampling
    and of each method of ``methods`` (:func:`ama.studies.explanations.explanation`, bilinear). Returns the comparison
    rows, the faithfulness rows (``image, model, method, upsampling, deletion_auc, insertion_auc``) and the
    comparison's maps and table (:func:`upsampling_comparison`). ``fit``: the Gaussian's ``{"sigma", "centres"}``
    (:func:`calibration_fit`)."""
    occlusion = sliding_patch(model, x, names)
    comparison, info = upsampling_comparison(model, x, names, attack, occlusion, steps=steps, fit=fit)
    cam_rows = comparison[["image", "model", "upsampling", "deletion_auc", "insertion_auc"]].assign(method="cam")
    with torch.no_grad():
        c = compute_cam(model, x.to(model.device)).target.cpu()
    maps = {(m, "bilinear"): upsample(explanation(model, x, c, m), x.shape[-2:]) for m in methods}
    faith = pd.concat([cam_rows, faithfulness_table(model, x, names, maps, c, steps)], ignore_index=True)
    return comparison, faith[["image", "model", "method", "upsampling", "deletion_auc", "insertion_auc"]], info


def frame_mass_ratio(comparison: pd.DataFrame) -> pd.DataFrame:
    """Per (model, image, upsampling, e) of ``upsampling_comparison``: the map's mass on the frame's own pixels
    divided by the frame's share of the image (``frame_share``), clean (``clean_ratio``) and attacked (``adv_ratio``),
    and ``change`` = attacked minus clean. ``comparison``: rows of ``upsampling_comparison``."""
    out = comparison[["model", "image", "upsampling", "e"]].copy()
    out["clean_ratio"] = comparison.clean_frame_mass / comparison.frame_share
    out["adv_ratio"] = comparison.adv_frame_mass / comparison.frame_share
    out["change"] = out.adv_ratio - out.clean_ratio
    return out


def frame_mass_summary(ratios: pd.DataFrame) -> pd.DataFrame:
    """Per model, upsampling and ``e`` of :func:`frame_mass_ratio` rows: the mean clean and attacked ratios and the
    mean change, each with its bootstrap interval over images; ``verdict``: does the attack raise the map's mass
    on the frame (change above 0)? (with ``p_holds``, ``p_fails``) ``ratios``: rows of :func:`frame_mass_ratio`."""
    rows = []
    for (model, mode, e), g in ratios.groupby(["model", "upsampling", "e"], sort=False):
        row = dict(model=model, upsampling=mode, e=e, n_images=g.image.nunique())
        for col in ("clean_ratio", "adv_ratio", "change"):
            est = pooled(g, col)
            row.update({col: est.value, f"{col}_low": est.low, f"{col}_high": est.high})
        change = pooled(g, "change")
        row.update(verdict=change.verdict(0.0), **change.p_columns(0.0))
        rows.append(row)
    return pd.DataFrame(rows)


def _first_model(runs: dict) -> dict:
    """The run's first model of ``runs`` (:func:`ama.runs.folder.load_models_and_images`): the upsampling figure shows
    one model's images, readable on a page; the study's table gives every model."""
    return dict(list(runs.items())[:1])


def upsampling_panels(runs: dict, extras: dict | None, params, out_dir, k: int = 3) -> dict:
    """For :func:`ama.figures.study_charts.upsampling_under_attack_figure`: per model, the reference attack at the
    smallest ``e`` on its first ``k`` images, their attacked saliency under each upsampling, and each map's mass on the
    frame's pixels over the frame's share of the area (``{upsampling: [ratio per image]}``, ``SCIENCE.md`` section 7),
    all of the same model and images. ``runs``: :func:`ama.runs.folder.load_models_and_images`; ``extras``: the
    ``beyond`` experiment's (reused where it ran the faithfulness study), or None (a sharded run keeps no maps:
    computed again for the shown images); ``params``, ``out_dir``: the run's; ``k``: images per model."""
    e0 = min(params.e)
    panels = {}
    for name, (model, data) in runs.items():
        if extras and extras[name].get("upsampling"):
            attack = extras[name]["attacks"][OptimizerKey.default(ORIGINAL, e0, params.n_iter)]
            maps = {up: m[:k] for up, m in extras[name]["upsampling"]["adv_saliency"].items()}
            table = extras[name]["upsampling"]["table"]
        else:
            x, names, x_names = data.images[:k], data.names[:k], list(data.names)
            attack = adversarial_result(model, x, names, params, out_dir, ORIGINAL, e0)
            reported = run_names(params, out_dir, x_names)
            fit = calibration_fit(model, params, reported)
            table, info = upsampling_comparison(model, x, names, attack, steps=1, fit=fit)
            maps = info["adv_saliency"]
        shown = list(attack.names[:len(next(iter(maps.values())))])
        rows = table[table.image.isin(shown)].set_index(["upsampling", "image"])
        ratio = rows.adv_frame_mass / rows.frame_share
        panels[name] = (attack, maps, {up: [float(ratio.loc[(up, n)]) for n in shown] for up in maps})
    return panels


UPSAMPLING_NAMES = {"bilinear": "bilinear (CAM's)", "gaussian": "receptive-field Gaussian", "erf": "ERF projection"}


def faithfulness_finding(run_dir: Path) -> Finding | None:
    """The report's finding: per upsampling of CAM, the deletion and insertion AUC, the agreement with sliding-patch
    occlusion and the map's mass on the frame, clean and attacked, with the verdict that decides on its change (does
    the map reveal the attack's pixels?); None without the run's ``upsampling_summary``."""
    tables = Path(run_dir) / "tables"
    up, ratio = read_table(tables, TABLES.upsampling_summary), read_table(tables, TABLES.frame_mass_ratio)
    comparison = read_table(tables, TABLES.upsampling_comparison)
    if up is None and comparison is not None and len(comparison):  # a run folder from before the summaries
        summaries = _summarise({TABLES.upsampling_comparison: comparison,
                                TABLES.faithfulness: read_table(tables, TABLES.faithfulness)})
        up, ratio = summaries[TABLES.upsampling_summary], summaries.get(TABLES.frame_mass_ratio)
    if up is None or up.empty:
        return None
    keys = ["model", "upsampling"]
    if ratio is not None and len(ratio):
        ratio, label = deciding(run_dir, TABLES.frame_mass_ratio, ratio)
        up = up.merge(ratio.drop(columns=["e"], errors="ignore"), on=keys, how="left")
    else:
        label = "verdict"
    means = up.groupby("upsampling").mean(numeric_only=True)
    best = means.occlusion_spearman.idxmax()
    sentence = ("Does an ERF-aware upsampling explain better? Deletion AUC (lower is better): "
                + ", ".join(f"{UPSAMPLING_NAMES.get(m, m)} {means.deletion_auc[m]:.2f}" for m in means.index)
                + f"; agreement with occlusion is highest for {UPSAMPLING_NAMES.get(best, best)}.")
    if "verdict" in up:
        raised = [UPSAMPLING_NAMES.get(m, m) for m in up[up.verdict == HOLDS].upsampling.unique()]
        sentence += (" Under the attack, " + (f"only {', '.join(raised)} puts more mass on the frame's pixels"
                                               if raised else "no map puts more mass on the frame's pixels") + ".")
    columns = {"model": "model"} if up.model.nunique() > 1 else {}
    columns.update({"upsampling": lambda r: UPSAMPLING_NAMES.get(r.upsampling, r.upsampling),
                    "deletion AUC": "deletion_auc", "insertion AUC": "insertion_auc",
                    "Spearman with occlusion": "occlusion_spearman",
                    "frame mass / area: clean": "clean_ratio", "attacked": "adv_ratio",
                    "change (95% CI)": lambda r: interval_text(getattr(r, "change", None), getattr(r, "change_low", None),
                                                               getattr(r, "change_high", None), signed=True),
                    label: "verdict"})
    return Finding(sentence, readable(up, columns))


def _compute(model, inputs) -> dict:
    """The study's rows per image: :func:`faithfulness_experiment` of the run's frame attack at the smallest ``e``,
    the Gaussian fitted to images the run does not report (:func:`calibration_fit`); its maps go to ``inputs.extras``."""
    frame = inputs.attack(ORIGINAL, min(inputs.params.e))
    fit = calibration_fit(model, inputs.params, inputs.reported)
    methods = [m for m in TRANSFER_METHODS if m not in ("scorecam", "occlusion")]
    comparison, faith, info = faithfulness_experiment(model, inputs.x, inputs.names, frame, inputs.params.auc_steps,
                                                      methods, fit)
    inputs.extras["upsampling"] = info
    return {TABLES.faithfulness: faith, TABLES.upsampling_comparison: comparison}


def _summarise(tables: dict) -> dict:
    """Mean AUCs per method and upsampling, the comparison's means and the frame's mass ratio with its verdict."""
    comparison = tables[TABLES.upsampling_comparison]
    out = {TABLES.faithfulness_summary: (tables[TABLES.faithfulness].groupby(["model", "method", "upsampling"])
                                         [["deletion_auc", "insertion_auc"]].mean().reset_index()),
           TABLES.upsampling_summary: (comparison.drop(columns="image").groupby(["model", "upsampling"])
                                       .mean(numeric_only=True).reset_index())}
    if "frame_share" in comparison:
        out[TABLES.frame_mass_ratio] = frame_mass_summary(frame_mass_ratio(comparison))
    return out


def _caption(run_dir) -> str | None:
    """The figure's caption on the run in ``run_dir``: the map's mass on the frame, clean and attacked, bilinear
    against the ERF projection (the first model's, smallest ``e``), None without ``frame_mass_ratio``."""
    rows = read_table(Path(run_dir) / "tables", TABLES.frame_mass_ratio)
    if rows is None or rows.empty or not {"bilinear", "erf"} <= set(rows.upsampling):
        return None
    rows = rows[(rows.model == rows.model.iloc[0]) & (rows.e == rows.e.min())].set_index("upsampling")
    b, p = rows.loc["bilinear"], rows.loc["erf"]
    return (f"Attacked at e = {int(b.e)}, the bilinear map's mass on the frame goes from {b.clean_ratio:.2f} to "
            f"{b.adv_ratio:.2f} times the frame's share, the ERF projection's from {p.clean_ratio:.2f} to "
            f"{p.adv_ratio:.2f} ({int(b.n_images)} images).")


STUDY = register(Study(
    name="faithfulness", question="Faithfulness and ERF-aware upsampling",
    tables=(Table("faithfulness", "image x method x upsampling: deletion and insertion AUC"),
            Table("upsampling_comparison", "image x upsampling: bilinear, the ERF Gaussian and the ERF projection compared"),
            Table("faithfulness_summary", "method x upsampling: their means", "summary"),
            Table("upsampling_summary", "upsampling: those means", "summary"),
            Table("frame_mass_ratio", "upsampling: the map's mass on the frame over the frame's share, clean vs attacked",
                  "summary",
                  verdicts=Verdicts("change", "change_low", "change_high", 0.0,
                                    lambda r: f"the attack raises the {r.upsampling} map's mass on the frame, e = {r.e}"))),
    figures=(Figure("upsampling_under_attack", "an attacked image's saliency under each upsampling",
                    lambda folder: upsampling_under_attack_figure(upsampling_panels(
                        _first_model(folder.loaded), folder.extras, folder.params, folder.out)), attacks=True,
                    caption=_caption),),
    compute=_compute, summarise=_summarise, keys=("method", "upsampling"), measured_by=("method", "upsampling"),
    section=faithfulness_finding))
