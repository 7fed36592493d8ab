"""flowzoo vision restore / invert / edit / video-edit end to end on a tiny digits run, and their bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from flowzoo.core.cli import run_main
from flowzoo.vision import train as vision_train
from flowzoo.vision import video_edit
from flowzoo.vision.cli_restore import (edit_main, invert_main, measure_crw_main, read_image, restore_main,
                                        video_edit_main)
from flowzoo.vision.restoration import load_error_table
from flowzoo.vision.video import moving_digits, read_video, write_video

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = ["--trainer.progress", "false", "--trainer.tensorboard", "false"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "digits"
    argv = ["icfm", "--data", "digits", "--size", "12", "--width", "8", "--class_cond", "true", "--trainer.steps",
            "10", "--trainer.batch_size", "16", "--trainer.out_dir", str(out), *QUIET]
    assert run_main(vision_train.main, argv, prog="python -m flowzoo.vision.train") == 0
    return out


@pytest.fixture
def digit_png(tmp_path):
    pixels = np.zeros((12, 12), dtype=np.uint8)
    pixels[3:9, 5:7] = 255
    path = tmp_path / "one.png"
    Image.fromarray(pixels).save(path)
    return path


def test_read_image_converts_and_resizes(digit_png):
    image = read_image(digit_png, (3, 6, 6))
    assert image.shape == (1, 3, 6, 6) and -1 <= float(image.min()) and float(image.max()) <= 1


def test_restore_writes_the_image_and_the_panel(run_dir, digit_png, tmp_path, capsys):
    out = tmp_path / "restored.png"
    argv = ["--checkpoint", str(run_dir), "--task", "inpaint", "--input", str(digit_png), "--out", str(out),
            "--steps", "4", "--panel", "true"]
    assert run_main(restore_main, argv, prog="flowzoo vision restore") == 0
    assert out.exists() and (tmp_path / "restored_panel.png").exists()
    assert run_main(restore_main, argv, prog="flowzoo vision restore") == 2          # no silent overwrite
    assert "exists" in capsys.readouterr().err


def test_measure_crw_writes_a_table_that_restore_reuses(run_dir, digit_png, tmp_path, capsys):
    table = tmp_path / "crw.json"
    argv = ["--checkpoint", str(run_dir), "--out", str(table), "--images", "16", "--times", "5", "--repeats", "1"]
    assert run_main(measure_crw_main, argv, prog="flowzoo vision measure-crw") == 0
    times, mse = load_error_table(table)
    assert times.shape == (5,) and bool((times > 0).all() and (times < 1).all())
    assert bool(torch.isfinite(mse).all() and (mse > 0).all())
    assert run_main(measure_crw_main, argv, prog="flowzoo vision measure-crw") == 2      # no silent overwrite
    assert "exists" in capsys.readouterr().err
    out = tmp_path / "restored.png"
    argv = ["--checkpoint", str(run_dir), "--task", "sr4", "--input", str(digit_png), "--out", str(out),
            "--steps", "3", "--crw", str(table)]
    assert run_main(restore_main, argv, prog="flowzoo vision restore") == 0 and out.exists()


def test_invert_and_edit(run_dir, digit_png, tmp_path):
    out = tmp_path / "inv.png"
    argv = ["--checkpoint", str(run_dir), "--input", str(digit_png), "--out", str(out), "--steps", "3",
            "--iterations", "3", "--source_class", "1"]
    assert run_main(invert_main, argv, prog="flowzoo vision invert") == 0
    errors = np.load(out.with_suffix(".npz"))["errors"]
    assert errors.shape == (4,) and errors[-1] <= errors[0] + 1e-6
    edited = tmp_path / "edit.png"
    argv = ["--checkpoint", str(run_dir), "--input", str(digit_png), "--out", str(edited), "--steps", "3",
            "--iterations", "2", "--source_class", "1", "--class", "7"]
    assert run_main(edit_main, argv, prog="flowzoo vision edit") == 0 and edited.exists()


def test_video_edit_writes_the_edit_and_the_side_by_side(tmp_path):
    clip = write_video(moving_digits(1, frames=4, size=32, digits=1, digit_size=14).frames[0], tmp_path / "c.gif")
    argv = ["--input", str(clip), "--edit", "invert", "--out", str(tmp_path / "e.gif"), "--side_by_side",
            str(tmp_path / "s.gif")]
    assert run_main(video_edit_main, argv, prog="flowzoo vision video-edit") == 0
    assert read_video(tmp_path / "e.gif").shape[0] == 4 and read_video(tmp_path / "s.gif").shape[-1] == 96


@pytest.mark.parametrize("main, argv, message", [
    (restore_main, ["--task", "colourise"], "task"),
    (restore_main, ["--method", "magic"], "--method"),
    (invert_main, ["--input", "missing.png"], "not a file"),
    (edit_main, ["--source_class", "1"], "--class"),
    (video_edit_main, ["--input", "missing.mp4"], "does not exist"),
    (video_edit_main, ["--edit", "blur"], "--edit"),
    (restore_main, ["--crw", "missing_crw.json"], "velocity-error table"),
    (measure_crw_main, ["--times", "1"], "--times"),
    (measure_crw_main, ["--split", "validation"], "split"),
])
def test_bad_input_is_one_error_line(run_dir, digit_png, tmp_path, capsys, main, argv, message):
    base = {"--checkpoint": str(run_dir), "--input": str(digit_png), "--out": str(tmp_path / "x.png")}
    if main is video_edit_main:
        base = {"--input": str(tmp_path / "missing.mp4"), "--out": str(tmp_path / "x.gif")}
    if main is measure_crw_main:
        base = {"--checkpoint": str(run_dir), "--out": str(tmp_path / "x.png")}
    for key, value in zip(argv[::2], argv[1::2]):
        base[key] = value
    args = [token for pair in base.items() for token in pair]
    assert run_main(main, args, prog="flowzoo vision") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error:") and message in err[0] and len(err) <= 2
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "x.gif").exists()


@pytest.fixture(scope="module")
def editor_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("editor") / "run"
    argv = ["--out", str(out), "--size", "16", "--clips", "2", "--frames", "3", "--steps", "2", "--width", "4"]
    assert run_main(video_edit.main, argv, prog="python -m flowzoo.vision.video_edit") == 0
    return out


def test_editor_training_refuses_to_overwrite(editor_dir, capsys):
    argv = ["--out", str(editor_dir), "--size", "16", "--steps", "1"]
    assert run_main(video_edit.main, argv, prog="python -m flowzoo.vision.video_edit") == 2
    assert "exists" in capsys.readouterr().err


def test_video_edit_with_the_conditional_editor(editor_dir, tmp_path, capsys):
    clip = write_video(moving_digits(1, frames=3, size=32, digits=1, digit_size=14).frames[0], tmp_path / "c.gif")
    argv = ["--input", str(clip), "--edit", "invert", "--out", str(tmp_path / "e.gif"), "--side_by_side",
            str(tmp_path / "s.gif"), "--editor", str(editor_dir), "--size", "16", "--steps", "3"]
    assert run_main(video_edit_main, argv, prog="flowzoo vision video-edit") == 0
    assert "generated by the editor" in capsys.readouterr().out
    edited, strip = read_video(tmp_path / "e.gif"), read_video(tmp_path / "s.gif")
    assert edited.shape[0] == 3 and edited.shape[-1] == 16 and strip.shape[-1] == 64   # four panels side by side
    # frame 1 is the edit itself; frames 2..T come from the model, not from the hard warp's copy
    source = read_video(clip).float().mean(1)
    assert float((edited[0].float().mean(0) - (255 - torch.nn.functional.interpolate(
        source[:1, None], size=16, mode="bilinear", antialias=True)[0, 0])).abs().mean()) < 40


@pytest.mark.parametrize("extra, message", [
    ([], "trained on"),                                     # a 32 x 32 clip for an editor trained at 16 x 16
    (["--size", "24"], "trained on"),
    (["--editor", "no/such/editor"], "editor.pt"),
])
def test_video_edit_editor_bad_input(editor_dir, tmp_path, capsys, extra, message):
    clip = write_video(moving_digits(1, frames=3, size=32, digits=1, digit_size=14).frames[0], tmp_path / "c.gif")
    argv = ["--input", str(clip), "--out", str(tmp_path / "e.gif"), "--editor", str(editor_dir), *extra]
    assert run_main(video_edit_main, argv, prog="flowzoo vision video-edit") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error:") and message in err[0] and len(err) <= 2
    assert not (tmp_path / "e.gif").exists()
