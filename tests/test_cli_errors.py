"""Every command-line entry point answers bad input with one ``error:`` line, exit code 2 and no traceback.

The commands are discovered from the ``flowzoo.commands`` entry points (and ``flowzoo.<domain>.train``
modules), so a new domain's commands are covered as soon as it registers them: a command without a
representative bad input below is still run with an unknown option. ``--debug`` must show the traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowzoo.core.cli import registered_domains

MISSING = "does/not/exist"
# (domain, command) -> representative bad inputs: a missing file, a bad number, an unknown option value.
BAD_INPUTS: dict[tuple[str, str], list[list[str]]] = {
    ("core", "demo"): [["--steps", "abc"]],
    ("core", "train"): [["--trainer.lr", "abc"], ["--config", MISSING + ".yaml"], ["--coupling", "nope"],
                        ["--trainer.steps", "5", "--threads", "0"]],
    ("robotics", "collect"): [["--episodes", "abc"], ["--obs", "nope"]],
    ("robotics", "train"): [["mp1", "--demos", MISSING], ["mp1", "--trainer.steps", "abc"], ["no_such_method"]],
    ("robotics", "evaluate"): [["--checkpoint", MISSING]],
    ("robotics", "export"): [["--checkpoint", MISSING, "--out", "policy.pt2"]],
    ("biology", "train"): [["meta_fm", "--adata", MISSING + ".h5ad"], ["no_such_method"]],
    ("biology", "predict"): [["--checkpoint", MISSING, "--adata", MISSING + ".h5ad", "--out", "pred.h5ad"]],
    ("biology", "sample"): [["--checkpoint", MISSING], ["--n", "abc"]],
    ("vision", "train"): [["icfm", "--data", "folder:" + MISSING], ["no_such_method"], ["refiner", "--data", "digits"],
                          ["autoencoder", "--data", "digits", "--ae.kind", "representation"],
                          ["autoencoder", "--ae.kind", "vit"], ["lfm", "--data", "digits", "--objective", "mfrae"],
                          ["lfm", "--data", "digits", "--teacher_steps", "0"],
                          ["bfm", "--bfm_segments", "0"], ["symmflow", "--direction", "sideways"],
                          ["bfm", "--data", "digits", "--grad_checkpoint", "true"],
                          ["icfm", "--data", "digits", "--compile", "maybe"],
                          ["icfm", "--data", "digits", "--trainer.fused", "always"]],
    ("vision", "sample"): [["--checkpoint", MISSING, "--out", "s.png"], ["--n", "abc"],
                           ["--checkpoint", MISSING, "--sampler", "heun", "--refiner", MISSING, "--out", "s.png"],
                           ["--checkpoint", MISSING, "--refiner_steps", "2", "--out", "s.png"],
                           ["--checkpoint", MISSING, "--task", "colourise", "--out", "s.png"],
                           ["--checkpoint", MISSING, "--task", "segment", "--class", "3", "--out", "s.png"],
                           ["--checkpoint", MISSING, "--task", "classify", "--sampler", "flowturbo", "--out", "s.png"],
                           ["--checkpoint", MISSING, "--task", "segment", "--out", "s.png"]],
    ("vision", "evaluate"): [["--checkpoint", MISSING], ["--n", "abc"], ["--checkpoint", MISSING, "--seg_steps", "0"],
                             ["--checkpoint", MISSING, "--seg_steps", "2"]],
    ("driving", "make-scenes"): [["--n", "abc"], ["--n", "0"], ["--n", "3", "--plot", "9"],
                                 ["--n", "3", "--workers", "0"]],
    ("driving", "train"): [["goalflow", "--scenes", MISSING], ["no_such_method"]],
    ("driving", "evaluate"): [["--checkpoint", MISSING, "--scenes", MISSING],
                              ["--scenes", MISSING, "--baseline", "constant_velocity", "--tracked", "maybe"],
                              ["--checkpoint", MISSING, "--scenes", MISSING, "--w_dac", "-1"],
                              ["--scenes", MISSING, "--baseline", "constant_velocity", "--w_dis", "abc"]],
    ("driving", "simulate"): [["--env", "no-such-env-v0", "--planner", "idm"], ["--episodes", "abc"],
                              ["--planner", "idm", "--checkpoint", MISSING],
                              ["--planner", "constant_velocity", "--video", "run.avi"]],
    ("vision", "restore"): [["--checkpoint", MISSING, "--input", MISSING + ".png", "--task", "sr4"],
                            ["--task", "colourise"],
                            ["--checkpoint", MISSING, "--input", MISSING + ".png", "--measurement", MISSING + ".png"],
                            ["--checkpoint", MISSING],
                            ["--checkpoint", MISSING, "--measurement", MISSING + ".png", "--noise", "-0.1"],
                            ["--checkpoint", MISSING, "--task", "sr4", "--input", MISSING + ".png", "--mask",
                             MISSING + ".png"],
                            ["--checkpoint", MISSING, "--task", "sr4", "--measurement", MISSING + ".png"],
                            ["--checkpoint", MISSING, "--input", MISSING + ".png", "--progress", "maybe"]],
    ("vision", "invert"): [["--checkpoint", MISSING, "--input", MISSING + ".png"],
                           ["--checkpoint", MISSING, "--input", MISSING + ".png", "--progress", "maybe"]],
    ("vision", "edit"): [["--checkpoint", MISSING, "--input", MISSING + ".png", "--class", "3"]],
    ("vision", "video-edit"): [["--input", MISSING + ".mp4"], ["--edit", "blur"], ["--editor", MISSING],
                               ["--steps", "0"]],
    ("vision", "train-editor"): [["--steps", "abc"], ["--size", "0"]],
    ("vision", "measure-crw"): [["--checkpoint", MISSING], ["--times", "1"]],
    ("three_d", "train"): [["pufm", "--ratio", "2.5"], ["scoop", "--scenes", "0"], ["no_such_method"],
                           ["pufm", "--data", MISSING], ["pufm", "--shape_set", "sphere", "blob"]],
    ("three_d", "upsample"): [[MISSING + ".ply", "--ratio", "1", "--checkpoint", "midpoints", "--out", "y.ply"]],
    ("three_d", "scene-flow"): [[MISSING + ".ply", MISSING + ".ply", "--out", "flow.npy", "--refine"]],
    ("three_d", "generate"): [["--checkpoint", MISSING, "--steps", "1", "--out", "shapes"]],
}
GENERIC_BAD_INPUT = ["--no-such-option-anywhere", "1"]


def _commands() -> list[tuple[str, str]]:
    found = []
    for domain, load in sorted(registered_domains().items()):
        try:
            table = load()
        except Exception as error:  # a domain whose command table cannot load is itself a failure
            pytest.fail(f"the command table of {domain!r} failed to load: {error!r}")
        found += [(domain, name) for name in sorted(table)]
    return found


COMMANDS = _commands()


def _argv(domain: str, command: str, args: list[str]) -> list[str]:
    if domain == "core" and command == "demo":
        return ["demo", *args]
    if command == "train":
        return ["train", domain, *args]
    return [domain, command, *args]


CASES = [_argv(domain, command, args) for domain, command in COMMANDS
         for args in BAD_INPUTS.get((domain, command), [GENERIC_BAD_INPUT])] + [["no_such_command"]]

# Importing torch and the domains once for all `flowzoo ...` cases keeps this test fast; each case runs
# `flowzoo.core.cli.main(argv)` as the console script does, in an empty folder of its own, and an exception
# that escapes it is printed as the interpreter would (traceback, exit 1).
_BATCH = """
import contextlib, io, json, os, sys, traceback
from flowzoo.core.cli import main
results = []
for index, argv in enumerate(json.loads(sys.argv[1])):
    work = os.path.join(sys.argv[2], str(index))
    os.makedirs(work)
    os.chdir(work)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append({"argv": argv, "code": code, "stderr": err.getvalue(), "left": sorted(os.listdir(work))})
print(json.dumps(results))
"""


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "FLOWZOO_DEBUG": "", **env}
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=environment)


def _one_error_line(code: int, stderr: str) -> str | None:
    """Why this outcome breaks the rule (None: it keeps it)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code != 2:
        return f"exit {code}"
    if "Traceback" in stderr:
        return "a traceback"
    if not lines or not lines[0].startswith("error: "):
        return "no leading `error:` line"
    if len(lines) > 2 or any(line.startswith("error:") for line in lines[1:]):
        return f"{len(lines)} lines"
    return None


def test_every_flowzoo_command_answers_bad_input_with_one_error_line(tmp_path):
    assert {("core", "demo"), ("core", "train")} <= set(COMMANDS)
    out = _run(["-c", _BATCH, json.dumps(CASES), str(tmp_path)], tmp_path)
    assert out.returncode == 0, out.stderr
    failures = []
    for result in json.loads(out.stdout.splitlines()[-1]):
        why = _one_error_line(result["code"], result["stderr"])
        if why is None and result["left"]:
            why = f"left files behind: {result['left']}"  # nothing is created when the input is refused
        if why is not None:
            failures.append(f"flowzoo {' '.join(result['argv'])}: {why}\n{result['stderr'].strip()[-800:]}")
    assert not failures, "\n\n".join(failures)


def _module_cases() -> list:
    cases = [pytest.param(["-m", "flowzoo", "no_such_command"], id="python -m flowzoo")]
    for domain in sorted({domain for domain, command in COMMANDS if command == "train"}):
        if importlib.util.find_spec(f"flowzoo.{domain}.train") is not None:
            args = BAD_INPUTS.get((domain, "train"), [GENERIC_BAD_INPUT])[0]
            cases.append(pytest.param(["-m", f"flowzoo.{domain}.train", *args], id=f"flowzoo.{domain}.train"))
    return cases


@pytest.mark.parametrize("argv", _module_cases())
def test_module_entry_points_answer_bad_input_with_one_error_line(argv, tmp_path):
    out = _run(argv, tmp_path)
    why = _one_error_line(out.returncode, out.stderr)
    assert why is None, f"{why}\n{out.stderr}"
    assert list(tmp_path.iterdir()) == [], "bad input left files behind"


@pytest.mark.parametrize("argv", [["-m", "flowzoo.core.train", "--trainer.lr", "abc"],
                                  ["-m", "flowzoo", "demo", "--steps", "abc"]], ids=["core.train", "demo"])
def test_debug_shows_the_traceback(argv, tmp_path):
    with_flag = _run([*argv, "--debug"], tmp_path)
    assert with_flag.returncode not in (0, 2) and "Traceback" in with_flag.stderr, with_flag.stderr
    from_env = _run(argv, tmp_path, FLOWZOO_DEBUG="1")
    assert "Traceback" in from_env.stderr, from_env.stderr


def test_threads_option_is_taken_everywhere(tmp_path):
    from flowzoo.core.config import DEFAULT_THREADS

    code = ("import torch\n"
            "from flowzoo.core.cli import run_main\n"
            "def main(argv):\n"
            "    print(torch.get_num_threads(), argv)\n"
            "run_main(main, ['--threads', '2', '--x', '1'], prog='t')\n"
            "run_main(main, ['--x', '--threads=3'], prog='t')\n"
            "run_main(main, ['--x'], prog='t')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["2 ['--x', '1']", "3 ['--x']", f"{DEFAULT_THREADS} ['--x']"]


def test_python_m_flowzoo_is_the_console_script(tmp_path):
    out = subprocess.run([sys.executable, "-m", "flowzoo", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "flowzoo train <domain>" in out.stdout and "--threads" in out.stdout
