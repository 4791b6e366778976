"""The kit's command line: ``python -m ama <command>`` (or the ``ama`` console script).

Commands:

* ``attack``: the adversarial marginal attack, with the reference script's flags and defaults
  (``--model_name``, ``--image``, ``--e``, ``--n_iter 100``, ``--lamb 100``, ``--device``) plus ``--mode``,
  ``--target``, ``--seed``, ``--out``. ``--image`` writes ``<image>_ama_<e>.png`` (the 2 x 2 figure),
  ``<image>_ama_<e>_adv.png`` (the adversarial image, lossless 8-bit) and ``<image>_ama_<e>.json`` (metrics).
  ``--images FOLDER`` appends one row per image, setting and quantisation to ``<out>/attack_metrics.csv`` as each
  batch finishes (atomically); a rerun skips what is done.
* ``cam``: the CAM figure of one image (image, CAM cells, saliency overlay) as ``<image>_cam.png``.

``--model_name`` takes a kit model name (``lite0``, the paper's torchvision names, ``timm:<name>``) or a
factory ``package.module:function`` that returns an :class:`ama.CAMModel` (your own model; the tests use it
for a tiny one). New commands: add a ``_add_<name>`` parser function and a ``_run_<name>`` function to
:data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("ama")

CSV_NAME = "attack_metrics.csv"
# Columns that say which setting a row belongs to (with the image name: a finished row).
SETTING_COLUMNS = ("model", "e", "mode", "optimizer", "restarts", "n_iter", "lamb", "seed", "target")


class CLIError(ValueError):
    """A user error; printed as one line."""


# --- models ---------------------------------------------------------------------------------
def load_cli_model(name: str, device: str = "auto"):
    """A kit model by name, or ``module:function`` (a factory returning a CAMModel), on ``device``."""
    import ama
    from ama.models import CAMModel, resolve_device

    if ":" in name and not name.startswith("timm:"):
        module, _, func = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as err:
            raise CLIError(f"cannot load model factory {name!r}: {err}") from None
        model = factory()
        if not isinstance(model, CAMModel):
            raise CLIError(f"model factory {name!r} returned {type(model).__name__}, not an ama.CAMModel")
        return model.to(resolve_device(device))
    return ama.load_model(name, device=device)


# --- parsers --------------------------------------------------------------------------------
def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model_name", "--model-name", "--model", dest="model_name", default="lite0",
                   help="lite0 (default, offline), resnet50, resnet101, ..., timm:<name>, or module:factory")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: CUDA when present, else CPU)")


def _add_attack(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("attack", help="adversarial marginal attack on one image or a folder",
                       description="Perturb only the e-pixel frame of the image (Xia et al. 2021, section AMA).")
    _model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="one image file")
    src.add_argument("--images", help="a folder of images (recursive); results appended to <out>/attack_metrics.csv")
    p.add_argument("--e", type=int, nargs="+", default=[1], help="frame width(s) in pixels (default 1)")
    p.add_argument("--n_iter", "--n-iter", dest="n_iter", type=int, default=100, help="iterations (default 100)")
    p.add_argument("--lamb", type=float, default=100.0, help="weight of the CAM term (default 100)")
    p.add_argument("--mode", default="flip", choices=("flip", "keep"),
                   help="flip: change the prediction (reference); keep: keep it, change only the CAM")
    p.add_argument("--target", default=None,
                   help="targeted CAM: disc, square, ring, text:X, flip, flipud, invert, or an image file (its CAM)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise (default 0)")
    p.add_argument("--optimizer", default="sign", choices=("sign", "apgd", "adam"),
                   help="sign: the reference's signed steps (default); apgd, adam: stronger at the same budget")
    p.add_argument("--restarts", type=int, default=None,
                   help="restarts within the budget of --n_iter passes (default: the optimizer's, 0)")
    p.add_argument("--out", default=".", help="output folder (default: the current folder)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=8,
                   help="images per attack call in folder mode (default 8)")
    p.add_argument("--n-images", "--n_images", dest="n_images", type=int, default=None,
                   help="folder mode: a seeded subset of this many images")
    return p


def _add_cam(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("cam", help="CAM figure of one image", description="Write the CAM figure of an image.")
    _model_args(p)
    p.add_argument("--image", required=True, help="one image file")
    p.add_argument("--upsample", default="bilinear", choices=("bilinear", "nearest", "bicubic", "area"))
    p.add_argument("--out", default=".", help="output folder (default: the current folder)")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ama", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (add, _) in COMMANDS.items():
        add(sub)
    return parser


# --- attack ---------------------------------------------------------------------------------
def _check_attack_args(args) -> None:
    if args.n_iter < 1:
        raise CLIError(f"--n_iter must be positive, got {args.n_iter}")
    if args.lamb < 0:
        raise CLIError(f"--lamb must be non-negative, got {args.lamb:g}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be positive, got {args.batch_size}")
    bad = [e for e in args.e if e < 1]
    if bad:
        raise CLIError(f"--e must be positive integers, got {bad[0]}")
    if len(set(args.e)) != len(args.e):
        raise CLIError(f"--e lists a value twice: {args.e}")


def _target(args, model, x):
    if args.target is None:
        return None
    from ama.cam import cam
    from ama.shapes import make_target

    import torch

    with torch.no_grad():
        clean = cam(model, x.to(model.device)).cpu()
    return make_target(args.target, tuple(clean.shape[-2:]), clean_cam=clean, model=model)


def _rows(result, args):
    df = result.metrics.copy()
    df.insert(df.columns.get_loc("quantized"), "target", args.target or "")
    return df


def _attack_one(args, model) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ama.attack import marginal_attack, save_png
    from ama.plots import attack_figure
    from ama.data import load_image
    from ama.paths import resolve

    path = resolve(args.image)
    x = load_image(path, model)
    out = resolve(args.out)
    out.mkdir(parents=True, exist_ok=True)
    target = _target(args, model, x)
    for e in args.e:
        r = marginal_attack(model, x, e=e, n_iter=args.n_iter, lamb=args.lamb, mode=args.mode, target_map=target,
                            seed=args.seed, names=[path.stem], optimizer=args.optimizer, restarts=args.restarts)
        stem = f"{path.stem}_ama_{e}"
        fig = attack_figure(r, 0, quantized=True)
        fig.savefig(out / f"{stem}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        save_png(r.adv_q[0], out / f"{stem}_adv.png")
        df = _rows(r, args)
        info = dict(image=str(path), params={**r.params, "target": args.target}, figure=f"{stem}.png",
                    adversarial_image=f"{stem}_adv.png", metrics=json.loads(df.to_json(orient="records")))
        tmp = out / f"{stem}.json.tmp"
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(out / f"{stem}.json")
        q = df[df.quantized].iloc[0]
        print(f"{path.name} e={e}: {q.clean_name} ({q.clean_conf:.1%}) -> {q.adv_name} ({q.adv_conf:.1%}), "
              f"CAM cosine {q.cam_cosine:.3f} (8-bit); wrote {out / stem}.png/.json, {stem}_adv.png")
    return 0


def _done(csv: Path, settings: dict) -> dict:
    """``{e: set of image names}`` already in ``csv`` for this run's settings (both quantisations present)."""
    import pandas as pd

    if not csv.is_file():
        return {e: set() for e in settings}
    df = pd.read_csv(csv, keep_default_na=False, dtype={"target": str, "image": str})
    done = {}
    for e, setting in settings.items():
        sel = pd.Series(True, index=df.index)
        for k, v in setting.items():
            col = df[k]
            sel &= (col.astype(float) == float(v)) if isinstance(v, (int, float)) else (col.astype(str) == str(v))
        counts = df[sel].groupby("image").quantized.nunique()
        done[e] = set(counts[counts == 2].index)
    return done


def append_rows(csv: Path, df) -> None:
    """Append ``df``'s rows to ``csv`` atomically (old content + new rows to a temporary file, then rename)."""
    text = df.to_csv(index=False, header=not csv.is_file(), float_format="%.6g")
    if csv.is_file():
        old = csv.read_text()
        header = old.split("\n", 1)[0]
        if header != ",".join(df.columns):
            raise CLIError(f"{csv} has other columns than this version writes; use another --out")
        text = old + ("" if old.endswith("\n") else "\n") + text
    tmp = csv.with_name(csv.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(csv)


def _attack_folder(args, model) -> int:
    from ama.data import list_images
    from ama.paths import resolve

    out = resolve(args.out)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / CSV_NAME
    records = list_images(args.images, n=args.n_images, seed=args.seed)
    from ama.attack import optimizer_settings

    opt = optimizer_settings(args.optimizer, args.restarts)
    settings = {e: dict(model=model.name, e=e, mode=args.mode, optimizer=opt["optimizer"], restarts=opt["restarts"],
                        n_iter=args.n_iter, lamb=args.lamb, seed=args.seed,
                        target=args.target or "") for e in args.e}
    done = _done(csv, settings)
    names = {r.name for r in records}
    total = len(records) * len(args.e)
    initial = sum(len(done[e] & names) for e in args.e)
    skipped_files = {}
    data_log = log
    level = data_log.level
    data_log.setLevel(logging.ERROR)  # bad files are reported here, once, not once per batch and setting
    try:
        _folder_loop(args, model, csv, settings, done, total, initial, skipped_files)
    finally:
        data_log.setLevel(level)
    n_done = sum(len(v) for v in _done(csv, settings).values())
    print(f"{n_done} image x setting results in {csv}" +
          (f"; {len(skipped_files)} bad file(s) skipped: {', '.join(sorted(skipped_files))}" if skipped_files else ""))
    return 0


def _folder_loop(args, model, csv, settings, done, total, initial, skipped_files) -> None:
    from tqdm import tqdm  # plain text bar: no widget warning under papermill, few lines in logs

    from ama.attack import marginal_attack
    from ama.data import iter_batches

    with tqdm(total=total, initial=initial, desc="attack", unit="img", mininterval=5, file=sys.stderr) as bar:
        for e in args.e:
            for batch in iter_batches(args.images, model, args.batch_size, n=args.n_images, seed=args.seed,
                                      skip=done[e]):
                for name, reason in batch.skipped:
                    if name not in skipped_files:
                        skipped_files[name] = reason
                        tqdm.write(f"skipped {name}: {reason}", file=sys.stderr)
                    bar.update(1)
                if not batch.names:
                    continue
                target = _target(args, model, batch.images)
                r = marginal_attack(model, batch.images, e=e, n_iter=args.n_iter, lamb=args.lamb, mode=args.mode,
                                    target_map=target, seed=args.seed, names=batch.names, optimizer=args.optimizer,
                                    restarts=args.restarts)
                append_rows(csv, _rows(r, args))
                bar.update(len(batch.names))


def _run_attack(args) -> int:
    _check_attack_args(args)
    model = load_cli_model(args.model_name, args.device)
    return _attack_one(args, model) if args.image else _attack_folder(args, model)


def _run_cam(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ama.data import load_image
    from ama.paths import resolve
    from ama.plots import cam_figure

    model = load_cli_model(args.model_name, args.device)
    path = resolve(args.image)
    x = load_image(path, model)
    out = resolve(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig = cam_figure(model, x, names=[path.stem], mode=args.upsample)
    fig.savefig(out / f"{path.stem}_cam.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out / (path.stem + '_cam.png')}")
    return 0


COMMANDS = {"attack": (_add_attack, _run_attack), "cam": (_add_cam, _run_cam)}


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors are printed as one line (``error: ...``) with exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except (ValueError, FileNotFoundError) as err:  # CLIError, ModelError, ImageLoadError, bad parameters
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
