"""flowzoo vision restore / invert / edit / video-edit end to end on a tiny digits run, and their bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from flowzoo.core.cli import run_main
from flowzoo.vision import train as vision_train
from flowzoo.vision import video_edit
from flowzoo.vision.cli_edit import edit_main, invert_main, video_edit_main
from flowzoo.vision.cli_restore import measure_crw_main, read_image, restore_main
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


# ---- restoring an image that is already degraded, labelled panels, progress bars -------------------------------

def _restored_pixels(path, size=12, scale=10, padding=2):
    """The image inside a PNG written by the restore command (one tile, enlarged ``scale`` times), in [0, 255]."""
    pixels = np.asarray(Image.open(path), dtype=np.float32)
    start = scale * padding + scale // 2
    return pixels[start::scale, start::scale][:size, :size]


def _restore(argv, capsys):
    code = run_main(restore_main, [str(a) for a in argv], prog="flowzoo vision restore")
    return code, capsys.readouterr()


def test_restore_takes_a_small_image_as_the_sr4_measurement(run_dir, tmp_path, capsys):
    """--measurement is y itself: the pseudo-inverse of a 3x3 measurement repeats each pixel over its 4x4 block."""
    small = np.array([[0, 255, 64], [128, 32, 200], [255, 0, 96]], dtype=np.uint8)
    Image.fromarray(small).save(tmp_path / "small.png")
    out = tmp_path / "restored.png"
    code, io = _restore(["--checkpoint", run_dir, "--task", "sr4", "--measurement", tmp_path / "small.png", "--out",
                         out, "--method", "pinv", "--panel", "true", "--progress", "false"], capsys)
    assert code == 0 and "no ground truth" in io.out and "dB" not in io.out
    expected = np.kron(small.astype(np.float32), np.ones((4, 4), dtype=np.float32))
    assert np.abs(_restored_pixels(out) - expected).max() <= 1.0
    assert "panel: measurement, flair, dps, projection, pinv ->" in io.out      # no input, no ground truth
    assert Image.open(tmp_path / "restored_panel.png").size[0] == 5 * (120 + 4) + 4


def test_restore_noise_with_a_measurement_sets_the_deblur_truncation_and_adds_nothing(run_dir, digit_png, tmp_path,
                                                                                     capsys):
    """With --measurement, --noise is the level the file carries: the pseudo-inverse then drops more of the blur's
    weak frequencies (a smoother result), and the same noise level gives the same output (nothing random added)."""
    outs = {}
    for name, noise in (("exact", "0"), ("noisy", "0.1"), ("again", "0.1")):
        outs[name] = tmp_path / f"{name}.png"
        code, _ = _restore(["--checkpoint", run_dir, "--task", "deblur", "--measurement", digit_png, "--out",
                            outs[name], "--method", "pinv", "--noise", noise, "--seed", str(len(name))], capsys)
        assert code == 0
    exact, noisy, again = (_restored_pixels(outs[k]) for k in ("exact", "noisy", "again"))
    assert np.array_equal(noisy, again)
    assert np.abs(np.diff(noisy, axis=1)).mean() < np.abs(np.diff(exact, axis=1)).mean()


def test_restore_inpaints_the_pixels_of_the_mask_whatever_the_file_holds_there(run_dir, tmp_path, capsys):
    mask = np.full((12, 12), 255, dtype=np.uint8)
    mask[4:8] = 0                                                    # rows 4..7 missing
    Image.fromarray(mask).save(tmp_path / "mask.png")
    photo = np.full((12, 12), 200, dtype=np.uint8)
    photo[4:8] = 255                                                 # garbage where pixels are missing
    Image.fromarray(photo).save(tmp_path / "photo.png")
    out = tmp_path / "restored.png"
    code, _ = _restore(["--checkpoint", run_dir, "--task", "inpaint", "--measurement", tmp_path / "photo.png",
                        "--mask", tmp_path / "mask.png", "--out", out, "--method", "pinv"], capsys)
    restored = _restored_pixels(out)
    assert code == 0
    assert np.abs(restored[4:8] - 127.5).max() <= 1.0                # A^+ y: missing pixels are 0 in [-1, 1]
    assert np.abs(np.delete(restored, range(4, 8), axis=0) - 200).max() <= 1.0


def test_restore_prints_the_psnr_against_the_input_and_labels_the_panel(run_dir, digit_png, tmp_path, capsys):
    from flowzoo.vision.metrics import psnr
    from flowzoo.vision.operators import build_operator

    out = tmp_path / "restored.png"
    code, io = _restore(["--checkpoint", run_dir, "--task", "sr4", "--input", digit_png, "--out", out, "--method",
                         "pinv", "--noise", "0", "--steps", "2", "--panel", "true"], capsys)
    assert code == 0
    clean = read_image(digit_png, (1, 12, 12))
    op = build_operator("sr4", 12)
    by_hand = float(psnr(op.pinv(op(clean)).clamp(-1, 1), clean)[0])
    assert f"PSNR {by_hand:.2f} dB" in io.out
    line = next(line for line in io.out.splitlines() if line.startswith("panel:"))
    assert line.startswith("panel: input, measurement, flair ") and line.count(" dB") == 4
    assert f"pinv {by_hand:.1f} dB, ground truth ->" in line
    panel = np.asarray(Image.open(tmp_path / "restored_panel.png").convert("L"))
    assert panel.shape[1] == 7 * (120 + 4) + 4
    header = panel[:30]
    for tile in range(7):                                            # every tile carries a label above it
        left = 4 + tile * 124
        assert (header[:, left:left + 120] < 128).any()
    assert "NFE" in io.err and "NFE" not in io.out                  # the bar over dps/flair/projection, on stderr


def test_progress_bars_count_every_model_evaluation_and_can_be_turned_off(run_dir, digit_png, tmp_path, capsys):
    argv = ["--checkpoint", run_dir, "--input", digit_png, "--steps", "3", "--iterations", "3", "--source_class", "1"]
    first = [str(a) for a in [*argv, "--out", tmp_path / "a.png"]]
    assert run_main(invert_main, first, prog="flowzoo vision invert") == 0
    io = capsys.readouterr()
    assert "flowopt" in io.err and "51/51" in io.err and "flowopt" not in io.out   # 3 x (10 + 2 + 3 + 2) NFE
    argv += ["--out", tmp_path / "b.png", "--progress", "false"]
    assert run_main(invert_main, [str(a) for a in argv], prog="flowzoo vision invert") == 0
    assert "flowopt" not in capsys.readouterr().err
    code, io = _restore(["--checkpoint", run_dir, "--input", digit_png, "--out", tmp_path / "r.png", "--steps", "2",
                         "--method", "dps"], capsys)
    assert code == 0 and "2/2" in io.err


@pytest.mark.parametrize("argv, message", [
    (["--task", "sr4", "--measurement", "{digit}"], "received {digit} of 12x12 pixels"),
    (["--task", "deblur", "--measurement", "{small}"], "--measurement of 12x12 pixels"),
    (["--task", "sr2", "--measurement", "{small}"], "--measurement of 6x6 pixels"),      # 3x3 given
    (["--input", "{digit}", "--measurement", "{digit}"], "exactly one of --input"),
    ([], "exactly one of --input"),
    (["--measurement", "{digit}", "--noise", "-0.1"], "--noise"),
    (["--task", "sr4", "--input", "{digit}", "--mask", "{digit}"], "--mask only with"),
    (["--task", "inpaint", "--input", "{digit}", "--mask", "{small}"], "--mask of 12x12 pixels"),
    (["--measurement", "missing.png"], "not a file"),
])
def test_restore_measurement_bad_input_is_one_error_line(run_dir, digit_png, tmp_path, capsys, argv, message):
    Image.fromarray(np.zeros((3, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    names = {"digit": str(digit_png), "small": str(tmp_path / "small.png")}
    args = ["--checkpoint", str(run_dir), "--out", str(tmp_path / "x.png"), *[a.format(**names) for a in argv]]
    code, io = _restore(args, capsys)
    err = io.err.strip().splitlines()
    assert code == 2 and err[0].startswith("error:") and message.format(**names) in err[0] and len(err) <= 2
    assert not (tmp_path / "x.png").exists()
