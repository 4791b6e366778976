"""Staging the sample photos, loading folders, ImageNet-val labels, and every kind of bad file."""
from __future__ import annotations

import csv
import logging

import numpy as np
import pytest
import torch
from PIL import Image

import ama
from ama.inputs.images import SAMPLES, ImageLoadError, list_images, load_images, open_image, sha256


def _photo(size=(64, 48), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def folder(tmp_path):
    """Three good images (one in a sub-folder) and four bad files."""
    _photo(seed=1).save(tmp_path / "a.png")
    _photo(seed=2).save(tmp_path / "b.jpg")
    (tmp_path / "sub").mkdir()
    _photo(seed=3).save(tmp_path / "sub" / "c.png")
    (tmp_path / "notes.jpg").write_text("this is not an image")
    data = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    _photo((20, 20)).save(tmp_path / "tiny.png")
    (tmp_path / "readme.txt").write_text("ignored: not an image suffix")
    return tmp_path


def test_stage_samples(tmp_path):
    manifest = ama.stage_samples(tmp_path / "samples")
    rows = list(csv.DictReader(open(manifest)))
    assert [r["name"] for r in rows] == [s.name for s in SAMPLES]
    assert {r["source_package"] for r in rows} == {"scikit-image", "matplotlib", "scikit-learn"}
    for r in rows:
        assert sha256(manifest.parent / r["file"]) == r["sha256"] and r["source_version"]
    camera = next(r for r in rows if r["name"] == "camera")
    assert camera["mode"] == "L"
    mtimes = [(manifest.parent / r["file"]).stat().st_mtime_ns for r in rows]
    ama.stage_samples(tmp_path / "samples")  # idempotent: nothing copied again
    assert mtimes == [(manifest.parent / r["file"]).stat().st_mtime_ns for r in rows]


def test_folder_load_skips_and_reports_bad_files(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="ama"):
        out = load_images(folder)
    assert out.names == ["a", "b", "sub/c"]
    assert out.images.shape == (3, 3, 224, 224) and out.images.dtype == torch.float32
    assert 0 <= out.images.min() and out.images.max() <= 1
    reasons = dict(out.skipped)
    assert set(reasons) == {"notes", "truncated", "tiny"}
    assert "not an image file" in reasons["notes"]
    assert "truncated" in reasons["truncated"] or "corrupt" in reasons["truncated"]
    assert "20 x 20 px" in reasons["tiny"]
    assert "skipped tiny" in caplog.text
    assert (out.labels == -1).all()


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("hello"), "not an image file"),
    (lambda p: p.write_bytes((lambda b: b[: len(b) // 3])(_png_bytes())), "truncated|corrupt|cannot decode"),
    (lambda p: _photo((31, 200)).save(p, format="PNG"), "31 x 200 px; at least 32 px"),
])
def test_single_bad_file_raises_one_line(tmp_path, make, message):
    path = tmp_path / "x.png"
    make(path)
    with pytest.raises(ImageLoadError, match=message) as err:
        load_images(path)
    assert "\n" not in str(err.value) and "x.png" in str(err.value)


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    _photo((128, 128)).save(buf, format="PNG")
    return buf.getvalue()


def test_missing_path():
    with pytest.raises(ImageLoadError, match="no such file or folder"):
        load_images("/no/such/photo.jpg")
    with pytest.raises(ImageLoadError, match="no such file"):
        open_image("/no/such/photo.jpg")


def test_decompression_bomb(tmp_path, monkeypatch):
    _photo((64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # 4096 pixels: over 2x the limit -> PIL's error
    with pytest.raises(ImageLoadError, match="decompression-bomb limit"):
        open_image(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # between 1x and 2x: PIL only warns; we refuse too
    with pytest.raises(ImageLoadError, match="decompression-bomb limit"):
        open_image(tmp_path / "big.png")


def test_conversions(tmp_path):
    """Grey, palette, RGBA (on white), CMYK and 16-bit images all load as 8-bit RGB with the right values."""
    grey = Image.fromarray(np.full((40, 40), 100, np.uint8), mode="L")
    grey.save(tmp_path / "grey.png")
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:20, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    _photo((40, 40)).convert("P").save(tmp_path / "palette.png")
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    sixteen = np.full((40, 40), 65535, np.uint16)
    sixteen[:, 20:] = 32896  # 128 * 257
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")

    g = np.asarray(open_image(tmp_path / "grey.png"))
    assert g.shape == (40, 40, 3) and (g == 100).all()
    r = np.asarray(open_image(tmp_path / "rgba.png"))
    assert (r[:20] == [255, 0, 0]).all() and (r[20:] == [255, 255, 255]).all()
    assert open_image(tmp_path / "palette.png").mode == "RGB"
    c = np.asarray(open_image(tmp_path / "cmyk.jpg")).astype(int)
    assert abs(c[..., 0].mean() - 255) < 3 and c[..., 1].mean() < 3  # red
    s = np.asarray(open_image(tmp_path / "sixteen.png"))
    assert (s[:, :20] == 255).all() and (s[:, 20:] == 128).all()
    out = load_images(tmp_path, transform=lambda im: torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255)
    assert out.names == ["cmyk", "grey", "palette", "rgba", "sixteen"] and not out.skipped


def test_imagenet_class_folders_give_labels(tmp_path):
    for wnid, stem in (("n01440764", "v1"), ("n01443537", "v2")):
        (tmp_path / wnid).mkdir()
        _photo().save(tmp_path / wnid / f"{stem}.JPEG")
    out = load_images(tmp_path)
    assert out.names == ["n01440764/v1", "n01443537/v2"] and out.labels.tolist() == [0, 1]


def test_flat_folder_with_label_file(tmp_path):
    for stem in ("ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"):
        _photo().save(tmp_path / f"{stem}.JPEG")
    (tmp_path / "labels.csv").write_text("file,label\nILSVRC2012_val_00000001.JPEG,65\nILSVRC2012_val_00000002,n01443537\n")
    assert load_images(tmp_path).labels.tolist() == [65, 1]
    (tmp_path / "labels.csv").write_text("ILSVRC2012_val_00000001 cat\n")
    with pytest.raises(ImageLoadError, match="neither a class index nor a WordNet id"):
        load_images(tmp_path)


def test_single_files_and_lists_take_the_label_of_their_folder(tmp_path):
    """A file of data/imagenet, alone or in a list with a file of another labelled folder, keeps its manifest label."""
    from ama.paths import DATA_DIR

    other = tmp_path / "other"
    other.mkdir()
    _photo().save(other / "a.png")
    (other / "labels.csv").write_text("file,label\na.png,7\n")
    tench, brambling = DATA_DIR / "imagenet" / "n01440764_tench.jpg", DATA_DIR / "imagenet" / "n01530575_brambling.jpg"
    assert [r.label for r in list_images(tench)] == [0]
    assert [r.label for r in list_images([tench, brambling, other / "a.png"])] == [0, 10, 7]
    assert [r.label for r in list_images([other / "a.png"], labels=other / "labels.csv")] == [7]


def test_subset_is_reproducible(tmp_path):
    for i in range(10):
        _photo(seed=i).save(tmp_path / f"{i:02d}.png")
    a = [r.name for r in list_images(tmp_path, n=4, seed=0)]
    assert a == [r.name for r in list_images(tmp_path, n=4, seed=0)] and len(a) == 4 and a == sorted(a)
    assert a != [r.name for r in list_images(tmp_path, n=4, seed=1)]
    with pytest.raises(ValueError, match="positive number"):
        list_images(tmp_path, n=0)


def test_nothing_loadable(tmp_path):
    (tmp_path / "x.jpg").write_text("no")
    (tmp_path / "y.png").write_text("no")
    with pytest.raises(ImageLoadError, match="none of the 2 image files could be loaded"):
        load_images(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageLoadError, match="no image files"):
        load_images(empty)


def test_model_preprocessing(tiny_model, folder):
    """A model's preprocessing is its resize, centre crop and [0, 1] tensor, as torchvision does them."""
    import torchvision.transforms as T
    from PIL import Image

    out = load_images(folder / "a.png", tiny_model)
    with Image.open(folder / "a.png") as im:
        expected = T.Compose([T.Resize(32), T.CenterCrop(32), T.ToTensor()])(im.convert("RGB"))
    assert out.images.shape == (1, 3, 32, 32) and torch.equal(out.images[0], expected)
