"""The README's robotics commands, run as written (in a fresh folder, on a tiny budget), do what they say:
the demonstrations, the policy and the video land where the commands name them, an ``.mp4`` where ``.mp4`` is asked.

The commands are read from README.md (the bash block holding ``flowzoo robotics``); each runs in a subprocess as
the user would type it, with budget options appended (a later option wins over an earlier one). A command of a
kind this test does not know makes it fail: give it a tiny budget here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
# Appended to each command: the same command, but seconds instead of hours.
TINY = {
    "collect": ["--episodes", "1", "--num_points", "64", "--max_steps", "200", "--progress", "false"],
    "train": ["--episodes", "1", "--eval_episodes", "0", "--policy.down_dims", "16", "--trainer.steps", "2",
              "--trainer.batch_size", "8", "--trainer.checkpoint_every", "2", "--progress", "false"],
    "evaluate": ["--episodes", "1", "--num_envs", "1", "--max_steps", "8", "--progress", "false"],
    "export": [],
}


def readme_robotics_commands() -> list[list[str]]:
    """Every ``flowzoo ...`` / ``python -m flowzoo...`` command of the README's robotics bash blocks."""
    blocks = re.findall(r"```(?:bash|sh|shell)\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.DOTALL)
    commands = []
    for block in blocks:
        if "flowzoo robotics" not in block and "flowzoo.robotics" not in block:
            continue
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:2] == ["flowzoo", "robotics"] or words[:3] in (["python", "-m", "flowzoo.robotics.train"],
                                                                     ["flowzoo", "train", "robotics"]):
                commands.append(words)
    return commands


def _kind(words: list[str]) -> str:
    if words[0] == "python" or words[1] == "train":
        return "train"
    return words[2]


def _executable(words: list[str]) -> list[str]:
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    script = Path(sys.executable).with_name("flowzoo")
    return [str(script) if script.exists() else shutil.which("flowzoo") or "flowzoo", *words[1:]]


def test_the_readme_lists_the_robotics_commands():
    kinds = [_kind(words) for words in readme_robotics_commands()]
    assert {"collect", "train", "evaluate"} <= set(kinds), kinds


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_readme_robotics_commands_run_as_written(tmp_path):
    pytest.importorskip("metaworld")
    pytest.importorskip("imageio_ffmpeg")  # part of the robotics extra: an .mp4 is asked
    commands = readme_robotics_commands()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    asked_videos = []
    for words in commands:
        kind = _kind(words)
        assert kind in TINY, f"{shlex.join(words)}: give this command a tiny budget in TINY"
        run = subprocess.run([*_executable(words), *TINY[kind]], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, f"{shlex.join(words)}\n{run.stderr[-3000:]}"
        assert "Traceback" not in run.stderr
        if "--video" in words:
            asked_videos.append(words[words.index("--video") + 1])
    assert asked_videos, "the README's evaluate command writes a video"
    for name in asked_videos:
        written = tmp_path / name
        assert written.is_file(), f"{name} not written; the folder holds {sorted(os.listdir(tmp_path))}"
        if written.suffix == ".mp4":
            assert written.read_bytes()[4:8] == b"ftyp"  # an MP4 container, not a GIF under another name
