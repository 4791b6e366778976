"""Images: the offline sample photos, image folders, ImageNet validation folders.

Every loader returns float images ``(B, 3, H, W)`` in ``[0, 1]`` at the model's input size.
A bad file (not an image, truncated, too small, a decompression bomb, missing) raises a
one-line :class:`ImageLoadError` when loaded alone; in a folder or list it is skipped and
reported (``LoadedImages.skipped``), never fatal to the rest.
"""
from __future__ import annotations

import csv
import io
import hashlib
import importlib
import importlib.metadata
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from ..kernels.cam_model import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ..paths import SAMPLES_DIR, atomic_write, resolve

log = logging.getLogger("ama")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
MIN_SIDE = 32
LABEL_FILES = ("labels.csv", "labels.txt", "val_labels.txt", "LOC_val_solution.csv", "manifest.csv")


class ImageLoadError(ValueError):
    """An image file that cannot be used; the message is one line naming the file and the reason."""


# --- sample photos shipped inside installed packages ----------------------------------------
@dataclass(frozen=True)
class Sample:
    name: str
    package: str       # distribution name, for the version
    module: str        # importable module that holds the file
    relpath: str       # path inside that module's folder


SAMPLES: tuple[Sample, ...] = (
    Sample("astronaut", "scikit-image", "skimage", "data/astronaut.png"),
    Sample("chelsea", "scikit-image", "skimage", "data/chelsea.png"),
    Sample("coffee", "scikit-image", "skimage", "data/coffee.png"),
    Sample("rocket", "scikit-image", "skimage", "data/rocket.jpg"),
    Sample("camera", "scikit-image", "skimage", "data/camera.png"),
    Sample("motorcycle", "scikit-image", "skimage", "data/motorcycle_left.png"),
    Sample("grace_hopper", "matplotlib", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    Sample("china", "scikit-learn", "sklearn", "datasets/images/china.jpg"),
    Sample("flower", "scikit-learn", "sklearn", "datasets/images/flower.jpg"),
)
MANIFEST_FIELDS = ("name", "file", "source_package", "source_version", "original_path", "sha256", "mode", "width", "height")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sample_source(sample: Sample) -> Path:
    try:
        module = importlib.import_module(sample.module)
    except ImportError:
        raise ImageLoadError(f"sample {sample.name} needs the package {sample.package}: pip install {sample.package}") from None
    path = Path(module.__file__).parent / sample.relpath
    if not path.is_file():
        raise ImageLoadError(f"sample {sample.name}: {path} is not in the installed {sample.package}")
    return path


def stage_samples(dest: str | Path = SAMPLES_DIR, force: bool = False) -> Path:
    """Copy the sample photos byte for byte into ``dest`` and write ``manifest.csv``; return its path.

    Files are copied unchanged (the sha256 is the original's); greyscale ``camera`` is
    converted to RGB when it is loaded. Already-staged files with the right checksum are kept.
    ``force``: copy again even where the checksum matches."""
    dest = resolve(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rows = []
    for sample in SAMPLES:
        src = _sample_source(sample)
        target = dest / f"{sample.name}{src.suffix.lower()}"
        digest = sha256(src)
        if force or not target.is_file() or sha256(target) != digest:
            atomic_write(target, write=lambda tmp: shutil.copyfile(src, tmp))
        with Image.open(target) as im:
            mode, (width, height) = im.mode, im.size
        rows.append(dict(name=sample.name, file=target.name, source_package=sample.package,
                         source_version=importlib.metadata.version(sample.package),
                         original_path=f"{sample.module}/{sample.relpath}", sha256=digest,
                         mode=mode, width=width, height=height))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(dest / "manifest.csv", text.getvalue())


# --- one image ------------------------------------------------------------------------------
def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: alpha composited on white, 16-bit scaled, CMYK/palette/grey converted."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        arr = np.clip(arr, 0, 65535) / 257.0 if (mode != "I" or arr.max() > 255) else arr
        img = Image.fromarray(np.round(arr).astype(np.uint8), mode="L")
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        arr = arr * 255.0 if arr.max() <= 1.0 else arr
        img = Image.fromarray(np.round(np.clip(arr, 0, 255)).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def _link_problem(path: Path) -> str | None:
    """``"symlink loop"`` or ``"broken symlink"`` for a symbolic link that leads to no file, else ``None``."""
    if not path.is_symlink() or path.exists():
        return None
    try:
        path.resolve(strict=True)
    except FileNotFoundError:
        return "broken symlink (its target does not exist)"
    except (OSError, RuntimeError):
        return "symlink loop (the link leads back to itself)"
    return None


def _resolve_source(source) -> Path:
    try:
        return resolve(source)
    except (OSError, RuntimeError) as err:  # Path.resolve raises on a symlink loop before Python 3.13
        raise ImageLoadError(f"{source}: symlink loop ({err})" if "loop" in str(err).lower()
                             else f"{source}: cannot resolve the path ({err})") from None


def _resolve_or_keep(path) -> Path:
    """A list entry: resolved, or kept as given when it cannot be (a symlink loop is then skipped on loading)."""
    try:
        return resolve(path)
    except (OSError, RuntimeError):
        return Path(path).expanduser().absolute()


def open_image(path: str | Path, min_side: int = MIN_SIDE) -> Image.Image:
    """Open, fully decode and check one image file -> 8-bit RGB PIL image; :class:`ImageLoadError` if unusable.

    The EXIF orientation tag is applied (a phone photo taken upright comes out upright). ``min_side``: the shortest side
    accepted, in pixels."""
    path = Path(path)
    name = path.name
    link = _link_problem(path)
    if link is not None:
        raise ImageLoadError(f"{path}: {link}")
    if not path.exists():
        raise ImageLoadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageLoadError(f"{path}: is a folder, not an image file")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                img = _to_rgb(ImageOps.exif_transpose(im))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageLoadError(f"{name}: over PIL's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS} pixels); "
                             f"raise PIL.Image.MAX_IMAGE_PIXELS if you trust it ({str(err).split('.')[0]})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not an image file (PIL cannot identify it)") from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        kind = "truncated or corrupt image" if "truncat" in reason or "broken" in reason else "cannot decode image"
        raise ImageLoadError(f"{name}: {kind} ({reason})") from None
    if min(img.size) < min_side:
        raise ImageLoadError(f"{name}: image is {img.size[0]} x {img.size[1]} px; at least {min_side} px per side is needed")
    return img


def load_image(path: str | Path, model=None, transform: Callable | None = None) -> torch.Tensor:
    """One image file -> ``(1, 3, H, W)`` in ``[0, 1]`` with the model's preprocessing."""
    transform = transform or _transform_for(model)
    return transform(open_image(resolve(path))).unsqueeze(0)


# --- many images ----------------------------------------------------------------------------
class ImageRecord(NamedTuple):
    path: Path
    name: str
    label: int | None


class LoadedImages(NamedTuple):
    """``images`` ``(B, 3, H, W)`` in ``[0, 1]``; per image ``names``, ``labels`` (``-1`` when unknown), ``paths``;
    ``skipped``: ``(name, reason)`` for each bad file."""

    images: torch.Tensor
    names: list[str]
    labels: torch.Tensor
    paths: list[Path]
    skipped: list[tuple[str, str]]


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (``n01440764`` is 0)."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


LABEL_COLUMNS = ("class_index", "label", "wnid")  # a CSV with a header: the first of these it has gives the label


def _read_label_file(path: Path) -> dict[str, int]:
    """Labels by image stem. A CSV whose header names a ``file`` column and a label column (:data:`LABEL_COLUMNS`, e.g.
    the kit's ``data/imagenet/manifest.csv``) is read by those columns; a CSV with a ``file`` column and none of them (a
    manifest of unlabelled photos) gives no labels; otherwise ``file label`` per line (comma, tab or space separated).
    A label is a class index or a WordNet id."""
    wnid_index = {w: i for i, w in enumerate(imagenet_wnids())}
    text = path.read_text()
    header = [h.strip().lower() for h in text.split("\n", 1)[0].split(",")]
    pairs = []
    if "file" in header and len(header) > 2:
        column = next((c for c in LABEL_COLUMNS if c in header), None)
        if column is None:
            return {}
        rows = csv.DictReader(text.splitlines()[1:], fieldnames=header)
        pairs = [(k, row["file"], row[column]) for k, row in enumerate(rows, 2)]
    else:
        for line_no, line in enumerate(text.splitlines(), 1):
            parts = line.replace(",", " ").replace("\t", " ").split()
            if len(parts) >= 2 and parts[0].lower() not in ("imageid", "file", "filename", "name"):
                pairs.append((line_no, parts[0], parts[1]))
    labels: dict[str, int] = {}
    for line_no, file, value in pairs:
        key, value = Path(file).stem, value.strip()
        if value.isdigit():
            labels[key] = int(value)
        elif value in wnid_index:
            labels[key] = wnid_index[value]
        else:
            raise ImageLoadError(f"{path.name} line {line_no}: label {value!r} is neither a class index nor a WordNet id")
    return labels


def list_images(source, n: int | None = None, seed: int = 0, labels: str | Path | None = None) -> list[ImageRecord]:
    """Image files of ``source`` (a file, a folder searched recursively, or a list of files), sorted.

    Labels come from ImageNet class sub-folders (``n01440764/...``) or a label file in the folder (for a single file
    or a list, in each file's own folder: ``labels.csv``/``labels.txt``: ``file label`` per line; a ``manifest.csv``
    with a label column, as the kit's ``data/imagenet`` has) or ``labels=``. ``n``: a subset chosen with ``seed``.
    """
    if isinstance(source, (str, Path)):
        root = _resolve_source(source)
        link = _link_problem(root)
        if link is not None:
            raise ImageLoadError(f"{root}: {link}")
        if not root.exists():
            raise ImageLoadError(f"{root}: no such file or folder")
        if root.is_dir():
            # links leading nowhere (loops, broken) are kept: loading them puts them in ``skipped`` with the reason
            files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                           and (p.is_file() or _link_problem(p) is not None))
            if not files:
                raise ImageLoadError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder")
        else:
            root, files = root.parent, [root]
    else:
        files = [_resolve_or_keep(p) for p in source]
        root = None
    given = _read_label_file(resolve(labels)) if labels is not None else None
    folder_maps: dict[Path, dict[str, int]] = {}

    def label_map(folder: Path) -> dict[str, int]:
        """``labels=``, else the label file of ``root`` (a folder) or of each listed file's own folder."""
        if given is not None:
            return given
        if folder not in folder_maps:
            found = next((folder / f for f in LABEL_FILES if (folder / f).is_file()), None)
            folder_maps[folder] = _read_label_file(found) if found is not None else {}
        return folder_maps[folder]

    wnid_index = None
    records = []
    for path in files:
        name = path.relative_to(root).with_suffix("").as_posix() if root is not None else path.stem
        label = label_map(root if root is not None else path.parent).get(path.stem)
        if label is None and path.parent.name.startswith("n") and len(path.parent.name) == 9:
            wnid_index = wnid_index or {w: i for i, w in enumerate(imagenet_wnids())}
            label = wnid_index.get(path.parent.name)
        records.append(ImageRecord(path, name, label))
    if n is not None:
        if n <= 0:
            raise ValueError(f"n must be a positive number of images, got {n}")
        if n < len(records):
            keep = np.sort(np.random.default_rng(seed).choice(len(records), size=n, replace=False))
            records = [records[i] for i in keep]
    return records


def _transform_for(model) -> Callable:
    if model is not None:
        return model.preprocess

    return Preprocessing(256, 224, "bilinear", IMAGENET_MEAN, IMAGENET_STD).transform()


def load_records(records: Sequence[ImageRecord], model=None, transform: Callable | None = None) -> LoadedImages:
    """Decode ``records``; bad files are skipped, logged and listed in ``skipped``."""
    transform = transform or _transform_for(model)
    images, names, labels, paths, skipped = [], [], [], [], []
    for rec in records:
        try:
            images.append(transform(open_image(rec.path)))
        except ImageLoadError as err:
            reason = str(err).split(": ", 1)[-1]
            skipped.append((rec.name, reason))
            log.warning("skipped %s: %s", rec.name, reason)
            continue
        names.append(rec.name)
        labels.append(-1 if rec.label is None else rec.label)
        paths.append(rec.path)
    if not images:
        return LoadedImages(torch.empty(0, 3, 0, 0), [], torch.empty(0, dtype=torch.long), [], skipped)
    return LoadedImages(torch.stack(images), names, torch.tensor(labels, dtype=torch.long), paths, skipped)


def load_images(source=SAMPLES_DIR, model=None, n: int | None = None, seed: int = 0,
                labels: str | Path | None = None, transform: Callable | None = None) -> LoadedImages:
    """Images of ``source`` -> :class:`LoadedImages` with ``images`` ``(B, 3, H, W)`` in ``[0, 1]``.

    ``source``: a file, a folder (recursive; ImageNet-val layouts give labels), or a list of files;
    default: the staged sample photos. One file that cannot be loaded raises :class:`ImageLoadError`;
    in a folder or list bad files are skipped and reported. Raises if nothing could be loaded. ``n``: a seeded
    choice of that many (None: all); ``labels``: a ``labels.csv`` in place of the folder's.
    """
    records = list_images(source, n=n, seed=seed, labels=labels)
    single = isinstance(source, (str, Path)) and len(records) == 1 and not resolve(source).is_dir()
    if single:
        x = load_image(records[0].path, model, transform)
        label = -1 if records[0].label is None else records[0].label
        return LoadedImages(x, [records[0].name], torch.tensor([label]), [records[0].path], [])
    out = load_records(records, model, transform)
    if not out.names:
        raise ImageLoadError(f"none of the {len(records)} image files could be loaded "
                             f"(first: {out.skipped[0][0]}: {out.skipped[0][1]})")
    return out


def sample_images(model=None, names: Sequence[str] | None = None) -> LoadedImages:
    """The staged sample photos (staged now if missing), optionally only ``names``."""
    if not (SAMPLES_DIR / "manifest.csv").is_file():
        stage_samples()
    records = list_images(SAMPLES_DIR)
    if names is not None:
        unknown = set(names) - {r.name for r in records}
        if unknown:
            raise ImageLoadError(f"unknown sample(s) {sorted(unknown)}; staged: {[r.name for r in records]}")
        records = [r for name in names for r in records if r.name == name]
    return load_records(records, model)
