"""Killed runs lose nothing: ``genppl run pearson_crabs --checkpoint DIR`` is killed with
SIGKILL part-way (after its first checkpoint, before it finishes), started again, and
answers with exactly the numbers of an uninterrupted run -- for an SVI, a NUTS and an EM
run. SIGKILL gives the process no chance to clean up, so this is what a crash, an
out-of-memory kill or a pre-empted cluster job does; the in-process tests of each engine's
resume (test_checkpoint.py, test_svi_loop.py) stop runs by an exception instead."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
#: One torch thread per run: the test's own process polls beside it on a small machine.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: Only a guard against a hung run; nothing is asserted about how long a run takes.
HANG = 300.0
#: How ``Popen.kill`` ends a process: SIGKILL on POSIX, TerminateProcess (status 1) on Windows.
KILLED = -signal.SIGKILL if os.name == "posix" else 1


def _command(engine: str, steps: int, checkpoint: Path | None) -> list[str]:
    command = [sys.executable, "-m", "genppl", "run", "pearson_crabs", "--engine", engine,
               "--steps", str(steps), "--json", "--seed", "0"]
    return command if checkpoint is None else [*command, "--checkpoint", str(checkpoint)]


def _start(command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(process: subprocess.Popen[str]) -> dict[str, Any]:
    """The run's JSON report, without its timing."""
    try:
        stdout, stderr = process.communicate(timeout=HANG)
    finally:
        process.kill()  # nothing once it has ended
        process.wait()
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    del report["seconds"]
    return report


def _kill_after_first_checkpoint(command: list[str], directory: Path) -> None:
    """Start ``command``, wait for its first checkpoint file, and kill it (SIGKILL): the
    run must still have been going then (killed, not finished)."""
    process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    give_up = time.monotonic() + HANG
    try:
        while (not list(directory.glob("*.pt")) and process.poll() is None
               and time.monotonic() < give_up):
            time.sleep(0.002)
    finally:
        process.kill()  # SIGKILL; nothing once the run has ended by itself
        status = process.wait()
        assert process.stderr is not None
        stderr = process.stderr.read()
        process.stderr.close()
    assert status == KILLED, f"the run was not killed mid-way (exit status {status}): {stderr}"


def _steps_saved(directory: Path) -> int:
    """How far the checkpoint in ``directory`` got: SVI steps, sampler steps (warm-up
    included) or EM iterations. (A kill between a save's two renames leaves only .prev.)"""
    [path] = list(directory.glob("*.pt")) or list(directory.glob("*.pt.prev"))
    envelope = torch.load(path, weights_only=True)
    record = torch.load(io.BytesIO(envelope["payload"].numpy().tobytes()), weights_only=True)
    return int(record["done"]) if "done" in record else len(record["log_likelihood"])


@pytest.mark.parametrize(("engine", "steps", "total"), [
    ("em", 30, 30),  # 30 iterations, a checkpoint every 3
    ("svi", 30, 30),  # 30 steps, a checkpoint every 3
    ("nuts", 3, 6),  # 3 warm-up steps and 3 draws, a checkpoint every step
])
def test_a_run_killed_mid_way_resumes_to_the_numbers_of_an_uninterrupted_one(
        tmp_path: Path, engine: str, steps: int, total: int) -> None:
    directory = tmp_path / "checkpoints"
    uninterrupted = _start(_command(engine, steps, None))  # beside the killed run
    try:
        resumable = _command(engine, steps, directory)
        _kill_after_first_checkpoint(resumable, directory)
        assert 0 < _steps_saved(directory) < total  # the progress the resumed run starts from
        resumed = _result(_start(resumable))
    except BaseException:
        uninterrupted.kill()
        uninterrupted.wait()
        raise
    expected = _result(uninterrupted)
    assert resumed == expected
    assert set(expected["metrics"]) >= {"weights", "locs", "scales", "log_likelihood"}


@pytest.mark.parametrize(("entry", "engine"), [("pearson_crabs", "cavi"), ("asia", None)])
def test_a_checkpoint_an_entry_would_not_keep_is_refused(entry: str, engine: str | None,
                                                          tmp_path: Path) -> None:
    """--checkpoint under an engine the entry keeps no checkpoints for is a usage error
    naming the engines that do, before anything runs: never accepted and dropped."""
    from genppl.cli import EXIT_USAGE, main

    argv = ["run", entry, "--checkpoint", str(tmp_path / "ck"), "--steps", "1"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([*argv, *(["--engine", engine] if engine else [])])
    assert code == EXIT_USAGE
    assert f"gallery entry {entry!r} keeps no checkpoints under engine" in err.getvalue()
    assert not (tmp_path / "ck").exists()
