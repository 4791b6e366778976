"""Scale-out of the attack: image-iterations per second with N processes on this CPU, or per GPU by batch.

CPU (default): for each NPROC in ``--nproc`` (default 1 2) this script launches itself through torchrun
(``python -m torch.distributed.run --standalone --nproc_per_node=NPROC``). Each rank takes its strided shard of
``--images`` random 224 x 224 images (:func:`ama.store.distributed.shard`), sets ``cores // NPROC`` torch threads
(:func:`ama.store.distributed.rank_device`), warms up, waits for the other ranks at a file barrier (no collective), and
times ``ama.marginal_attack`` over its shard in batches of ``--batch``. Throughput = images x n_iter / (last end -
first start); parallel efficiency(N) = throughput(N) / (N x throughput(1)).

GPU (``--device cuda``, one process): image-iterations per second per GPU at batch 1, 8 and 64 (``--gpu-batches``).

The model is ``lite0`` (the kit's offline default) or a random-initialised torchvision ResNet-50 wrapped with
:func:`ama.wrap_model` (timing does not depend on the weights; nothing is downloaded).
Run:  python benchmarks/scale.py [--model lite0|resnet50] [--images 8] [--n-iter 5] [--nproc 1 2]
      python benchmarks/scale.py --device cuda --model resnet50 [--gpu-batches 1 8 64]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve()


def make_model(name: str, device):
    """``lite0`` from the kit, or ``resnet50`` random-initialised and wrapped for CAM."""
    import ama

    if name == "resnet50":
        import torch.nn as nn
        import torchvision

        torch.manual_seed(0)
        net = torchvision.models.resnet50(weights=None)
        backbone = nn.Sequential(*[m for k, m in net.named_children() if k not in ("avgpool", "fc")])
        return ama.wrap_model(backbone, net.fc, name="resnet50-random", input_size=224).to(device)
    return ama.load_model(name, device=device)


def random_images(n: int, size: int = 224) -> torch.Tensor:
    """``(n, 3, size, size)`` seeded uniform images in ``[0, 1]``."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def attack(model, x, n_iter: int):
    import ama

    return ama.marginal_attack(model, x, e=2, n_iter=n_iter)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# --- CPU: one rank of a torchrun launch -------------------------------------------------------
def worker(args) -> None:
    from ama.store.distributed import cpu_threads, launch_from_env, rank_device, shard

    launch = launch_from_env()
    device = rank_device(args.device, launch)
    torch.set_num_threads(args.threads or cpu_threads(launch))  # also for NPROC=1
    model = make_model(args.model, device)
    mine = shard(list(range(args.images)), launch)
    x = random_images(args.images)[mine].to(device)
    attack(model, x[:1], 1)  # warm-up: allocator, kernels
    sync(device)
    tmp = Path(args.worker)
    (tmp / f"ready.{launch.rank}").touch()
    while len(list(tmp.glob("ready.*"))) < launch.world:  # a file barrier: no process group needed
        time.sleep(0.01)
    start = time.time()
    for i in range(0, len(mine), args.batch):
        attack(model, x[i:i + args.batch], args.n_iter)
    sync(device)
    end = time.time()
    (tmp / f"time.{launch.rank}.json").write_text(json.dumps(dict(start=start, end=end, images=len(mine),
                                                                   threads=torch.get_num_threads())))


def cpu_scaling(args) -> None:
    rates = {}
    print(f"model {args.model}, {args.images} images x {args.n_iter} iterations, batch {args.batch}, "
          f"{os.cpu_count()} CPU cores")
    for nproc in args.nproc:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   str(HERE), "--worker", tmp, "--model", args.model, "--images", str(args.images),
                   "--n-iter", str(args.n_iter), "--batch", str(args.batch), "--device", "cpu",
                   *(["--threads", str(args.threads)] if args.threads else [])]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            times = [json.loads(p.read_text()) for p in sorted(Path(tmp).glob("time.*.json"))]
        wall = max(t["end"] for t in times) - min(t["start"] for t in times)
        rates[nproc] = args.images * args.n_iter / wall
        eff = rates[nproc] / (nproc * rates[min(rates)]) if min(rates) == 1 else float("nan")
        print(f"NPROC={nproc}: {rates[nproc]:.2f} image-iterations/s ({wall:.1f} s; "
              f"{times[0]['threads']} torch threads per process); {1 / rates[nproc] * 1e3:.0f} ms per "
              f"image-iteration; parallel efficiency {eff:.0%}")


# --- GPU: per-GPU throughput by batch ---------------------------------------------------------
def gpu_throughput(args) -> None:
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device}: no CUDA GPU here; the CPU path is the default")
    model = make_model(args.model, device)
    print(f"model {args.model} on {torch.cuda.get_device_name(device)}, {args.n_iter} iterations per attack")
    for batch in args.gpu_batches:
        x = random_images(batch).to(device)
        attack(model, x, 1)  # warm-up
        sync(device)
        start = time.perf_counter()
        attack(model, x, args.n_iter)
        sync(device)
        wall = time.perf_counter() - start
        print(f"batch {batch:3d}: {batch * args.n_iter / wall:8.1f} image-iterations/s per GPU "
              f"({wall / args.n_iter * 1e3:.1f} ms per iteration)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lite0", choices=("lite0", "resnet50"))
    p.add_argument("--device", default="cpu", help="cpu (torchrun scaling) or cuda / cuda:N (per-GPU throughput)")
    p.add_argument("--images", type=int, default=8, help="CPU: images in all (sharded over the processes)")
    p.add_argument("--n-iter", type=int, default=5)
    p.add_argument("--batch", type=int, default=4, help="CPU: images per attack call in each process")
    p.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    p.add_argument("--threads", type=int, default=None,
                   help="CPU: torch threads per process (default cores // NPROC); 1 isolates process scaling")
    p.add_argument("--gpu-batches", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
    elif args.device.startswith("cuda"):
        gpu_throughput(args)
    else:
        cpu_scaling(args)


if __name__ == "__main__":
    main()
