"""What an attack gives: the parameters it ran with and the image sets it evaluated, on the CPU.

:class:`AttackParams` is one frozen record that every entry point of :mod:`ama.attack.marginal` fills the same way
(``marginal_attack``, the ``random_frame`` baseline, ``evaluate_images`` of images made elsewhere);
:class:`Evaluation` is one evaluated image set; :class:`AttackResult` holds the clean, the adversarial (as
optimised) and the 8-bit adversarial set, with shorthands and the tidy metrics table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ..kernels.metrics import attack_metrics

__all__ = ["RANDOM", "NO_OPTIMIZER", "GridKey", "OptimizerKey", "AttackParams", "Evaluation", "AttackResult"]

RANDOM = "random"   # the mode of the random-frame baseline (not optimised)
NO_OPTIMIZER = "none"


@dataclass(frozen=True)
class GridKey:
    """Where a result of the paper's grid (:func:`ama.studies.attack_experiments.run_grid`) is kept: ``setting``
    ``"attack"`` or ``"random_frame"`` (the baseline: ``n_iter`` 0, mode :data:`RANDOM`)."""

    setting: str
    e: int
    n_iter: int
    mode: str


@dataclass(frozen=True)
class OptimizerKey:
    """Where a result of one optimiser's setting is kept (the ablation, the seeds, the saved PNGs, notebook 05):
    ``variant`` ``"default"`` (the optimiser's defaults) or an ingredient's name."""

    optimizer: str
    variant: str
    e: int
    n_iter: int
    mode: str = "flip"

    @classmethod
    def default(cls, optimizer: str, e: int, n_iter: int, mode: str = "flip") -> "OptimizerKey":
        return cls(optimizer, "default", e, n_iter, mode)


@dataclass(frozen=True)
class AttackParams:
    """The settings of one attack: ``e`` is the frame width (None for a custom ``mask``); ``mode`` ``flip``,
    ``keep`` or ``random`` (the baseline, ``n_iter`` 0); the optimiser's settings are those of
    :func:`ama.attack.optimizers.settings` (``none`` and empty strings for the baseline and for images made elsewhere)."""

    model: str
    e: int | None = None
    mask: str = "frame"          # "frame" (the e-pixel frame) or "custom"
    mode: str = "flip"
    n_iter: int = 0
    lamb: float = 0.0
    seed: int = 0
    targeted: bool = False
    optimizer: str = NO_OPTIMIZER
    restarts: int = 0
    cam_loss: str = ""
    label_loss: str = ""
    select: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "AttackParams":
        return dataclasses.replace(self, **changes)


@dataclass
class Evaluation:
    """One evaluated image set: ``images`` ``(B, 3, H, W)`` in ``[0, 1]``, their ``logits`` ``(B, C)``, ``cam`` the CAM
    of the clean class ``(B, h, w)`` in ``[0, 1]`` (what the attack optimises) and ``cam_pred`` the CAM of the set's
    own predicted class (what an explainer would show)."""

    images: torch.Tensor
    logits: torch.Tensor
    cam: torch.Tensor
    cam_pred: torch.Tensor
    class_names: list[str] = field(repr=False, default_factory=list)

    @property
    def classes(self) -> torch.Tensor:
        """``(B,)`` predicted classes."""
        return self.logits.argmax(1)

    @property
    def conf(self) -> torch.Tensor:
        """``(B,)`` softmax probability of the predicted class."""
        return torch.softmax(self.logits.float(), 1).max(1).values

    @property
    def names(self) -> list[str]:
        """Names of the predicted classes."""
        return [self.class_names[int(i)] for i in self.classes]


_FIELDS = {"logits": "logits", "cam": "cam", "cam_pred": "cam_pred", "class": "classes", "conf": "conf",
           "names": "names"}


@dataclass
class AttackResult:
    """What one attack gives, on the CPU.

    ``evaluations`` holds one :class:`Evaluation` per image set: ``"clean"`` the inputs, ``"adv"`` the adversarial
    images as optimised (float), ``"adv_q"`` the same after 8-bit quantisation of the mask's pixels (what a saved PNG
    holds; off-mask pixels stay the input's). Shorthands: ``r.<set>`` are the set's images and ``r.<set>_<field>`` its
    fields, field one of ``logits, cam, cam_pred, class, conf, names`` (``r.adv_q``, ``r.adv_q_logits``,
    ``r.clean_cam``, ``r.adv_class``, ...).

    ``mask`` ``(B, H, W)`` bool; ``target_map`` ``(B, h, w)`` or None; ``params`` the :class:`AttackParams`.
    ``history`` (if asked): ``(n_iter + 1, B)`` tensors ``loss`` (the objective maximised), ``cam_cosine`` (vs the
    clean CAM, as the objective measures it), ``target_cosine`` (targeted runs), ``ce`` and ``clean_class_held``;
    row ``t`` is the iterate of model pass ``t``, the last row the returned image (for ``select="best"`` its 8-bit
    version, as judged).
    """

    evaluations: dict
    mask: torch.Tensor
    target_map: torch.Tensor | None
    class_names: list[str]
    names: list[str]
    params: AttackParams
    history: dict | None = None
    _tables: dict = field(default_factory=dict, repr=False)

    def __getattr__(self, name: str):
        evaluations = self.__dict__.get("evaluations")
        if evaluations is not None and not name.startswith("_"):
            if name in evaluations:
                return evaluations[name].images
            for key in sorted(evaluations, key=len, reverse=True):  # adv_q before adv
                rest = name[len(key) + 1:] if name.startswith(key + "_") else None
                if rest in _FIELDS:
                    return getattr(evaluations[key], _FIELDS[rest])
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def evaluated(self, quantized: bool = True) -> Evaluation:
        """The adversarial set: 8-bit (``quantized``, what a PNG holds) or as optimised."""
        return self.evaluations["adv_q" if quantized else "adv"]

    @property
    def fooled(self) -> torch.Tensor:
        """``(B,)`` bool: the prediction of ``adv`` (as optimised) differs from the clean one."""
        return self.adv_class != self.clean_class

    def __len__(self) -> int:
        return self.adv.shape[0]

    @property
    def metrics(self):
        """Tidy ``pandas.DataFrame``: one row per image x ``quantized`` (False: as optimised, True: 8-bit), see
        :func:`ama.kernels.metrics.attack_metrics`."""
        if "metrics" not in self._tables:

            self._tables["metrics"] = attack_metrics(self)
        return self._tables["metrics"]
