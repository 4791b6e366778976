#!/usr/bin/env python
"""Re-encode the 1000-image ImageNet sample (one labelled image per class) light enough to ship with the kit.

Source: a checkout of github.com/EliSchwartz/imagenet-sample-images, a flat folder of 1000 JPEGs named
``<wnid>_<name>.JPEG`` (``n01440764_tench.JPEG``). The class index of an image is the rank of its WordNet id
among the 1000 sorted ids, which is the index order of every ImageNet model in the kit (0 = tench).

Each image is decoded as the kit decodes it (``ama.inputs.images.open_image``: EXIF orientation applied, 8-bit RGB),
its shorter side brought down to at most ``MAX_SHORT`` = 292 px (the largest resize of the offline models:
lite0/lite1/lite2 resize to 256/272/292 before their centre crop) and written as a JPEG. See ``encode`` for the
exact settings. The output is deterministic: the same source and the same Pillow build give the same bytes
(no timestamps, no EXIF, nothing taken from the clock).

``manifest.csv`` in the destination lists one row per image, sorted by class index, with the columns
``file,wnid,class_index,class_name,source_file,source_sha256,source_bytes,width,height``
(``class_name``: torchvision's short ImageNet name, as the kit shows elsewhere; ``width``/``height``: the
re-encoded file).

Usage (from the repository root, with the kit's environment)::

    .venv/bin/python tools/imagenet_sample.py --source /tmp/imagenet-orig --dest data/imagenet
    .venv/bin/python tools/imagenet_sample.py --source /tmp/imagenet-orig --dest data/imagenet --evaluate

``--evaluate`` re-encodes nothing: it runs the offline models over the originals and the re-encoded files
listed in the manifest and prints top-1/top-5 accuracy for both, plus the top-1 count on the fixed 50-image
subset (class indices 0, 20, ..., 980).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageFile, features

try:
    import ama
except ImportError:  # run from a checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import ama
from ama.inputs.images import open_image

MAX_SHORT = 292  # the shorter side of a re-encoded image is at most this many pixels
RESAMPLE = Image.Resampling.BICUBIC  # the filter the offline models' own resize uses
JPEG_SETTINGS = dict(quality=90, subsampling=0, optimize=True, progressive=True)  # 4:4:4, Huffman-optimised
SUFFIX = ".jpg"
MANIFEST = "manifest.csv"
COLUMNS = ("file", "wnid", "class_index", "class_name", "source_file", "source_sha256", "source_bytes", "width",
           "height")
SUBSET_STEP = 20  # the fixed subset: class indices 0, 20, 40, ..., 980
MODELS = ("lite0", "lite1", "lite2")

# Pillow sizes the output buffer of an optimised/progressive JPEG below quality 95 at one byte per pixel, which a
# noisy 4:4:4 image can exceed ("Suspension not allowed here"); a larger floor avoids that and changes no byte.
ImageFile.MAXBLOCK = max(ImageFile.MAXBLOCK, 1 << 24)


@dataclass(frozen=True)
class Source:
    path: Path
    wnid: str
    class_index: int
    class_name: str


def imagenet_classes() -> tuple[list[str], list[str]]:
    """The 1000 WordNet ids in class-index order and torchvision's short class names in the same order."""
    from timm.data import ImageNetInfo
    from torchvision.models import ResNet50_Weights

    wnids = list(ImageNetInfo().label_names())
    if wnids != sorted(wnids) or len(wnids) != 1000:
        raise SystemExit("timm's ImageNet wnids are not the 1000 sorted ids; the class indices would be wrong")
    return wnids, list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def list_sources(folder: Path) -> list[Source]:
    """The ``<wnid>_<name>.JPEG`` files of ``folder``, one per class, sorted by class index."""
    wnids, names = imagenet_classes()
    index = {w: i for i, w in enumerate(wnids)}
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg") and p.is_file()):
        wnid = path.name.split("_", 1)[0]
        if wnid not in index:
            raise SystemExit(f"{path.name}: {wnid!r} is not an ImageNet-1k WordNet id")
        if wnid in found:
            raise SystemExit(f"two images of class {wnid}: {found[wnid].name} and {path.name}")
        found[wnid] = path
    if not found:
        raise SystemExit(f"{folder}: no <wnid>_<name>.JPEG files")
    if len(found) != len(wnids):
        print(f"warning: {len(found)} classes in {folder}, not {len(wnids)}", file=sys.stderr)
    return [Source(p, w, index[w], names[index[w]]) for w, p in sorted(found.items(), key=lambda kv: index[kv[0]])]


def target_size(width: int, height: int, max_short: int = MAX_SHORT) -> tuple[int, int]:
    """``(width, height)`` with the shorter side at most ``max_short``; the longer side is rounded down as
    torchvision's ``Resize(max_short)`` rounds it, so that lite2's own resize of the result changes nothing."""
    short, long = min(width, height), max(width, height)
    if short <= max_short:
        return width, height
    new_long = int(max_short * long / short)
    return (max_short, new_long) if width <= height else (new_long, max_short)


def encode(src: Path, dst: Path) -> tuple[int, int]:
    """Re-encode one image; returns the ``(width, height)`` written.

    Decoded with ``ama.inputs.images.open_image`` (EXIF orientation applied, RGB), shrunk with Pillow's bicubic filter
    when its shorter side exceeds ``MAX_SHORT``, written as a progressive JPEG with the
    ``JPEG_SETTINGS`` above. A greyscale source stays greyscale (one channel, same pixel values once loaded as
    RGB). Its ICC colour profile is kept when it fits the output (an RGB profile on a greyscale JPEG is dropped);
    EXIF and other metadata are not written."""
    with Image.open(src) as raw:
        grey = raw.mode in ("1", "L", "LA", "I;16")
        icc = raw.info.get("icc_profile") or None
    img = open_image(src)
    size = target_size(*img.size)
    if size != img.size:
        img = img.resize(size, RESAMPLE)
    if grey:
        img = img.convert("L")  # R = G = B here, so this is exact
    if icc is not None and icc[16:20] != (b"GRAY" if grey else b"RGB "):
        icc = None
    img.save(dst, "JPEG", icc_profile=icc, **JPEG_SETTINGS)
    return img.size


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reencode_all(source: Path, dest: Path) -> list[dict]:
    """Re-encode every source image into ``dest`` and write ``dest/manifest.csv``; returns its rows."""
    sources = list_sources(source)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for n, src in enumerate(sources, 1):
        out = dest / (src.path.stem + SUFFIX)
        width, height = encode(src.path, out)
        rows.append(dict(file=out.name, wnid=src.wnid, class_index=src.class_index, class_name=src.class_name,
                         source_file=src.path.name, source_sha256=sha256(src.path),
                         source_bytes=src.path.stat().st_size, width=width, height=height))
        if n % 100 == 0:
            print(f"{n}/{len(sources)}", file=sys.stderr)
    with open(dest / MANIFEST, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    listed = {r["file"] for r in rows}
    stray = sorted(p.name for p in dest.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")
                   and p.name not in listed)
    if stray:
        print(f"warning: {len(stray)} image files in {dest} are not in the manifest: {', '.join(stray[:5])}",
              file=sys.stderr)
    total = sum((dest / r["file"]).stat().st_size for r in rows)
    print(f"wrote {len(rows)} images ({total / 1e6:.1f} MB) and {MANIFEST} to {dest}")
    return rows


def read_manifest(dest: Path) -> list[dict]:
    with open(dest / MANIFEST, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or tuple(rows[0]) != COLUMNS:
        raise SystemExit(f"{dest / MANIFEST}: expected the columns {','.join(COLUMNS)}")
    return rows


def top5(model, paths: list[Path], batch_size: int):
    """The five highest-scoring class indices of each image, ``(N, 5)``."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(paths), batch_size):
            x = torch.stack([model.preprocess(open_image(p)) for p in paths[i:i + batch_size]])
            out.append(model(x.to(model.mean.device)).topk(5, dim=1).indices.cpu())
    return torch.cat(out)


def evaluate(source: Path, dest: Path, models: list[str], batch_size: int, device: str) -> list[dict]:
    """Top-1/top-5 of each model on the originals and the re-encoded files; prints a Markdown table."""
    import torch

    rows = read_manifest(dest)
    originals = [source / r["source_file"] for r in rows]
    changed = [p.name for p, r in zip(originals, rows) if sha256(p) != r["source_sha256"]]
    if changed:
        print(f"warning: {len(changed)} originals differ from the manifest's sha256: {', '.join(changed[:5])}",
              file=sys.stderr)
    reencoded = [dest / r["file"] for r in rows]
    labels = torch.tensor([int(r["class_index"]) for r in rows])
    subset = labels % SUBSET_STEP == 0
    results = []
    for name in models:
        model = ama.load_model(name, device=device)
        res = {"model": name}
        preds = {}
        for kind, paths in (("original", originals), ("re-encoded", reencoded)):
            pred = top5(model, paths, batch_size)
            hit1 = pred[:, 0] == labels
            res[f"{kind} top-1"] = 100 * hit1.double().mean().item()
            res[f"{kind} top-5"] = 100 * (pred == labels[:, None]).any(1).double().mean().item()
            res[f"{kind} subset"] = int(hit1[subset].sum())
            preds[kind] = pred[:, 0]
        res["top-1 changed"] = int((preds["original"] != preds["re-encoded"]).sum())
        results.append(res)
        print(f"{name} done", file=sys.stderr)
    n, n_sub = len(rows), int(subset.sum())
    print(f"\n{n} images; subset: the {n_sub} images of class indices 0, {SUBSET_STEP}, {2 * SUBSET_STEP}, ...\n")
    print("| model | original top-1 | original top-5 | re-encoded top-1 | re-encoded top-5 | Δ top-1 "
          f"| top-1 prediction changed | subset top-1 (of {n_sub}): original / re-encoded |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        delta = r["re-encoded top-1"] - r["original top-1"]
        print(f"| {r['model']} | {r['original top-1']:.1f}% | {r['original top-5']:.1f}% | "
              f"{r['re-encoded top-1']:.1f}% | {r['re-encoded top-5']:.1f}% | {delta:+.1f} | "
              f"{r['top-1 changed']} | {r['original subset']} / {r['re-encoded subset']} |")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, required=True, help="folder of the original <wnid>_<name>.JPEG files")
    parser.add_argument("--dest", type=Path, required=True, help="folder for the re-encoded images and manifest.csv")
    parser.add_argument("--evaluate", action="store_true",
                        help="re-encode nothing; print the models' accuracy on the originals vs the files in --dest")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models for --evaluate")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not args.source.is_dir():
        parser.error(f"--source {args.source}: no such folder")
    if args.evaluate:
        evaluate(args.source, args.dest, [m for m in args.models.split(",") if m], args.batch_size, args.device)
    else:
        print(f"Pillow {Image.__version__}, libjpeg-turbo {features.version('libjpeg_turbo')}: JPEG {JPEG_SETTINGS}")
        reencode_all(args.source, args.dest)


if __name__ == "__main__":
    main()
