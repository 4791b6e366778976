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
from PIL import Image

import ama.attack.marginal
import ama.apps.cli as cli

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
    info = json.loads((out / "im0_ama_2_it4.json").read_text())
    assert info["params"]["e"] == 2 and info["params"]["n_iter"] == 4 and info["params"]["lamb"] == 100.0
    assert [m["quantized"] for m in info["metrics"]] == [False, True]
    assert (out / "im0_ama_2_it4.png").stat().st_size > 10_000
    adv = np.array(Image.open(out / "im0_ama_2_it4_adv.png"))
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
    info = json.loads((tmp_path / "im1_ama_3_it3_keep_target-text-X.json").read_text())
    assert info["params"]["mode"] == "keep" and info["params"]["target"] == "text:X"
    assert not np.isnan(info["metrics"][0]["target_cosine"])
    assert (tmp_path / "im1_ama_1_it3_keep_target-text-X.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--e", "0"], "e (the frame width in pixels) must be a positive integer, got 0"),
    (["--n_iter", "0"], "n_iter must be a positive integer, got 0"),
    (["--lamb", "-1"], "lamb must be a non-negative finite number, got -1"),
    (["--e", "20"], "e (the frame width in pixels) must be a positive integer below half the smaller image side"),
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
    real = ama.store.parts.RankPart.append

    def dying_append(part, df):  # the run is killed while the third batch is being written
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        real(part, df)

    monkeypatch.setattr(ama.store.parts.RankPart, "append", dying_append)
    assert cli.main(_folder_args(folder, out)) == 130  # Ctrl-C: one line, no traceback
    assert capsys.readouterr().err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    partial = pd.read_csv(out / "parts" / "attack_metrics.rank0.csv")
    # sorted files: [broken, im0] [im1, im2] [im3, im4]: two batches hold three good images, two quantisations each
    assert len(partial) == 3 * 2 and sorted(partial.file) == ['im0.png', 'im0.png', 'im1.png', 'im1.png',
                                                              'im2.png', 'im2.png']
    assert not (out / "attack_metrics.csv").exists()  # the table is written when the run ends (or by `merge`)
    monkeypatch.setattr(ama.store.parts.RankPart, "append", real)
    attacked = []
    real_attack = ama.attack.marginal.marginal_attack

    def counting(model, x, **kw):
        attacked.extend(kw["names"])
        return real_attack(model, x, **kw)

    monkeypatch.setattr(ama.attack.marginal, "marginal_attack", counting)
    assert cli.main(_folder_args(folder, out)) == 0
    assert "1 bad file(s) skipped: broken.jpg: not an image file" in capsys.readouterr().out
    df = pd.read_csv(out / "attack_metrics.csv")
    assert len(attacked) == 5 * 2 - 3  # only what was not done
    keys = df[["file", "e", "quantized"]].astype(str).agg("/".join, axis=1)
    assert keys.is_unique and len(df) == 5 * 2 * 2
    assert sorted(df.image.unique()) == [f"im{i}" for i in range(5)]
    # a third run has nothing left to do and changes nothing
    before = (out / "attack_metrics.csv").read_bytes()
    attacked.clear()
    assert cli.main(_folder_args(folder, out)) == 0
    assert attacked == [] and (out / "attack_metrics.csv").read_bytes() == before
    # another setting is new work, added to the same table
    assert cli.main(_folder_args(folder, out, "--seed", "1")) == 0
    assert len(pd.read_csv(out / "attack_metrics.csv")) == 2 * len(df)


def test_folder_rows_match_single_runs(folder, tmp_path):
    """Batching does not change an image's result: the folder's row equals a batch-of-one attack."""
    out = tmp_path / "out"
    assert cli.main(_folder_args(folder, out)) == 0
    df = pd.read_csv(out / "attack_metrics.csv")
    model = cli.load_cli_model(TINY, "cpu")
    x = ama_load(folder / "im3.png", model)
    r = ama.attack.marginal.marginal_attack(model, x, e=2, n_iter=3)
    row = df[(df.image == "im3") & (df.e == 2) & (~df.quantized)].iloc[0]
    assert row.cam_cosine == pytest.approx(float(r.metrics.cam_cosine[0]), abs=1e-5)


def ama_load(path, model):
    from ama.inputs.images import load_image

    return load_image(path, model)


def test_cam_command(folder, tmp_path, capsys):
    import torch

    from conftest import make_tiny_model

    assert cli.main(["cam", "--model_name", TINY, "--image", str(folder / "im2.png"), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "im2_cam.png").stat().st_size > 5_000
    model = make_tiny_model()  # the factory's model: the printed class is its prediction for the image
    with torch.no_grad():
        prob = torch.softmax(model(ama_load(folder / "im2.png", model)), 1)[0]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"im2.png: class{int(prob.argmax())} ({100 * prob.max().item():.1f}%); wrote ")


def test_default_out_is_under_results_not_the_current_folder(folder, tmp_path, monkeypatch, capsys):
    """Without --out a run writes under the kit's results/cli/<command>/ (git-ignored), whatever the current folder."""
    from ama.paths import CLI_RESULTS_DIR, RESULTS_DIR

    assert CLI_RESULTS_DIR.parent == RESULTS_DIR
    for command in ("attack", "cam"):
        assert cli.build_parser().parse_args([command, "--image", "x.png"]).out == str(CLI_RESULTS_DIR / command)
    monkeypatch.setattr(cli, "CLI_RESULTS_DIR", tmp_path / "results" / "cli")
    monkeypatch.chdir(folder)
    assert cli.main(["cam", "--model_name", TINY, "--image", str(folder / "im2.png")]) == 0
    assert (tmp_path / "results" / "cli" / "cam" / "im2_cam.png").is_file()
    assert not list(folder.glob("*_cam.png"))


# --- issue 13: every bad input a one-line error, exit status 2, before any work ----------------
def _never_load(*a, **k):
    raise AssertionError("the model was loaded before the arguments were checked")


def _one_line_error(capsys, rc, message):
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar's lines, if any
    assert rc == 2 and err.startswith("error: ") and message in err, err
    return err


@pytest.mark.parametrize("device", ["tpu", "gpu", "mps", "meta", "cuda:x"])
def test_bad_device_refused_before_loading(folder, tmp_path, capsys, monkeypatch, device):
    monkeypatch.setattr(cli, "load_cli_model", _never_load)
    rc = cli.main(["attack", "--image", str(folder / "im0.png"), "--device", device, "--out", str(tmp_path)])
    _one_line_error(capsys, rc, f"--device: device '{device}' is not usable here")


@pytest.mark.parametrize("argv, message", [
    (["--lamb", "nan"], "lamb must be a non-negative finite number, got nan"),
    (["--lamb", "inf"], "lamb must be a non-negative finite number, got inf"),
    (["--e", "-3"], "e (the frame width in pixels) must be a positive integer, got -3"),
    (["--frame-width", "0"], "e (the frame width in pixels) must be a positive integer, got 0"),
])
def test_parameters_refused_before_loading(folder, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.setattr(cli, "load_cli_model", _never_load)
    rc = cli.main(["attack", "--image", str(folder / "im0.png"), "--out", str(tmp_path), *argv])
    _one_line_error(capsys, rc, message)


def test_e_against_input_size_refused_before_image_work(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_open_one", _never_load)  # the tiny model's input is 32 px: e=16 is too wide
    rc = cli.main(["attack", "--model_name", TINY, "--image", str(folder / "im0.png"), "--e", "16", "--out",
                   str(tmp_path)])
    _one_line_error(capsys, rc, "--e 16: e (the frame width in pixels) must be a positive integer below half the smaller image side (32 px)")


def test_checkpoint_option(folder, tmp_path, capsys):
    args = cli.build_parser().parse_args(["attack", "--image", "x.png", "--checkpoint", "w.pt"])
    assert args.checkpoint == "w.pt"
    rc = cli.main(["attack", "--model_name", "lite0", "--image", str(folder / "im0.png"), "--out", str(tmp_path),
                   "--device", "cpu", "--checkpoint", str(tmp_path / "missing.pt")])
    _one_line_error(capsys, rc, f"checkpoint file not found: {tmp_path / 'missing.pt'}")
    rc = cli.main(["attack", "--model_name", TINY, "--image", str(folder / "im0.png"), "--out", str(tmp_path),
                   "--checkpoint", "w.pt"])
    _one_line_error(capsys, rc, "--checkpoint works with kit model names, not with a factory")


def test_out_is_a_file(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_cli_model", _never_load)
    (tmp_path / "taken").write_text("x")
    rc = cli.main(["attack", "--image", str(folder / "im0.png"), "--out", str(tmp_path / "taken")])
    _one_line_error(capsys, rc, f"--out {tmp_path / 'taken'}: is a file, not a folder")
    assert (tmp_path / "taken").read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_read_only(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "load_cli_model", _never_load)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        rc = cli.main(["attack", "--images", str(folder), "--out", str(ro / "run")])
    finally:
        ro.chmod(0o700)
    _one_line_error(capsys, rc, f"--out {ro / 'run'}: cannot write here (permission denied)")


@pytest.mark.parametrize("code, reason", [("ENOSPC", "no space left on device"), ("EACCES", "permission denied")])
def test_out_disk_full_or_not_writable(folder, tmp_path, capsys, monkeypatch, code, reason):
    import errno

    import ama.store.parts

    def full(path, *a, **k):  # what the OS says on a full disk, or in a read-only folder (root is never told)
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(path))

    monkeypatch.setattr(cli, "load_cli_model", _never_load)
    monkeypatch.setattr(ama.store.parts, "open", full, raising=False)
    rc = cli.main(["attack", "--image", str(folder / "im0.png"), "--out", str(tmp_path / "o")])
    _one_line_error(capsys, rc, f"--out {tmp_path / 'o'}: cannot write here ({reason})")


def test_folder_of_bad_files_fails(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jpg").write_text("text")
    (d / "b.png").write_bytes(b"")
    rc = cli.main(["attack", "--model_name", TINY, "--images", str(d), "--n_iter", "1", "--out", str(tmp_path / "o")])
    err = _one_line_error(capsys, rc, "no image of")
    assert "2 bad file(s) skipped: a.jpg: " in err and "; b.png: " in err


def test_symlink_loop_alone(tmp_path, capsys):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    rc = cli.main(["attack", "--model_name", TINY, "--image", str(tmp_path / "loop.png"), "--out", str(tmp_path)])
    _one_line_error(capsys, rc, "loop.png")


def test_non_default_settings_get_their_own_names(folder, tmp_path):
    base = ["attack", "--model_name", TINY, "--image", str(folder / "im0.png"), "--e", "1", "--out", str(tmp_path)]
    assert cli.main([*base, "--n_iter", "2"]) == 0
    assert cli.main([*base, "--n_iter", "3", "--lamb", "10", "--mode", "keep"]) == 0
    one = json.loads((tmp_path / "im0_ama_1_it2.json").read_text())
    two = json.loads((tmp_path / "im0_ama_1_it3_lamb10_keep.json").read_text())
    assert one["params"]["n_iter"] == 2 and two["params"]["n_iter"] == 3 and two["params"]["mode"] == "keep"
    assert (tmp_path / "im0_ama_1_it3_lamb10_keep_adv.png").is_file()
    args = cli.build_parser().parse_args(["attack", "--image", "x.png", "--e", "3"])
    assert cli.output_stem("x", 3, args) == "x_ama_3"  # the reference script's name for its defaults


def test_two_files_with_one_stem_are_both_attacked(folder, tmp_path):
    arr = (np.random.default_rng(7).random((40, 48, 3)) * 255).astype("uint8")
    Image.fromarray(arr).save(folder / "im0.jpg")
    out = tmp_path / "out"
    assert cli.main(_folder_args(folder, out, "--e", "1")) == 0
    df = pd.read_csv(out / "attack_metrics.csv")
    assert sorted(df.file.unique()) == ["im0.jpg", "im0.png", "im1.png", "im2.png", "im3.png", "im4.png"]
    assert len(df) == 6 * 2


def test_optimizer_and_restarts_reach_the_attack(folder, tmp_path):
    """--optimizer / --restarts: the single-image result and the folder run's rows are the library's apgd attack."""
    rc = cli.main(["attack", "--model_name", TINY, "--image", str(folder / "im1.png"), "--e", "2", "--n_iter", "4",
                   "--optimizer", "apgd", "--restarts", "1", "--out", str(tmp_path)])
    assert rc == 0
    info = json.loads((tmp_path / "im1_ama_2_it4_apgd_restarts1.json").read_text())
    model = cli.load_cli_model(TINY, "cpu")
    r = ama.attack.marginal.marginal_attack(model, ama_load(folder / "im1.png", model), e=2, n_iter=4, optimizer="apgd",
                                   restarts=1)
    assert info["metrics"][0]["cam_cosine"] == pytest.approx(float(r.metrics.cam_cosine[0]), abs=1e-5)
    out = tmp_path / "folder"
    assert cli.main([*_folder_args(folder, out), "--optimizer", "adam"]) == 0
    df = pd.read_csv(out / "attack_metrics.csv")
    assert set(df.optimizer) == {"adam"} and set(df.restarts) == {0}
    with pytest.raises(SystemExit) as exit_:  # argparse: usage and "invalid choice" on stderr
        cli.main(["attack", "--image", str(folder / "im1.png"), "--optimizer", "lbfgs"])
    assert exit_.value.code == 2
