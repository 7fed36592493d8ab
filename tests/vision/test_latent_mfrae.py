"""MF-RAE's path in a representation autoencoder's latent: lfm --objective mfrae --teacher RUN, end to end."""

import numpy as np
import pytest
import torch

from flowzoo.core.cli import run_main
from flowzoo.core.errors import ConfigError
from flowzoo.vision import train as vision_train
from flowzoo.vision.cli import commands
from flowzoo.vision.latent import (LatentCodec, build_latent_net, check_latent_teacher, generate_latent,
                                   load_latent_fm)

pytestmark = pytest.mark.usefixtures("one_thread")
QUIET = ["--trainer.progress", "false", "--trainer.tensorboard", "false", "--trainer.batch_size", "32"]
DATA = ["--data", "digits", "--size", "20"]   # 20 px: the feature classifier (the frozen encoder) is a CNN


def _train(*argv):
    return run_main(vision_train.main, [*argv, *QUIET], prog="python -m flowzoo.vision.train")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An RAE run, a latent I-CFM teacher on it and an MF-RAE student of that teacher (one thread, shared cache)."""
    root = tmp_path_factory.mktemp("mfrae")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FLOWZOO_CACHE", str(tmp_path_factory.getbasetemp() / "flowzoo_cache"))
        assert _train("autoencoder", *DATA, "--ae.kind", "representation", "--ae.channels", "8",
                      "--trainer.steps", "60", "--trainer.out_dir", str(root / "ae")) == 0
        assert _train("lfm", *DATA, "--autoencoder", str(root / "ae"), "--width", "16", "--class_cond", "true",
                      "--trainer.steps", "300", "--trainer.lr", "2e-3", "--trainer.out_dir",
                      str(root / "teacher")) == 0
        assert _train("lfm", *DATA, "--objective", "mfrae", "--teacher", str(root / "teacher"), "--width", "16",
                      "--class_cond", "true", "--teacher_steps", "8", "--trainer.steps", "150", "--trainer.lr",
                      "2e-3", "--trainer.out_dir", str(root / "mfrae")) == 0
        yield root
    torch.set_num_threads(threads)


def test_a_flowmap_latent_run_samples_by_jumps(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWZOO_CACHE", str(runs.parent / "flowzoo_cache"))
    student = load_latent_fm(runs / "mfrae")
    assert student.flowmap and student.objective == "mfrae" and student.codec.latent_shape == (64, 5, 5)
    for jumps in (1, 2):
        out = tmp_path / f"grid{jumps}.png"
        argv = ["--checkpoint", str(runs / "mfrae"), "--n", "6", "--steps", str(jumps), "--out", str(out)]
        assert run_main(commands()["sample"], argv, prog="flowzoo vision sample") == 0
        saved = np.load(out.with_suffix(".npz"))
        assert saved["x"].shape == (6, 1, 20, 20) and int(saved["nfe"]) == jumps
    direct = generate_latent(student.model, student.codec, 3, steps=2, labels=torch.tensor([0, 1, 2]))
    assert direct.latents.shape == (3, 64, 5, 5) and direct.images.shape == (3, 1, 20, 20) and direct.nfe == 2


def test_the_distilled_one_jump_map_follows_the_teacher(runs, monkeypatch):
    """A broken objective (wrong sign, wrong time, no teacher) cannot bring one jump close to the teacher's ODE."""
    monkeypatch.setenv("FLOWZOO_CACHE", str(runs.parent / "flowzoo_cache"))
    teacher, student = load_latent_fm(runs / "teacher"), load_latent_fm(runs / "mfrae")
    torch.manual_seed(0)
    untrained = build_latent_net((64, 5, 5), width=16, num_classes=10, flowmap=True).eval()
    labels = torch.arange(64) % 10
    generator = torch.Generator().manual_seed(3)
    target = generate_latent(teacher.model, teacher.codec, 64, steps=50, labels=labels, generator=generator).latents

    def error(model):
        latents = generate_latent(model, student.codec, 64, steps=1, labels=labels,
                                  generator=torch.Generator().manual_seed(3)).latents
        return float((latents - target).pow(2).mean())
    distilled, baseline = error(student.model), error(untrained)
    assert distilled < 0.5 * baseline, (distilled, baseline)


def test_a_teacher_on_another_codec_or_a_flowmap_teacher_is_refused(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLOWZOO_CACHE", str(runs.parent / "flowzoo_cache"))
    assert _train("autoencoder", *DATA, "--ae.downsample", "2", "--ae.channels", "4", "--trainer.steps", "3",
                  "--trainer.out_dir", str(tmp_path / "conv_ae")) == 0
    capsys.readouterr()
    other = ["--autoencoder", str(tmp_path / "conv_ae"), "--teacher", str(runs / "teacher")]
    cases = {"a teacher on the autoencoder": other,
             "velocity teacher": ["--teacher", str(runs / "mfrae")],
             "--teacher RUN with --objective mfrae": []}
    for fragment, extra in cases.items():
        out = tmp_path / fragment.replace(" ", "_")
        assert _train("lfm", *DATA, "--objective", "mfrae", *extra, "--trainer.steps", "2",
                      "--trainer.out_dir", str(out)) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and fragment in err and err.count("\n") <= 2, err
        assert not (out / "checkpoints").exists()
    assert _train("lfm", *DATA, "--teacher", str(runs / "teacher"), "--trainer.out_dir", str(tmp_path / "x")) == 2
    assert "only with it" in capsys.readouterr().err
    argv = ["--checkpoint", str(runs / "mfrae"), "--n", "2", "--cfg_scale", "2", "--out", str(tmp_path / "g.png")]
    assert run_main(commands()["sample"], argv, prog="flowzoo vision sample") == 2
    assert "without guidance" in capsys.readouterr().err


def test_a_teacher_with_another_scale_or_conditioning_is_refused(runs, monkeypatch):
    monkeypatch.setenv("FLOWZOO_CACHE", str(runs.parent / "flowzoo_cache"))
    teacher = load_latent_fm(runs / "teacher")
    check_latent_teacher(teacher, teacher.codec, class_cond=True, num_classes=10)
    with pytest.raises(ConfigError, match="scale"):
        check_latent_teacher(teacher, LatentCodec(teacher.codec.autoencoder, 2 * teacher.codec.scale),
                             class_cond=True, num_classes=10)
    with pytest.raises(ConfigError, match="class_cond"):
        check_latent_teacher(teacher, teacher.codec, class_cond=False, num_classes=10)


def test_meanflow_from_scratch_and_evaluate_on_a_flowmap_run(runs, tmp_path, capsys, monkeypatch):
    import json

    monkeypatch.setenv("FLOWZOO_CACHE", str(runs.parent / "flowzoo_cache"))
    assert _train("lfm", *DATA, "--autoencoder", str(runs / "ae"), "--objective", "meanflow", "--width", "8",
                  "--trainer.steps", "3", "--trainer.out_dir", str(tmp_path / "mf")) == 0
    run = load_latent_fm(tmp_path / "mf")
    assert run.flowmap and run.objective == "meanflow" and not run.class_cond
    argv = ["--checkpoint", str(runs / "mfrae"), "--n", "40", "--steps", "1", "--progress", "false"]
    assert run_main(commands()["evaluate"], argv, prog="flowzoo vision evaluate") == 0
    assert "class_accuracy" in capsys.readouterr().out
    record = json.loads((runs / "mfrae" / "evaluate_euler1_n40_decoded.json").read_text())
    assert record["nfe"] == 1 and record["metrics"]["fd"] > 0
