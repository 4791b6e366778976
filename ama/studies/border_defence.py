"""A border defence against the marginal attack (``SCIENCE.md`` section 8): should one worry about 1-pixel frames?

Before classifying (and before computing the CAM) the image's outer ``e`` rows and columns are replaced
(:func:`defend`): ``replicate`` copies the nearest pixel ``e`` px inside (crop ``e``, pad ``e`` by replication);
``crop_resize`` crops ``e`` and resizes back (bilinear, antialias off). Either way the defended image no longer
depends on the frame's pixels at all: an attacked image and its clean image give the same defended image bit for
bit (column ``same_as_clean``), so an attack that knows the defence has no pixel left to change (its gradient through
the defence is exactly zero). What the defence costs is its clean accuracy (:func:`clean_cost`).

:func:`defence_rows` gives, per attacked image (the run's saved 8-bit adversarial images), whether the defended
prediction is back to the true class and the defended CAM's cosine to the clean CAM; :func:`defence_summary` the
shares with exact intervals, ``restored`` counted on the images the attack fooled (on the others it is their clean
accuracy, 100% on the protocol's images). The defence is not free of attack: it copies the ring of pixels at depth
``e`` outwards, and :func:`adaptive_rows` attacks that ring through the defence (:func:`defended_model`), the same
attack and budget as the frame's, so that its fooling rate stands beside the undefended frame's. The study ``defence``,
declared at the end (:mod:`ama.studies.study`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
import torch.nn.functional as F

import torch.nn as nn

from ..artifacts import TABLES
from ..attack.marginal import attack_batch, marginal_attack
from ..attack.optimizers import ORIGINAL
from ..attack.result import AttackResult
from ..inputs.images import load_records
from ..inputs.protocol import checked_records, labelled
from ..kernels.cam import compute_cam
from ..geometry import frame_mask
from ..kernels.cam_model import CAMModel, freeze
from ..kernels.metrics import cosine
from ..params import RunParams
from ..stats.intervals import Estimate
from ..criteria import pct
from ..store.tables import interval_text, p_text, read_table, readable
from .ablation import ADVERSARIAL_OPTIMIZERS
from .study import Finding, Study, Table, register

DEFENCES = ("replicate", "crop_resize")
DEFENCE_E = (1, 2)   # the widths defended (the run's; its smallest when it has neither)
BATCH = 50           # images per forward pass of the clean cost


def defend(x: torch.Tensor, e: int, defence: str = "replicate") -> torch.Tensor:
    """``x`` ``(B, 3, H, W)`` in ``[0, 1]`` with its outer ``e`` rows and columns replaced, by ``defence``:
    ``replicate`` (the pixel ``e`` px inside, repeated) or ``crop_resize`` (crop ``e`` px each side, resize back bilinearly, antialias off)."""
    if defence not in DEFENCES:
        raise ValueError(f"unknown defence {defence!r}; use one of {', '.join(DEFENCES)}")
    H, W = x.shape[-2:]
    if not 0 < 2 * e < min(H, W):
        raise ValueError(f"e must be at least 1 and leave an inner image, got e = {e} for {H} x {W}")
    inner = x[..., e:H - e, e:W - e]
    if defence == "replicate":
        return F.pad(inner, (e, e, e, e), mode="replicate")
    return F.interpolate(inner, size=(H, W), mode="bilinear", align_corners=False, antialias=False)


def defence_widths(params: RunParams) -> list[int]:
    """The run's widths of :data:`DEFENCE_E` (else its smallest). ``params``: the run's parameters."""
    return params.widths_among(DEFENCE_E)


def defence_rows(model: CAMModel, result: AttackResult, labels, optimizer: str) -> pd.DataFrame:
    """Per image of one attack's ``result`` (8-bit images; its width ``e`` is the defence's) and defence:
    ``model, image, e, optimizer, defence, label``, ``fooled`` (undefended), ``restored`` (the defended attacked
    image's top-1 is the true class ``labels``, else the clean prediction), ``clean_kept`` (the defended clean image's
    top-1 is), ``cam_cosine`` (the clean class's CAM of the attacked image to the clean CAM, undefended),
    ``defended_cam_cosine`` (the same on the defended attacked image) and ``same_as_clean`` (the defended attacked
    image equals the defended clean image)."""
    e, x, adv = result.params.e, result.clean, result.adv_q
    truth = torch.as_tensor(labels) if labels is not None else result.clean_class
    truth = torch.where(truth >= 0, truth, result.clean_class)
    frames = []
    for defence in DEFENCES:
        dx, dadv = defend(x, e, defence), defend(adv, e, defence)
        with torch.no_grad():
            out = compute_cam(model, dadv.to(model.device), result.clean_class.to(model.device))
            clean_pred = model(dx.to(model.device)).argmax(1).cpu()
        frames.append(pd.DataFrame(dict(
            model=model.name, image=list(result.names), e=e, optimizer=optimizer, defence=defence,
            label=truth.numpy(), fooled=(result.adv_q_class != truth).numpy(),
            restored=(out.logits.argmax(1).cpu() == truth).numpy(), clean_kept=(clean_pred == truth).numpy(),
            cam_cosine=cosine(result.clean_cam, result.adv_q_cam).numpy(),
            defended_cam_cosine=cosine(result.clean_cam, out.cam.cpu()).numpy(),
            same_as_clean=(dadv == dx).flatten(1).all(1).numpy())))
    return pd.concat(frames, ignore_index=True)


def defence_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per model x ``e`` x optimiser x defence: ``n_images``, ``fooled`` (undefended), ``n_fooled``, ``restored`` (on
    the fooled images: the share back to the true class) and ``clean_kept`` (on all) with exact 95% intervals, the share
    ``same_as_clean`` and the mean CAM cosines undefended and defended (``rows``: :func:`defence_rows`)."""
    out = []
    for (model, e, optimizer, defence), g in rows.groupby(["model", "e", "optimizer", "defence"], sort=True):
        fooled = g[g.fooled.astype(bool)]
        row = dict(model=model, e=e, optimizer=optimizer, defence=defence, n_images=len(g), fooled=g.fooled.mean(),
                   n_fooled=len(fooled))
        for column, h in (("restored", fooled), ("clean_kept", g)):
            est = Estimate.rate(int(h[column].sum()), len(h))
            row.update({column: est.value, f"{column}_low": est.low, f"{column}_high": est.high})
        row.update(same_as_clean=g.same_as_clean.mean(), cam_cosine=g.cam_cosine.mean(),
                   defended_cam_cosine=g.defended_cam_cosine.mean())
        out.append(row)
    return pd.DataFrame(out)


class _Defended(nn.Module):
    """``defend`` before a network: the backbone of :func:`defended_model`."""

    def __init__(self, backbone: nn.Module, e: int, defence: str):
        super().__init__()
        self.backbone, self.e, self.defence = backbone, e, defence

    def forward(self, x):  # copying pixels commutes with the per-channel normalisation before it
        return self.backbone(defend(x, self.e, self.defence))


def defended_model(model: CAMModel, e: int, defence: str = "replicate") -> CAMModel:
    """``model`` with :func:`defend` (``e``, ``defence``) before its network: what an attack that knows the defence
    attacks (its gradients pass through the copy); the same weights, frozen."""
    return freeze(CAMModel(f"{model.name}+{defence}{e}", _Defended(model.backbone, e, defence), model.fc,
                           model.preprocessing, model.class_names).to(model.device))


def ring_mask(size, e: int):
    """The pixels ``replicate`` at width ``e`` copies outwards: the 1-pixel ring at depth ``e`` (``(H, W)`` bool)."""
    return frame_mask(size, e + 1) & ~frame_mask(size, e)


def adaptive_rows(model: CAMModel, x: torch.Tensor, names, labels, params, optimizer: str, e: int) -> pd.DataFrame:
    """The adaptive attack on ``replicate`` at width ``e``: ``optimizer``'s attack (its defaults, the run's budget and
    seed; 8-bit) through :func:`defended_model` on :func:`ring_mask`, the pixels the defence reads, one row per image:
    ``ring_pixels``, ``fooled`` (the defended prediction is not the true class ``labels``) and ``cam_cosine`` (the
    defended model's CAM of the clean class, attacked against clean). ``params``: the run's."""
    defended, ring = defended_model(model, e), ring_mask(tuple(x.shape[-2:]), e)
    size, frames = attack_batch(x.device), []
    truth = torch.full((len(x),), -1, dtype=torch.long) if labels is None else torch.as_tensor(labels)
    for s in range(0, len(x), size):
        r = marginal_attack(defended, x[s:s + size], e=e, n_iter=params.n_iter, lamb=params.lamb, seed=params.seed,
                            mask=ring, names=list(names[s:s + size]), optimizer=optimizer)
        t = truth[s:s + size]
        t = torch.where(t >= 0, t, r.clean_class)
        frames.append(pd.DataFrame(dict(model=model.name, image=list(names[s:s + size]), e=e, optimizer=optimizer,
                                        defence="replicate", ring_pixels=int(ring.sum()),
                                        fooled=(r.adv_q_class != t).numpy(),
                                        cam_cosine=cosine(r.clean_cam, r.adv_q_cam).numpy())))
    return pd.concat(frames, ignore_index=True)


def adaptive_summary(adaptive: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Per model x ``e`` x optimiser: the adaptive ring attack's fooling rate through the defence (``adaptive``:
    :func:`adaptive_rows`) with its exact interval, beside the same optimiser's frame attack undefended on the same
    images (``rows``: :func:`defence_rows`), paired per image (``ring_minus_frame``, McNemar's exact interval and
    test)."""
    out = []
    frame = rows[rows.defence == "replicate"]
    for (model, e, optimizer), g in adaptive.groupby(["model", "e", "optimizer"], sort=True):
        f = frame[(frame.model == model) & (frame.e == e) & (frame.optimizer == optimizer)].set_index("image")
        g = g.set_index("image")
        common = g.index.intersection(f.index)
        rate = Estimate.rate(int(g.fooled.sum()), len(g))
        gap = Estimate.paired(g.loc[common, "fooled"].astype(float), f.loc[common, "fooled"].astype(float))
        out.append(dict(model=model, e=e, optimizer=optimizer, n_images=len(g), ring_pixels=int(g.ring_pixels.iloc[0]),
                        ring_fooled=rate.value, ring_low=rate.low, ring_high=rate.high,
                        frame_fooled=f.loc[common, "fooled"].mean() if len(common) else float("nan"),
                        ring_minus_frame=gap.value, gap_low=gap.low, gap_high=gap.high, p_value=gap.p_value,
                        cam_cosine=g.cam_cosine.mean()))
    return pd.DataFrame(out)


def clean_cost(model: CAMModel, records: Sequence, widths: Sequence[int], batch_size: int = BATCH) -> pd.DataFrame:
    """The defence's clean cost on labelled ``records`` (:class:`~ama.inputs.images.ImageRecord`; the set the run's
    selection checked): per defence and width of ``widths``, ``n_images``, top-1 undefended and defended and their
    paired difference (McNemar's exact interval, ``lost`` / ``gained`` the images that differ, McNemar's exact ``p_value``);
    ``batch_size`` images per forward pass."""
    plain, defended = [], {(d, e): [] for d in DEFENCES for e in widths}
    for start in range(0, len(records), batch_size):
        data = load_records(records[start:start + batch_size], model)
        if not data.names:
            continue
        x, labels = data.images.to(model.device), data.labels.to(model.device)
        with torch.no_grad():
            plain.append((model(x).argmax(1) == labels).cpu())
            for d, e in defended:
                defended[d, e].append((model(defend(x, e, d)).argmax(1) == labels).cpu())
    base = torch.cat(plain).float().numpy()
    out = []
    for (d, e), parts in defended.items():
        after = torch.cat(parts).float().numpy()
        diff = Estimate.paired(after, base)
        out.append(dict(model=model.name, defence=d, e=e, n_images=len(base), top1=base.mean(),
                        defended_top1=after.mean(), change=diff.value, change_low=diff.low, change_high=diff.high,
                        gained=diff.discordant[0], lost=diff.discordant[1], p_value=diff.p_value))
    return pd.DataFrame(out)


def clean_cost_table(runs: dict, params: RunParams) -> pd.DataFrame:
    """:func:`clean_cost` of every model of the run (``runs``: :func:`ama.runs.folder.load_models_and_images`) on the
    labelled set its selection checked (:func:`ama.inputs.protocol.checked_records`); empty for an unlabelled set."""
    records = checked_records(params)
    if not labelled(records):
        return pd.DataFrame()
    return pd.concat([clean_cost(model, records, defence_widths(params)) for model, _ in runs.values()],
                     ignore_index=True)


DEFENCE_NAMES = {"replicate": "copy the pixel e px inside", "crop_resize": "crop e px, resize back"}


def adaptive_sentence(adaptive: pd.DataFrame) -> str:
    """The report's sentence on the adaptive ring attack at the smallest ``e`` (the first model's; ``adaptive``:
    :func:`adaptive_summary` rows): each optimiser's fooling rate through the defence beside the frame's undefended on
    the same images, with McNemar's exact p."""
    a = adaptive[adaptive.model == adaptive.model.iloc[0]]
    a = a[a.e == a.e.min()]
    first = a.iloc[0]
    moved = (" Copying the ring outwards moves the attack; it does not stop it."
             if (a.ring_fooled >= a.frame_fooled).all() and (a.ring_fooled > 0).any() else "")
    return (f" Attacked through the defence on the ring it copies (the pixels at depth e = {int(first.e)}), "
            f"{' and '.join(pct(r) for r in a.ring_fooled)} of the same {int(first.n_images)} images are fooled "
            f"({', '.join(a.optimizer)}); the frame undefended fools {' and '.join(pct(r) for r in a.frame_fooled)} "
            f"(McNemar, paired: {', '.join(p_text(p) for p in a.p_value)}).{moved}")


def defence_finding(summary: pd.DataFrame, cost: pd.DataFrame | None, adaptive: pd.DataFrame | None = None) -> Finding:
    """The report's finding: what replacing the outer ``e`` px before the model restores on the attacked images and
    what it costs on the labelled set, per defence, ``e`` and optimiser (``summary``: :func:`defence_summary`;
    ``cost``: :func:`clean_cost`, or None), and the adaptive ring attack through it (``adaptive``:
    :func:`adaptive_summary`, or None; :func:`adaptive_sentence`)."""
    t = summary.copy()
    if cost is not None and len(cost):
        t = t.merge(cost[["model", "defence", "e", "change", "change_low", "change_high", "p_value"]],
                    on=["model", "defence", "e"], how="left")
    same = t.same_as_clean.mean()
    sentence = ("Replacing the outer e px before the model leaves the frame nothing to change: the defended attacked "
                f"image equals the defended clean one in {pct(same)} of cases.")
    if "change" in t:
        worst = t.sort_values("change").iloc[0]
        sentence += (f" The costliest defence, {DEFENCE_NAMES.get(worst.defence, worst.defence)} at e = {worst.e}, "
                     f"changes clean top-1 by {100 * worst.change:+.1f} points.")
    if adaptive is not None and len(adaptive):
        sentence += adaptive_sentence(adaptive)
    columns = {}
    if t.model.nunique() > 1:  # a row per model and defence: the reference attack at the smallest e
        t = t[(t.e == t.e.min()) & (t.optimizer == ORIGINAL)]
        columns = {"model": "model"}
    columns.update({"defence": lambda r: DEFENCE_NAMES.get(r.defence, r.defence), "e": "e", "optimiser": "optimizer",
                    "images": "n_images", "fooled, undefended": lambda r: pct(r.fooled),
                    "fooled ones restored": lambda r: (f"{interval_text(r.restored, r.restored_low, r.restored_high, True)}"
                                                       f" of {int(r.n_fooled)}" if "n_fooled" in t else "–"),
                    "CAM cosine: undefended": "cam_cosine", "defended": "defended_cam_cosine",
                    "clean top-1 change (labelled set)": lambda r: interval_text(getattr(r, "change", None),
                                                                  getattr(r, "change_low", None),
                                                                  getattr(r, "change_high", None), True, signed=True),
                    "its McNemar": lambda r: p_text(getattr(r, "p_value", None))})
    return Finding(sentence, readable(t, columns))


def _section(run_dir: Path) -> Finding | None:
    """The report's finding: :func:`defence_finding` of the run's tables, None without them."""
    tables = Path(run_dir) / "tables"
    summary, cost = read_table(tables, TABLES.border_defence_summary), read_table(tables, TABLES.border_defence_cost)
    adaptive = read_table(tables, TABLES.border_defence_adaptive_summary)
    return None if summary is None or summary.empty else defence_finding(summary, cost, adaptive)


def _compute(model, inputs) -> dict:
    """The study's rows per image: :func:`defence_rows` of the run's attacks at each defended width, and the adaptive
    ring attack (:func:`adaptive_rows`) with each optimiser at each width."""
    widths = defence_widths(inputs.params)
    return {TABLES.border_defence: pd.concat(
        [defence_rows(model, inputs.attack(o, e), inputs.labels, o) for e in widths
         for o in ADVERSARIAL_OPTIMIZERS], ignore_index=True),
        TABLES.border_defence_adaptive: pd.concat(
        [adaptive_rows(model, inputs.x, inputs.names, inputs.labels, inputs.params, o, e) for e in widths
         for o in ADVERSARIAL_OPTIMIZERS], ignore_index=True)}


def _summarise(tables: dict) -> dict:
    rows = tables[TABLES.border_defence]
    out = {TABLES.border_defence_summary: defence_summary(rows)}
    if tables.get(TABLES.border_defence_adaptive) is not None:
        out[TABLES.border_defence_adaptive_summary] = adaptive_summary(tables[TABLES.border_defence_adaptive], rows)
    return out


STUDY = register(Study(
    name="defence", question="A border defence: should one worry about 1-pixel frames?",
    tables=(Table("border_defence", "image x e x optimiser x defence: the defended attacked image's class and CAM"),
            Table("border_defence_summary", "e x optimiser x defence: the share restored, the CAM cosines", "summary"),
            Table("border_defence_adaptive", "image x e x optimiser: the ring the defence copies, attacked through it"),
            Table("border_defence_adaptive_summary", "e x optimiser: the adaptive ring attack beside the frame's",
                  "summary"),
            Table("border_defence_cost", "defence x e: top-1 on the labelled set, undefended and defended, paired",
                  "run")),
    compute=_compute, summarise=_summarise,
    run_tables=lambda folder: {TABLES.border_defence_cost: clean_cost_table(folder.loaded, folder.params)},
    keys=("defence", "optimizer"), measured_by=("defence",), section=_section))
