"""The kit's command line: ``python -m ama <command>`` (or the ``ama`` console script).

Commands:

* ``attack``: the adversarial marginal attack, with the reference script's flags and defaults
  (``--model_name``, ``--image``, ``--e``, ``--n_iter 100``, ``--lamb 100``, ``--device``) plus ``--mode``,
  ``--target``, ``--seed``, ``--out``. ``--image`` writes ``<image>_ama_<e>.png`` (the 2 x 2 figure),
  ``<image>_ama_<e>_adv.png`` (the adversarial image, lossless 8-bit) and ``<image>_ama_<e>.json`` (metrics);
  settings other than the defaults are added to the name (``<image>_ama_<e>_it50_lamb10_keep``).
  ``--images FOLDER`` appends one row per image (keyed by its path in the folder, suffix included), setting and
  quantisation to this rank's part file ``<out>/parts/attack_metrics.rank<r>.csv`` as each batch finishes, then
  merges the parts into ``<out>/attack_metrics.csv`` (see :mod:`ama.store.parts`); a rerun does only what is missing,
  and a second run into the same folder refuses at once. Under ``torchrun`` each rank takes a strided shard
  (see :mod:`ama.store.distributed`); use ``--frame-width`` there (torchrun claims ``--e``).
* ``merge OUT``: write ``OUT/attack_metrics.csv`` from the part files; refuses duplicate or missing rows.
* ``cam``: the CAM figure of one image (image, CAM cells, saliency overlay) as ``<image>_cam.png``.

``--model_name`` takes a kit model name (``lite0``, the paper's torchvision names, ``timm:<name>``) or a
factory ``package.module:function`` that returns an :class:`ama.CAMModel` (your own model; the tests use it
for a tiny one). New commands: add a ``_add_<name>`` parser function and a ``_run_<name>`` function to
:data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from ama.attack import optimizers
from ama.attack.marginal import ATTACK_BATCH, MODES
from ama.kernels.upsampling import INTERPOLATIONS
from ama.params import RunParams
from ama.paths import CLI_RESULTS_DIR, atomic_write
from ama.store.parts import TABLE_NAME as CSV_NAME

log = logging.getLogger("ama")

# The kit's defaults (ama/params.py; the reference script's): other values go into single-image output names.
# The single-image frame width default stays the reference script's 1.
DEFAULTS = RunParams()
DEFAULT_MODE = MODES[0]  # flip, the reference


class CLIError(ValueError):
    """A user error; printed as one line."""


def check_device(device: str) -> str:
    """``device`` if this machine can use it (:func:`ama.inputs.devices.resolve_device`: ``auto``, ``cpu``, ``cuda``,
    ``cuda:N``, ``mps`` where present), else a one-line CLIError; checked before the model loads."""
    from ama.inputs.devices import DeviceError, resolve_device

    try:
        resolve_device(device)
    except DeviceError as err:
        raise CLIError(f"--device: {err}") from None
    return device


# --- models ---------------------------------------------------------------------------------
def load_cli_model(name: str, device: str = "auto", checkpoint: str | None = None):
    """A kit model by name, or ``module:function`` (a factory returning a CAMModel), on ``device``.

    ``checkpoint``: a state-dict file replacing a kit model's weights (:func:`ama.load_model`)."""
    import ama
    from ama.inputs.models import is_factory, load_factory_model

    if is_factory(name):
        if checkpoint is not None:
            raise CLIError(f"--checkpoint works with kit model names, not with a factory ({name!r}); "
                           f"load the weights in your factory")
        return load_factory_model(name, device)
    return ama.load_model(name, device=device, checkpoint=checkpoint)


# --- parsers --------------------------------------------------------------------------------
def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model_name", "--model-name", "--model", dest="model_name", default=DEFAULTS.models[0],
                   help="lite0 (default, offline), resnet50, resnet101, ..., timm:<name>, or module:factory")
    p.add_argument("--device", default=DEFAULTS.device, help="cpu, cuda, cuda:1 ... (default: CUDA when present, else CPU; "
                   "under torchrun each rank takes cuda:LOCAL_RANK)")
    p.add_argument("--checkpoint", default=None, help="a state-dict file replacing the model's pretrained weights")


def _add_attack(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("attack", help="adversarial marginal attack on one image or a folder",
                       description="Perturb only the e-pixel frame of the image (Xia et al. 2021, section AMA).")
    _model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--image", help="one image file")
    src.add_argument("--images", help="a folder of images (recursive); results appended to <out>/attack_metrics.csv")
    p.add_argument("--e", "--frame-width", dest="e", type=int, nargs="+", default=[1],
                   help="frame width(s) in pixels (default 1); under torchrun write --frame-width (torchrun claims --e)")
    p.add_argument("--n_iter", "--n-iter", dest="n_iter", type=int, default=DEFAULTS.n_iter,
                   help=f"iterations (default {DEFAULTS.n_iter})")
    p.add_argument("--lamb", type=float, default=DEFAULTS.lamb, help=f"weight of the CAM term (default {DEFAULTS.lamb:g})")
    p.add_argument("--mode", default=DEFAULT_MODE, choices=MODES,
                   help="flip: change the prediction (reference); keep: keep it, change only the CAM")
    p.add_argument("--target", default=None,
                   help="targeted CAM: disc, square, ring, text:X, flip, flipud, invert, or an image file (its CAM)")
    p.add_argument("--seed", type=int, default=DEFAULTS.seed, help=f"seed of the starting noise (default {DEFAULTS.seed})")
    p.add_argument("--optimizer", default=optimizers.ORIGINAL, choices=optimizers.NAMES,
                   help="sign: the reference's signed steps (default); apgd, adam: stronger at the same budget")
    p.add_argument("--restarts", type=int, default=None,
                   help="restarts within the budget of --n_iter passes (default: the optimizer's, 0)")
    p.add_argument("--out", default=str(CLI_RESULTS_DIR / "attack"),
                   help="output folder (default: results/cli/attack/ in the kit's folder)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=None,
                   help="images per attack call in folder mode (default: the kit's for the device, "
                        + ", ".join(f"{n} on {d}" for d, n in ATTACK_BATCH.items()) + ")")
    p.add_argument("--n-images", "--n_images", dest="n_images", type=int, default=None,
                   help="folder mode: a seeded subset of this many images")
    return p


def _add_cam(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("cam", help="CAM figure of one image", description="Write the CAM figure of an image.")
    _model_args(p)
    p.add_argument("--image", required=True, help="one image file")
    p.add_argument("--upsample", default=INTERPOLATIONS[0], choices=INTERPOLATIONS)
    p.add_argument("--out", default=str(CLI_RESULTS_DIR / "cam"),
                   help="output folder (default: results/cli/cam/ in the kit's folder)")
    return p


def _add_merge(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("merge", help="merge a folder run's part files into its table",
                       description="Write OUT/attack_metrics.csv from OUT/parts; refuse duplicate or missing rows.")
    p.add_argument("out", help="the --out folder of a folder run")
    p.add_argument("--allow-missing", action="store_true", help="write the table even if planned rows are missing")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ama", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for name, (add, _) in COMMANDS.items():
        add(sub)
    return parser


# --- attack ---------------------------------------------------------------------------------
def _check_attack_args(args) -> None:
    """What can be checked before the model loads (``e`` against the input size: :func:`_check_e_for`)."""
    from ama.params import ParamsError

    check_device(args.device)
    try:  # the run parameters' own validation (one message for each)
        RunParams(models=(args.model_name,), e=tuple(args.e), n_iter=args.n_iter, lamb=args.lamb, seed=args.seed)
    except ParamsError as err:
        raise CLIError(str(err)) from None
    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size must be positive, got {args.batch_size}")
    if len(set(args.e)) != len(args.e):
        raise CLIError(f"--e lists a value twice: {args.e}")


def _check_e_for(args, model) -> None:
    """``e`` against the model's input size, right after loading and before any image work."""
    from ama.params import check_frame_width

    for e in args.e:
        try:
            check_frame_width(e, model.input_size)
        except ValueError as err:
            raise CLIError(f"--e {e}: {err}") from None


def output_stem(image: str, e: int, args) -> str:
    """``<image>_ama_<e>`` for the default settings (the reference script's name), the other settings appended
    otherwise (``<image>_ama_<e>_it50_lamb10_keep_seed1_target-disc``) so reruns do not overwrite each other. ``args``:
    the parsed command line."""
    import re

    stem = f"{image}_ama_{e}"
    if args.n_iter != DEFAULTS.n_iter:
        stem += f"_it{args.n_iter}"
    if args.lamb != DEFAULTS.lamb:
        stem += f"_lamb{args.lamb:g}"
    if args.mode != DEFAULT_MODE:
        stem += f"_{args.mode}"
    if args.optimizer != optimizers.ORIGINAL:
        stem += f"_{args.optimizer}"
    if args.restarts:
        stem += f"_restarts{args.restarts}"
    if args.seed != DEFAULTS.seed:
        stem += f"_seed{args.seed}"
    if args.target is not None:
        stem += "_target-" + re.sub(r"[^A-Za-z0-9.-]+", "-", Path(args.target).name if Path(args.target).suffix
                                    else args.target).strip("-")
    return stem


def _target(args, model, x):
    if args.target is None:
        return None
    from ama.inputs.targets import make_target
    from ama.kernels.cam import cam

    import torch

    with torch.no_grad():
        clean = cam(model, x.to(model.device)).cpu()
    return make_target(args.target, tuple(clean.shape[-2:]), clean_cam=clean, model=model)


def _rows(result, args):
    """The result's metric rows with the ``target`` column."""
    df = result.metrics.copy()
    df.insert(df.columns.get_loc("quantized"), "target", args.target or "")
    return df


def _open_one(path, model):
    """One image alone; OS-level failures (a symlink loop, a permission) become one-line ImageLoadErrors."""
    from ama.inputs.images import ImageLoadError, load_image

    try:
        return load_image(path, model)
    except (OSError, RuntimeError) as err:
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise ImageLoadError(f"{path}: cannot be opened ({reason})") from None


def _attack_one(args, model) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ama.attack.marginal import marginal_attack
    from ama.figures.plots import attack_figure
    from ama.store.tables import save_png

    path = Path(args.image).expanduser().absolute()
    x = _open_one(path, model)
    out = Path(args.out)
    target = _target(args, model, x)
    for e in args.e:
        r = marginal_attack(model, x, e=e, n_iter=args.n_iter, lamb=args.lamb, mode=args.mode, target_map=target,
                            seed=args.seed, names=[path.stem], optimizer=args.optimizer, restarts=args.restarts)
        stem = output_stem(path.stem, e, args)
        fig = attack_figure(r, 0, quantized=True)
        fig.savefig(out / f"{stem}.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
        save_png(r.adv_q[0], out / f"{stem}_adv.png")
        df = _rows(r, args)
        info = dict(image=str(path), params={**r.params.to_dict(), "target": args.target}, figure=f"{stem}.png",
                    adversarial_image=f"{stem}_adv.png", metrics=json.loads(df.to_json(orient="records")))
        atomic_write(out / f"{stem}.json", json.dumps(info, indent=2) + "\n")
        q = df[df.quantized].iloc[0]
        print(f"{path.name} e={e}: {q.clean_name} ({q.clean_conf:.1%}) -> {q.adv_name} ({q.adv_conf:.1%}), "
              f"CAM cosine {q.cam_cosine:.3f} (8-bit); wrote {out / stem}.png/.json, {stem}_adv.png")
    return 0


def file_key(path: Path, root: Path) -> str:
    """The run-store key of an image: its path relative to the folder, suffix included (POSIX separators). ``root``: the
    folder the run reads."""
    return path.relative_to(root).as_posix() if root is not None else path.name


def _attack_folder(args, model, launch) -> int:
    from ama.inputs.images import list_images
    from ama.paths import resolve
    from ama.store.distributed import shard
    from ama.store.parts import PARTS_DIR, RankLock, RankPart, done_keys, merge

    out = Path(args.out)
    root = resolve(args.images)
    records = list_images(root, n=args.n_images, seed=args.seed)
    root = root if root.is_dir() else root.parent
    keyed = sorted((file_key(rec.path, root), rec) for rec in records)
    mine = shard(keyed, launch)
    opt = optimizers.settings(args.optimizer, args.restarts)
    settings = [dict(model=model.name, e=e, mode=args.mode, optimizer=opt["optimizer"], restarts=opt["restarts"],
                     n_iter=args.n_iter, lamb=args.lamb, seed=args.seed, target=args.target or "") for e in args.e]
    skipped: dict[str, str] = {}
    with RankLock(out, launch.rank, launch.world, launch.run_id):
        part = RankPart(out / PARTS_DIR, launch.rank)
        part.write_plan(files=[k for k, _ in mine], settings=settings)
        level = log.level
        log.setLevel(logging.ERROR)  # bad files are reported here, once, not once per batch and setting
        try:
            _folder_loop(args, model, part, mine, settings, done_keys(out), skipped)
        finally:
            log.setLevel(level)
        part.write_plan(files=[k for k, _ in mine], settings=settings, skipped=skipped, finished=True)
    where = f" (rank {launch.rank} of {launch.world})" if launch.distributed else ""
    listing = "; ".join(f"{k}: {v}" for k, v in sorted(skipped.items()))
    if mine and len(skipped) == len(mine):
        raise CLIError(f"no image of {root}{where} could be attacked; {len(skipped)} bad file(s) skipped: {listing}")
    table, missing = merge(out)
    print(f"{len(table)} rows in {out / CSV_NAME}{where}" +
          (f"; {len(missing)} row(s) of other ranks still missing (they merge when they end)" if missing else "") +
          (f"; {len(skipped)} bad file(s) skipped: {listing}" if skipped else ""))
    return 0


def _folder_loop(args, model, part, mine, settings, done, skipped) -> None:
    from tqdm import tqdm  # plain text bar: no widget warning under papermill, few lines in logs

    import ama.attack.marginal
    from ama.inputs.images import load_records
    from ama.store.parts import setting_key

    batch_size = args.batch_size or ama.attack.marginal.attack_batch(model.device)
    todo = {s["e"]: [(k, rec) for k, rec in mine if setting_key(k, s, True) not in done] for s in settings}
    total = len(mine) * len(settings)
    with tqdm(total=total, initial=total - sum(map(len, todo.values())), desc="attack", unit="img",
              mininterval=5, file=sys.stderr) as bar:
        for setting in settings:
            e, items = setting["e"], todo[setting["e"]]
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                batch = load_records([rec for _, rec in chunk], model)
                loaded = {Path(p) for p in batch.paths}
                reasons = dict(batch.skipped)
                files = []
                for k, rec in chunk:
                    if Path(rec.path) in loaded:
                        files.append(k)
                    elif k not in skipped:
                        skipped[k] = reasons.get(rec.name, "could not be loaded")
                        tqdm.write(f"skipped {k}: {skipped[k]}", file=sys.stderr)
                bar.update(len(chunk) - len(files))
                if not files:
                    continue
                target = _target(args, model, batch.images)
                r = ama.attack.marginal.marginal_attack(model, batch.images, e=e, n_iter=args.n_iter, lamb=args.lamb,
                                               mode=args.mode, target_map=target, seed=args.seed, names=files,
                                               optimizer=args.optimizer, restarts=args.restarts)
                df = _rows(r, args)
                df.insert(df.columns.get_loc("image") + 1, "file", df.image)
                df["image"] = df.file.map(lambda f: Path(f).with_suffix("").as_posix())
                part.append(df)
                bar.update(len(files))


def _run_attack(args) -> int:
    from ama.store.distributed import launch_from_env, rank_device
    from ama.store.parts import check_writable

    _check_attack_args(args)  # everything that can be checked before the model loads
    launch = launch_from_env()
    if args.image and launch.distributed:
        raise CLIError("--image under torchrun would attack one image N times; give a folder with --images")
    check_writable(Path(args.out).expanduser().absolute())
    args.out = str(Path(args.out).expanduser().absolute())
    model = load_cli_model(args.model_name, rank_device(args.device, launch), args.checkpoint)
    _check_e_for(args, model)
    return _attack_one(args, model) if args.image else _attack_folder(args, model, launch)


def _run_cam(args) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import torch

    from ama.figures.plots import cam_figure, class_title
    from ama.store.parts import check_writable

    check_device(args.device)
    out = check_writable(Path(args.out).expanduser().absolute())
    model = load_cli_model(args.model_name, args.device, args.checkpoint)
    path = Path(args.image).expanduser().absolute()
    x = _open_one(path, model)
    fig = cam_figure(model, x, names=[path.stem], mode=args.upsample)
    fig.savefig(out / f"{path.stem}_cam.png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    with torch.no_grad():
        logits = model(x.to(model.device))[0].cpu()
    print(f"{path.name}: {class_title(model, logits)}; wrote {out / (path.stem + '_cam.png')}")
    return 0


def _run_merge(args) -> int:
    from ama.store.parts import merge

    out = Path(args.out).expanduser().absolute()
    if not out.is_dir():
        raise CLIError(f"{out}: no such folder")
    table, missing = merge(out, strict=not args.allow_missing)
    print(f"{len(table)} rows in {out / CSV_NAME}" + (f"; {len(missing)} planned row(s) missing" if missing else ""))
    return 0


COMMANDS = {"attack": (_add_attack, _run_attack), "cam": (_add_cam, _run_cam), "merge": (_add_merge, _run_merge)}


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors are printed as one line (``error: ...``) with exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except KeyboardInterrupt:  # one line, not a traceback; finished images are kept (written atomically)
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:  # CLIError, ModelError, ImageLoadError, RunStoreError, ...
        print(f"error: {str(err).splitlines()[0] if str(err) else type(err).__name__}", file=sys.stderr)
        return 2
    except OSError as err:  # a disk that fills or a folder made read-only during the run
        from ama.store.parts import os_reason

        print(f"error: {err.filename or 'output'}: {os_reason(err)}", file=sys.stderr)
        return 2
