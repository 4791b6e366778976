#!/usr/bin/env python
"""Does a run on another device (a GPU) give what the committed CPU reference says? One JSON line per check.

On the images of the default run's reference (``--reference``; its ``attack_metrics`` names them), with the model
of that run loaded on ``--device``: the loaded network equals its source weights bit for bit and is in eval mode;
the reference attack at every ``e`` of the reference and the strongest optimiser at e = 1, 2 (100 passes, the
reference's seed) are run again and compared per image with the reference's 8-bit rows (fooled counts, adversarial
classes, CAM cosine differences), each with its wall time; the same attack run twice on the device gives the same
adversarial images (CUDA's bilinear-upsampling backward is not deterministic in general). Run from the repository
root; ``--out`` also gets the findings as JSON::

    .venv/bin/python tools/device_check.py --device cuda --out device_check.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_REFERENCE = ROOT / "results/reference/lite0_imagenet_n8_e1-2-4-8_it100_lamb100_seed0"


def main(argv=None) -> int:
    import torch

    import ama
    from ama.inputs.models import lite_weight_file
    from ama.studies.claims import read_table

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE, help="a committed run reference folder")
    p.add_argument("--images", type=Path, default=ROOT / "data/imagenet", help="where its images are")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", type=Path, default=None, help="write the findings here as JSON too")
    args = p.parse_args(argv)

    params = json.loads((args.reference / "params.json").read_text())
    params = params.get("params", params)
    n_iter, seed, widths = int(params["n_iter"]), int(params["seed"]), [int(e) for e in params["e"]]
    metrics = read_table(args.reference / "tables", "attack_metrics")  # .csv, or .csv.gz where large
    ablation = read_table(args.reference / "tables", "attack_ablation")
    found: dict = {"torch": torch.__version__, "device": args.device}
    if args.device.startswith("cuda"):
        found["gpu"] = torch.cuda.get_device_name(torch.device(args.device))

    def say(key, value):
        found[key] = value
        print(json.dumps({key: value}), flush=True)
        if args.out is not None:
            args.out.write_text(json.dumps(found, indent=1))

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    name = str(metrics.model.iloc[0])
    model = ama.load_model(name, device=args.device)
    if name in ama.inputs.models.LITE_MODELS:
        source = torch.load(lite_weight_file(name), map_location="cpu", weights_only=True)
        loaded = model.backbone.net.state_dict()
        say("weights_identical", len(source) == len(loaded)
            and all(torch.equal(a, b.cpu()) for a, b in zip(source.values(), loaded.values())))
    say("eval_mode", not any(m.training for m in model.modules()))
    names = sorted(metrics.image.unique())
    images = ama.load_images([args.images / f"{n}.jpg" for n in names], model=model)
    x = images.images.to(args.device)

    plan = [("sign", e) for e in widths] + [("apgd", e) for e in widths if e in (1, 2)]
    for optimizer, e in plan:
        try:
            sync()
            start = time.perf_counter()
            r = ama.marginal_attack(model, x, e=e, n_iter=n_iter, seed=seed, names=names, optimizer=optimizer)
            sync()
            wall = time.perf_counter() - start
            mine = r.metrics[r.metrics.quantized.astype(bool)].set_index("image").loc[names]
            if optimizer == "sign":
                ref = metrics[(metrics.setting == "attack") & (metrics["mode"] == "flip") & (metrics.e == e)
                              & (metrics.n_iter == n_iter) & metrics.quantized]
            else:
                ref = ablation[(ablation.optimizer == optimizer) & (ablation.variant == "default")
                               & (ablation.e == e) & (ablation.n_iter == n_iter) & ablation.quantized]
            ref = ref.set_index("image").loc[names]
            dcos = (mine.cam_cosine - ref.cam_cosine).abs()
            say(f"{optimizer}_e{e}", dict(seconds=round(wall, 2), fooled=int(mine.fooled.sum()),
                                          fooled_reference=int(ref.fooled.sum()), images=len(names),
                                          same_adv_class=int((mine.adv_class.values == ref.adv_class.values).sum()),
                                          median_abs_dcos=round(float(dcos.median()), 4),
                                          max_abs_dcos=round(float(dcos.max()), 4)))
        except Exception:  # one failing setting does not hide the others' findings
            say(f"{optimizer}_e{e}", traceback.format_exc()[-800:])
    a = ama.marginal_attack(model, x, e=min(widths), n_iter=n_iter, seed=seed, names=names)
    b = ama.marginal_attack(model, x, e=min(widths), n_iter=n_iter, seed=seed, names=names)
    say("rerun_identical", bool(torch.equal(a.adv_q, b.adv_q)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
