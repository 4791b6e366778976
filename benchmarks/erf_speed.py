"""ERF speed: time for all h*w ERF maps of one image / time of one forward + input-gradient backward of an
h*w batch (the least any method needs). Goal <= 1.5.

    .venv/bin/python benchmarks/erf_speed.py --model lite0 --device cpu --repeats 3
"""
from __future__ import annotations

import argparse
import time

import torch

import ama
from ama.kernels.receptive_field import effective_receptive_field


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lite0")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    model = ama.load_model(args.model, args.device)
    x = ama.sample_images(model, ["coffee"]).images.to(model.device)
    h, w = model.feature_size()
    n = h * w

    def bare():
        xr = x.expand(n, -1, -1, -1).clone().requires_grad_(True)
        raw = ama.raw_cam(model, xr, 0)
        torch.autograd.grad(raw.sum(), xr)

    t_erf = best_time(lambda: effective_receptive_field(model, x), args.repeats)
    t_bare = best_time(bare, args.repeats)
    print(f"model {args.model}, device {model.device}, {h} x {w} = {n} cells, torch threads {torch.get_num_threads()}")
    print(f"all {n} ERF maps of one image: {t_erf:.3f} s")
    print(f"one forward + backward of a {n}-image batch: {t_bare:.3f} s")
    print(f"ratio: {t_erf / t_bare:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
