"""The attack's optimisers: each turns (frame point, gradient, objective) into the next point, at equal budget.

An optimiser holds the frame's values ``n`` ``(B, 3, H, W)`` in ``[0, 1]`` and has three methods:
``leaf()`` (the tensor the gradient is taken with respect to), ``point()`` (``n``, a differentiable function of
the leaf) and ``step(grad, loss)`` (``loss`` ``(B,)`` the objective, maximised). The budget is the number of
forward+backward passes per image; :func:`run_lengths` splits it over restarts and :class:`BestIterate` keeps
each image's best point, both the same for every optimiser (``SCIENCE.md`` section 6):

* ``sign`` (the reference, :class:`Sign`): the 2021 code's loop: ``n <- n + sign(g) / n_iter`` on an unclipped
  iterate that enters the image clamped to ``[0, 1]``, the last iterate;
* ``apgd`` (:class:`APGD`): the APGD-style schedule of Croce and Hein (2020);
* ``adam`` (:class:`Adam`): ``n = sigmoid(w)`` and Adam on ``w`` with a cosine-decaying learning rate.

:data:`DEFAULTS` holds each optimiser's settings (``restarts``, ``cam_loss``, ``label_loss``, ``select``);
:func:`settings` validates a choice against them.
"""
from __future__ import annotations

import math

import torch

__all__ = ["ORIGINAL", "STRONGEST", "CAM_LOSSES", "LABEL_LOSSES", "SELECTS", "DEFAULTS", "NAMES", "APGD_ETA0",
           "APGD_MOMENTUM", "APGD_RHO", "ADAM_LR", "ADAM_EPS", "settings", "run_lengths", "BestIterate", "Sign",
           "apgd_checkpoints", "APGD", "Adam", "OPTIMIZERS"]

ORIGINAL = "sign"        # the original attack.py's loop, the paper's algorithm (tests/test_original_loop.py); "reference"
                         # in the kit means a saved run that make check compares with (ama.runs.check)
STRONGEST = "apgd"       # the strongest at the same budget (issue 11's measurements on lite0)
CAM_LOSSES = ("normalized", "raw")
LABEL_LOSSES = ("ce", "margin")
SELECTS = ("last", "best")
DEFAULTS = {
    "sign": dict(restarts=0, cam_loss="normalized", label_loss="ce", select="last"),      # the original loop
    "apgd": dict(restarts=0, cam_loss="normalized", label_loss="margin", select="best"),  # margin: tuned on lite0
    "adam": dict(restarts=0, cam_loss="normalized", label_loss="margin", select="best"),  # margin, lr 0.5: tuned on lite0
}
NAMES = tuple(DEFAULTS)
APGD_ETA0 = 2.0        # first step, x the range [0, 1]
APGD_MOMENTUM = 0.75
APGD_RHO = 0.75        # share of rising steps below which the step halves
ADAM_LR = 0.5          # first learning rate on the sigmoid's logits
ADAM_EPS = 1e-3        # the start is clamped to [eps, 1 - eps] before its logit is taken


def settings(optimizer: str = ORIGINAL, restarts=None, cam_loss=None, label_loss=None, select=None) -> dict:
    """The settings of one optimiser: its :data:`DEFAULTS` with the given values in their place, validated;
    ``{"optimizer", "restarts", "cam_loss", "label_loss", "select"}``. ``restarts``, ``cam_loss``, ``label_loss``,
    ``select``: None keeps the optimiser's default."""
    if optimizer not in DEFAULTS:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {', '.join(NAMES)}")
    given = dict(restarts=restarts, cam_loss=cam_loss, label_loss=label_loss, select=select)
    s = {**DEFAULTS[optimizer], **{k: v for k, v in given.items() if v is not None}}
    r = s["restarts"]
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise ValueError(f"restarts must be a non-negative integer, got {r!r}")
    for key, allowed in (("cam_loss", CAM_LOSSES), ("label_loss", LABEL_LOSSES), ("select", SELECTS)):
        if s[key] not in allowed:
            raise ValueError(f"unknown {key} {s[key]!r}; use one of {', '.join(allowed)}")
    if r > 0 and s["select"] == "last":
        raise ValueError("restarts need select='best' (the best iterate over all runs is returned)")
    return {"optimizer": optimizer, **s}


def run_lengths(n_iter: int, runs: int) -> list[int]:
    """Split the budget ``n_iter`` over ``runs`` runs (the first ones get the remainder); every run >= 1 pass."""
    if runs > n_iter:
        raise ValueError(f"restarts={runs - 1} leave fewer than one pass per run of the budget n_iter={n_iter}")
    return [n_iter // runs + (k < n_iter % runs) for k in range(runs)]


class BestIterate:
    """Per image, the best point seen: success first (flip: label changed; keep: label held), then the objective."""

    def __init__(self):
        self.point = self.loss = self.success = None

    def update(self, point: torch.Tensor, loss: torch.Tensor, success: torch.Tensor) -> None:
        """Consider ``point`` ``(B, 3, H, W)`` with its objective ``loss`` ``(B,)`` and ``success`` ``(B,)`` bool."""
        point, loss = point.detach(), loss.detach()
        if self.point is None:
            self.point, self.loss, self.success = point.clone(), loss, success
            return
        better = (success & ~self.success) | ((success == self.success) & (loss > self.loss))
        self.point = torch.where(better.view(-1, 1, 1, 1), point, self.point)
        self.loss = torch.where(better, loss, self.loss)
        self.success = torch.where(better, success, self.success)


class Sign:
    """The reference, the original ``attack.py``'s loop: the iterate ``n`` ``(B, 3, H, W)`` is never clipped,
    ``n <- n + sign(g) / n_steps``, and enters the image as ``clamp(n, 0, 1)``. A value pushed past a bound gets a
    zero gradient through the clamp, so its sign is 0 and it stays where it is (the pixel stays at the bound); it
    never comes back. Iterates kept in ``layout`` (channels-last on the CPU, see :mod:`ama.attack.marginal`)."""

    def __init__(self, n: torch.Tensor, n_steps: int, layout=torch.contiguous_format):
        self.n, self.n_steps, self.layout = n, n_steps, layout

    def leaf(self) -> torch.Tensor:
        return self.n.requires_grad_(True)

    def point(self) -> torch.Tensor:
        """``clamp(n, 0, 1)``: the frame's pixels (a bound's gradient is 0 beyond it, passed at it)."""
        return self.n.clamp(0, 1)

    def step(self, grad: torch.Tensor, loss: torch.Tensor) -> None:
        self.n = (self.n.detach() + grad.sign() / self.n_steps).contiguous(memory_format=self.layout)


def apgd_checkpoints(n_steps: int) -> list[int]:
    """Iterations at which APGD checks progress: ``round(p_j n_steps)`` for ``p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)`` below 1 (``SCIENCE.md`` section 6). ``n_steps``: the iterations of
    one run."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({round(q * n_steps) for q in p[1:] if 0 < round(q * n_steps) < n_steps})


class APGD:
    """APGD-style schedule (Croce and Hein 2020) in ``[0, 1]``: signed step ``eta`` (first ``APGD_ETA0`` x the range),
    momentum ``APGD_MOMENTUM``; at each checkpoint an image's step halves when its objective rose in fewer than
    ``APGD_RHO`` of the steps since the last checkpoint or its best did not improve, and it restarts from its best
    point (with that point's gradient, stored: no extra pass)."""

    def __init__(self, n: torch.Tensor, n_steps: int, layout=None):
        B = n.shape[0]
        self.n, self.prev = n, n
        self.eta = torch.full((B, 1, 1, 1), APGD_ETA0, device=n.device, dtype=n.dtype)
        self.checkpoints = set(apgd_checkpoints(n_steps))
        self.t = 0
        self.last_loss = None
        self.rises = torch.zeros(B, device=n.device)
        self.since = 0
        self.best_n, self.best_grad, self.best_loss = n, None, None
        self.improved = torch.zeros(B, dtype=torch.bool, device=n.device)

    def leaf(self) -> torch.Tensor:
        return self.n.requires_grad_(True)

    def point(self) -> torch.Tensor:
        return self.n

    def step(self, grad: torch.Tensor, loss: torch.Tensor) -> None:
        n, grad, loss = self.n.detach(), grad.detach(), loss.detach()
        if self.best_loss is None:
            self.best_n, self.best_grad, self.best_loss = n, grad, loss
        else:
            self.rises += (loss > self.last_loss).float()
            self.since += 1
            up = loss > self.best_loss
            self.improved |= up
            u4 = up.view(-1, 1, 1, 1)
            self.best_n = torch.where(u4, n, self.best_n)
            self.best_grad = torch.where(u4, grad, self.best_grad)
            self.best_loss = torch.where(up, loss, self.best_loss)
        self.last_loss = loss
        if self.t in self.checkpoints:
            halve = (self.rises < APGD_RHO * max(self.since, 1)) | ~self.improved
            h4 = halve.view(-1, 1, 1, 1)
            self.eta = torch.where(h4, self.eta / 2, self.eta)
            n = torch.where(h4, self.best_n, n)
            self.prev = torch.where(h4, self.best_n, self.prev)
            grad = torch.where(h4, self.best_grad, grad)
            self.rises.zero_()
            self.since = 0
            self.improved.zero_()
        z = (n + self.eta * grad.sign()).clamp(0, 1)
        if self.t == 0:
            new = z
        else:
            new = (n + APGD_MOMENTUM * (z - n) + (1 - APGD_MOMENTUM) * (n - self.prev.detach())).clamp(0, 1)
        self.prev, self.n = n, new
        self.t += 1


class Adam:
    """Adversarial framing's optimiser: ``n = sigmoid(w)``, Adam on ``w`` (ascent) with the learning rate decaying from
    ``ADAM_LR`` to 0 on a cosine over the run. Without ``sign()``, an image's result depends on its batch by float
    rounding only."""

    def __init__(self, n: torch.Tensor, n_steps: int, layout=None):
        self.w = torch.logit(n.clamp(ADAM_EPS, 1 - ADAM_EPS)).detach().requires_grad_(True)
        self.opt = torch.optim.Adam([self.w], lr=ADAM_LR, maximize=True)
        self.n_steps, self.t = n_steps, 0

    def leaf(self) -> torch.Tensor:
        return self.w

    def point(self) -> torch.Tensor:
        return torch.sigmoid(self.w)

    def step(self, grad: torch.Tensor, loss: torch.Tensor) -> None:
        self.w.grad = grad
        self.opt.step()
        self.t += 1
        for g in self.opt.param_groups:
            g["lr"] = ADAM_LR * 0.5 * (1 + math.cos(math.pi * self.t / self.n_steps))


OPTIMIZERS = {"sign": Sign, "apgd": APGD, "adam": Adam}
