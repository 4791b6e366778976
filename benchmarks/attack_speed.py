"""Speed of ama.marginal_attack, side by side on one model, batch and device.

(a) overhead: attack time / (n_iter x one bare forward + input-gradient backward of the same batch); goal <= 1.05.
(b) throughput (images x iterations per second) of the kit at batch 1 and batch 8, vs a per-image loop that, like
    the reference script, runs the model with trainable parameters and calls loss.backward() (weight gradients
    too); goal >= 2x on CPU with ResNet-50.
(c) the optimiser's passes on the BatchNorm-folded copy (the default) vs on the model itself (fold_bn=False); a
    kernel change is kept when it gains 10% or more.

ResNet-50 is random-initialised (timing does not depend on the weights; nothing is downloaded).
Run:  python benchmarks/attack_speed.py [--model resnet50|lite0] [--device cpu] [--n-iter 5] [--batch 8]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import ama
from ama.geometry import frame_mask
from ama.inputs.devices import resolve_device
from ama.kernels.cam_model import wrap_model


def make_model(name: str, device):
    if name == "resnet50":
        import torchvision

        torch.manual_seed(0)
        net = torchvision.models.resnet50(weights=None)
        backbone = nn.Sequential(*[m for k, m in net.named_children() if k not in ("avgpool", "fc")])
        return wrap_model(backbone, net.fc, name="resnet50-random", input_size=224).to(device)
    return ama.load_model(name, device)


def timed(fn, device, repeats=1):
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def bare_steps(model, x, n_iter, layout=torch.contiguous_format):
    """n_iter x (forward + input-gradient backward), nothing else: the floor the attack is compared with."""
    n = x.contiguous(memory_format=layout).clone(memory_format=torch.preserve_format)
    for _ in range(n_iter):
        n.requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(model(n).sum(), n)
        n = n.detach()


def reference_loop(model, x, n_iter, e=1, lamb=100.0):
    """Per image, like the reference script: parameters trainable, loss.backward() fills weight gradients too."""
    net = copy.deepcopy(model)
    net.requires_grad_(True)
    net.check_inputs = False
    m = frame_mask(x.shape[-2:], e, device=x.device)
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        with torch.no_grad():
            clean = ama.compute_cam(net, xb)
        c, M_x = clean.target, clean.cam
        n = torch.rand_like(xb)
        for _ in range(n_iter):
            net.zero_grad(set_to_none=True)
            n.requires_grad_(True)
            z = torch.where(m, n, xb)
            out = ama.compute_cam(net, z, target=c)
            held = out.logits.argmax(1) == c
            loss = (F.cross_entropy(out.logits[held], c[held]) if held.any() else 0.0) + \
                lamb * (1 - F.cosine_similarity(out.cam.flatten(1), M_x.flatten(1))).mean()
            loss.backward()
            n = (n.detach() + n.grad.sign() / n_iter).clamp(0, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet50")
    p.add_argument("--device", default="auto")
    p.add_argument("--n-iter", type=int, default=5)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = make_model(args.model, device)
    H, W = model.input_size
    x = torch.rand(args.batch, 3, H, W, generator=torch.Generator().manual_seed(0)).to(device)
    it = args.n_iter
    print(f"model {model.name}, device {device}, batch {args.batch}, {H}x{W}, n_iter {it}, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    bare_steps(model, x[:1], 1)  # warm-up
    ama.marginal_attack(model, x[:1], n_iter=1)

    t_bare = timed(lambda: bare_steps(model, x, it), device, args.repeats)
    t_attack = timed(lambda: ama.marginal_attack(model, x, n_iter=it), device, args.repeats)
    t_fixed = timed(lambda: ama.marginal_attack(model, x, n_iter=1), device, args.repeats) - t_bare / it
    per_iter, per_bare = (t_attack - t_fixed) / it, t_bare / it
    print(f"(a) attack {t_attack:.2f} s / bare forward+input-grad {t_bare:.2f} s = {t_attack / t_bare:.3f} "
          f"at n_iter {it} (goal <= 1.05)")
    print(f"    of which fixed (clean pass, two evaluations, result) {t_fixed:.2f} s; per iteration "
          f"{per_iter:.3f} s vs bare {per_bare:.3f} s = {per_iter / per_bare:.3f}")
    print(f"    at the default n_iter 100 this is {(t_fixed + 100 * per_iter) / (100 * per_bare):.3f} "
          f"(projected from the measured fixed and per-iteration times)")
    if device.type == "cpu":  # the attack keeps its iterates channels-last on the CPU; same floor in that layout
        t_bare_cl = timed(lambda: bare_steps(model, x, it, torch.channels_last), device, args.repeats)
        print(f"    bare step in the attack's CPU layout (channels-last) {t_bare_cl / it:.3f} s: per iteration "
              f"{per_iter / (t_bare_cl / it):.3f}, whole attack {t_attack / t_bare_cl:.3f} at n_iter {it}")

    t_unfolded = timed(lambda: ama.marginal_attack(model, x, n_iter=it, fold_bn=False), device, args.repeats)

    t_b1 = timed(lambda: [ama.marginal_attack(model, x[b:b + 1], n_iter=it) for b in range(x.shape[0])],
                 device, args.repeats)
    t_ref = timed(lambda: reference_loop(model, x, it), device, args.repeats)
    work = x.shape[0] * it
    rates = {"kit, batch 1": work / t_b1, f"kit, batch {args.batch}": work / t_attack,
             "per-image loop with weight gradients (reference-like)": work / t_ref}
    print("(b) images x iterations per second:")
    for k, v in rates.items():
        print(f"    {k:55s} {v:7.2f}")
    print(f"    speed-up vs the reference-like loop: batch 1 {t_ref / t_b1:.2f}x, batch {args.batch} "
          f"{t_ref / t_attack:.2f}x (goal >= 2x on CPU with ResNet-50)")
    print(f"(c) BatchNorm folded for the optimiser's passes: attack {t_attack:.2f} s vs unfolded {t_unfolded:.2f} s = "
          f"{t_unfolded / t_attack:.2f}x faster (kept when >= 1.10x)")


if __name__ == "__main__":
    main()
