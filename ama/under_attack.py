"""Notebook 05's studies that start from the attack, per model: its 8-bit images explained by other methods
(:func:`transfer_experiment`, methods in :mod:`ama.transfer`) and the upsamplings of an attacked CAM
(:func:`upsampling_panels`, upsamplings in :mod:`ama.faithfulness`).

Above the attack's experiments (:mod:`ama.attack_experiments`, whose adversarial PNGs they reuse) and below the
notebooks' :mod:`ama.experiments`.
"""
from __future__ import annotations

import pandas as pd
import torch

from .ablation import ADVERSARIAL_OPTIMIZERS
from .attack import random_frame
from .attack_experiments import ORIGINAL, adversarial_result
from .attack_result import OptimizerKey
from .faithfulness import calibration_fit, upsampling_comparison
from .protocol import run_names
from .transfer import SMALLEST_E_ONLY, TRANSFER_METHODS, scale_check, transfer_table


def transfer_experiment(model, x: torch.Tensor, names, params, out_dir=None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Notebook 05's transfer study for one model: at every ``e`` of ``params`` (a fast variant of
    :class:`ama.params.RunParams`), the 8-bit images of each optimiser of
    :data:`ama.ablation.ADVERSARIAL_OPTIMIZERS` (the run's PNGs, attacked again where missing) and the
    random frame, explained by :data:`ama.transfer.TRANSFER_METHODS` (Score-CAM on the first ``params.score_cam_images`` images,
    none when 0; :data:`ama.transfer.SMALLEST_E_ONLY` at the smallest ``e`` only). Returns the :func:`ama.transfer.transfer_table` rows, the :func:`ama.transfer.scale_check` rows and
    ``{OptimizerKey: AttackResult}``."""
    methods = [m for m in TRANSFER_METHODS if m != "scorecam" or params.score_cam_images > 0]
    limits = {"scorecam": params.score_cam_images}
    checks = scale_check(model, x, names)
    cache, attacks, frames = {}, {}, []
    for e in params.e:
        rand = random_frame(model, x, e=e, seed=params.seed, names=names)
        here = [m for m in methods if e == min(params.e) or m not in SMALLEST_E_ONLY]
        for optimizer in ADVERSARIAL_OPTIMIZERS:
            key = OptimizerKey.default(optimizer, e, params.n_iter)
            attacks[key] = adversarial_result(model, x, names, params, out_dir, optimizer, e)
            frames.append(transfer_table(model, attacks[key], rand, here, optimizer=optimizer,
                                         image_limits=limits, clean_maps=cache))
    return pd.concat(frames, ignore_index=True), checks, attacks


def upsampling_panels(runs: dict, extras: dict | None, params, out_dir) -> dict:
    """For :func:`ama.figures.upsampling_under_attack_figure`: per model, the reference attack at the smallest ``e``
    on its first image, that image's attacked saliency under each upsampling, and its mass on the frame's pixels over
    the frame's share of the area (``{upsampling: ratio}``, ``SCIENCE.md`` section 7), all of the same model and image. ``runs``: :func:`ama.runs.load_runs`;
    ``extras``: the ``beyond`` experiment's (reused where it ran the faithfulness study), or None (a sharded run keeps
    no maps: computed again for the first image)."""
    e0 = min(params.e)
    panels = {}
    for name, (model, data) in runs.items():
        if extras and extras[name].get("upsampling"):
            attack = extras[name]["attacks"][OptimizerKey.default(ORIGINAL, e0, params.n_iter)]
            maps = {up: m[:1] for up, m in extras[name]["upsampling"]["adv_saliency"].items()}
            table = extras[name]["upsampling"]["table"]
        else:
            x, names, x_names = data.images[:1], data.names[:1], list(data.names)
            attack = adversarial_result(model, x, names, params, out_dir, ORIGINAL, e0)
            reported = run_names(params, out_dir, x_names)
            fit = calibration_fit(model, params, reported)
            table, info = upsampling_comparison(model, x, names, attack, steps=1, fit=fit)
            maps = info["adv_saliency"]
        rows = table[table.image == attack.names[0]].set_index("upsampling")
        panels[name] = (attack, maps, (rows.adv_frame_mass / rows.frame_share).to_dict())
    return panels
