"""How much a machine that other jobs load slows the kit, and what OpenMP's spin-waiting has to do with it.

Times one lite0 forward + input-gradient pass (batch 2, the FAST run's size) in a fresh process, with the machine
quiet and with ``--load`` busy processes (pure Python loops, one per core by default), each under torch's default
OpenMP settings and under ``GOMP_SPINCOUNT`` (threads waiting at a barrier spin this many times, not the default
300,000, before sleeping). Prints seconds per pass and the ratios.

    .venv/bin/python benchmarks/shared_machine.py [--load 2] [--passes 20] [--spincount 1000]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

PASS = """
import time, torch
from ama.inputs.models import load_model
m = load_model("lite0", "cpu")
x = torch.rand(2, 3, 224, 224, requires_grad=True)
for _ in range(2):
    m(x).sum().backward()
t = time.perf_counter()
for _ in range({passes}):
    m(x).sum().backward()
print((time.perf_counter() - t) / {passes})
"""


def seconds_per_pass(passes: int, env: dict) -> float:
    out = subprocess.run([sys.executable, "-c", PASS.format(passes=passes)], env={**os.environ, **env},
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", type=int, default=os.cpu_count(), help="busy processes for the loaded case")
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--spincount", default="1000")
    args = ap.parse_args()
    settings = {"default": {}, f"GOMP_SPINCOUNT={args.spincount}": {"GOMP_SPINCOUNT": args.spincount}}
    times = {("quiet", k): seconds_per_pass(args.passes, env) for k, env in settings.items()}
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    try:
        times.update({("loaded", k): seconds_per_pass(args.passes, env) for k, env in settings.items()})
    finally:
        for b in burners:
            b.kill()
    for (machine, setting), s in times.items():
        print(f"{machine:6s} {setting:22s} {s * 1000:7.1f} ms per pass")
    default, spin = settings
    print(f"loaded / quiet, default: {times['loaded', default] / times['quiet', default]:.2f}x; "
          f"with {spin}: {times['loaded', spin] / times['quiet', spin]:.2f}x")
    print(f"{spin} / default: quiet {times['quiet', spin] / times['quiet', default]:.2f}x, "
          f"loaded {times['loaded', spin] / times['loaded', default]:.2f}x")


if __name__ == "__main__":
    main()
