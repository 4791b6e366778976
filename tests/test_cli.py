"""The command line on the tiny model (given as the factory conftest:make_tiny_model)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import ama.attack
import ama.cli as cli

TINY = "conftest:make_tiny_model"
TESTS = Path(__file__).parent


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(5):
        arr = (np.random.default_rng(i).random((40, 48, 3)) * 255).astype("uint8")
        Image.fromarray(arr).save(d / f"im{i}.png")
    (d / "broken.jpg").write_text("not an image")
    return d


def test_single_image_subprocess(folder, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run([sys.executable, "-m", "ama", "attack", "--model_name", TINY, "--image",
                           str(folder / "im0.png"), "--e", "2", "--n_iter", "4", "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "im0.png e=2" in proc.stdout
    info = json.loads((out / "im0_ama_2.json").read_text())
    assert info["params"]["e"] == 2 and info["params"]["n_iter"] == 4 and info["params"]["lamb"] == 100.0
    assert [m["quantized"] for m in info["metrics"]] == [False, True]
    assert (out / "im0_ama_2.png").stat().st_size > 10_000
    adv = np.array(Image.open(out / "im0_ama_2_adv.png"))
    clean = (cli.load_cli_model(TINY, "cpu").preprocess(Image.open(folder / "im0.png").convert("RGB")) * 255).round()
    clean = clean.byte().permute(1, 2, 0).numpy()
    inner = (slice(2, -2), slice(2, -2))
    assert np.array_equal(adv[inner], clean[inner]) and not np.array_equal(adv, clean)
    assert info["metrics"][1]["changed_pixels"] == int((adv != clean).any(-1).sum())


def test_single_image_defaults_and_target(folder, tmp_path, capsys):
    args = cli.build_parser().parse_args(["attack", "--image", "x.png"])
    assert (args.model_name, args.e, args.n_iter, args.lamb, args.device, args.mode, args.seed) == \
        ("lite0", [1], 100, 100.0, "auto", "flip", 0)
    rc = cli.main(["attack", "--model_name", TINY, "--image", str(folder / "im1.png"), "--e", "1", "3", "--n_iter", "3",
                   "--target", "text:X", "--mode", "keep", "--out", str(tmp_path)])
    assert rc == 0
    info = json.loads((tmp_path / "im1_ama_3.json").read_text())
    assert info["params"]["mode"] == "keep" and info["params"]["target"] == "text:X"
    assert not np.isnan(info["metrics"][0]["target_cosine"])
    assert (tmp_path / "im1_ama_1.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--e", "0"], "--e must be positive integers, got 0"),
    (["--n_iter", "0"], "--n_iter must be positive, got 0"),
    (["--lamb", "-1"], "--lamb must be non-negative, got -1"),
    (["--e", "20"], "e must be a positive integer below half the smaller image side"),
    (["--target", "star"], "unknown target 'star'"),
    (["--model_name", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    (["--model_name", "nosuchmodule:f"], "cannot load model factory 'nosuchmodule:f'"),
])
def test_cli_errors_are_one_line(folder, tmp_path, capsys, argv, message):
    rc = cli.main(["attack", "--model_name", TINY, "--image", str(folder / "im0.png"), "--n_iter", "1",
                   "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and message in err and "\n" not in err


def test_bad_single_file(folder, tmp_path, capsys):
    assert cli.main(["attack", "--model_name", TINY, "--image", str(folder / "broken.jpg"), "--out", str(tmp_path)]) == 2
    assert "broken.jpg: not an image file" in capsys.readouterr().err


def _folder_args(folder, out, *extra):
    return ["attack", "--model_name", TINY, "--images", str(folder), "--e", "1", "2", "--n_iter", "3",
            "--batch-size", "2", "--out", str(out), *extra]


def test_folder_mode_resume_after_kill(folder, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    calls = {"n": 0}
    real = cli.append_rows

    def dying_append(csv, df):  # the run is killed while the third batch is being written
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(csv, df)

    monkeypatch.setattr(cli, "append_rows", dying_append)
    with pytest.raises(KeyboardInterrupt):
        cli.main(_folder_args(folder, out))
    partial = pd.read_csv(out / "attack_metrics.csv")
    # sorted files: [broken, im0] [im1, im2] [im3, im4]: two batches hold three good images, two quantisations each
    assert len(partial) == 3 * 2 and sorted(partial.image) == ['im0', 'im0', 'im1', 'im1', 'im2', 'im2']
    monkeypatch.setattr(cli, "append_rows", real)
    attacked = []
    real_attack = ama.attack.marginal_attack

    def counting(model, x, **kw):
        attacked.extend(kw["names"])
        return real_attack(model, x, **kw)

    monkeypatch.setattr(ama.attack, "marginal_attack", counting)
    assert cli.main(_folder_args(folder, out)) == 0
    assert "1 bad file(s) skipped: broken" in capsys.readouterr().out
    df = pd.read_csv(out / "attack_metrics.csv")
    assert len(attacked) == 5 * 2 - 3  # only what was not done
    keys = df[["image", "e", "quantized"]].astype(str).agg("/".join, axis=1)
    assert keys.is_unique and len(df) == 5 * 2 * 2
    assert sorted(df.image.unique()) == [f"im{i}" for i in range(5)]
    # a third run has nothing left to do and changes nothing
    before = (out / "attack_metrics.csv").read_bytes()
    attacked.clear()
    assert cli.main(_folder_args(folder, out)) == 0
    assert attacked == [] and (out / "attack_metrics.csv").read_bytes() == before
    # another setting is new work, appended to the same table
    assert cli.main(_folder_args(folder, out, "--seed", "1")) == 0
    assert len(pd.read_csv(out / "attack_metrics.csv")) == 2 * len(df)


def test_folder_rows_match_single_runs(folder, tmp_path):
    """Batching does not change an image's result: the folder's row equals a batch-of-one attack."""
    out = tmp_path / "out"
    assert cli.main(_folder_args(folder, out)) == 0
    df = pd.read_csv(out / "attack_metrics.csv")
    model = cli.load_cli_model(TINY, "cpu")
    x = ama_load(folder / "im3.png", model)
    r = ama.attack.marginal_attack(model, x, e=2, n_iter=3)
    row = df[(df.image == "im3") & (df.e == 2) & (~df.quantized)].iloc[0]
    assert row.cam_cosine == pytest.approx(float(r.metrics.cam_cosine[0]), abs=1e-5)


def ama_load(path, model):
    from ama.data import load_image

    return load_image(path, model)


def test_cam_command(folder, tmp_path):
    assert cli.main(["cam", "--model_name", TINY, "--image", str(folder / "im2.png"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "im2_cam.png").stat().st_size > 5_000
