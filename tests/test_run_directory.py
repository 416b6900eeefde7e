"""A run directory belongs to one run, file-system faults are one line before any work, and what a crash
leaves behind (temporary checkpoints, partial datasets) is cleaned up (issue #13)."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from mtrl.io import checkpoint
from mtrl.train.trainer import Trainer
from tests.conftest import ROOT, assert_one_line_error, run_cli, smoke_run_config


def _digest(run_dir):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (run_dir / "checkpoints").iterdir()}


@pytest.fixture
def trained_run(tmp_path):
    run_dir = tmp_path / "run"
    Trainer(smoke_run_config(run_dir, "total_steps=300", "eval_every=0"), run_dir).run()
    return run_dir


# ----------------------------------------------------------------------------------------- one run per directory
@pytest.mark.slow
def test_a_second_run_in_a_used_directory_is_refused_and_overwrite_replaces_it(trained_run):
    before = _digest(trained_run)
    proc = run_cli("train.py", "experiment=smoke", f"run_dir={trained_run}", "total_steps=300")
    assert_one_line_error(proc, "already holds a run", f"resume={trained_run}", "overwrite=true")
    assert _digest(trained_run) == before

    stale = trained_run / "checkpoints" / "step_000000000900.pt"  # a checkpoint the new run would never write
    stale.write_bytes((trained_run / "checkpoints" / "step_000000000300.pt").read_bytes())
    Trainer(smoke_run_config(trained_run, "total_steps=300", "eval_every=0", "overwrite=true"), trained_run).run()
    assert [p.name for p in checkpoint.list_checkpoints(trained_run)] == ["step_000000000300.pt"]  # stale one gone


@pytest.mark.slow
def test_resume_with_a_checkpoint_file_continues_in_its_run_directory(trained_run):
    (file,) = checkpoint.list_checkpoints(trained_run)
    proc = run_cli(
        "train.py", "experiment=smoke", f"resume={file}", "total_steps=400", "eval_every=0", "progress=false"
    )
    assert proc.returncode == 0, proc.stderr
    assert f"run directory: {trained_run}" in proc.stdout
    assert [p.name for p in checkpoint.list_checkpoints(trained_run)][-1] == "step_000000000400.pt"


def test_leftover_temporary_checkpoints_are_removed_and_checkpoints_are_0644(trained_run):
    leftover = trained_run / "checkpoints" / ".tmp_killed_while_saving.pt"
    leftover.write_bytes(b"half a checkpoint")
    umask = os.umask(0o077)  # the files' mode must not depend on the user's umask
    try:
        Trainer(
            smoke_run_config(trained_run, f"resume={trained_run}", "total_steps=400", "eval_every=0"), trained_run
        ).run()
    finally:
        os.umask(umask)
    assert not leftover.exists()
    for file in checkpoint.list_checkpoints(trained_run):
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file


# ----------------------------------------------------------------------------------------- file-system faults
@pytest.mark.slow
def test_a_run_dir_that_is_a_file_or_lies_under_one_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert_one_line_error(run_cli("train.py", "experiment=smoke", f"run_dir={blocker}"), "is a file")
    assert_one_line_error(
        run_cli("train.py", "experiment=smoke", f"run_dir={blocker / 'run'}"), "cannot be created", "is a file"
    )
    assert_one_line_error(
        run_cli("train.py", "-m", "experiment=smoke", "seed=1,2", f"hydra.sweep.dir={blocker / 'sweep'}"),
        "hydra.sweep.dir",
        "is a file",
    )
    assert blocker.read_text() == "not a directory"


def test_an_unwritable_evaluation_output_is_refused_before_the_evaluation_runs(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    # 100000 episodes would take hours: the refusal must come before any of them.
    proc = run_cli(
        "evaluate.py",
        "policy=scripted",
        "env.tasks=[reach-v3]",
        "episodes_per_task=100000",
        f"output={blocker / 'eval.json'}",
        timeout=120,
    )
    assert_one_line_error(proc, "output folder", "is a file")


def test_an_unwritable_collection_output_is_refused(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_cli(
        "collect.py", "env.tasks=[reach-v3]", "episodes_per_task=100000", f"output={blocker / 'x.h5'}", timeout=120
    )
    assert_one_line_error(proc, "output folder", "is a file")


# ----------------------------------------------------------------------------------------- interrupted collections
def _start_collection(output):
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "collect.py"),
            "env.tasks=[reach-v3,push-v3]",
            "episodes_per_task=100000",
            f"output={output}",
            "progress=false",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def _partials(output):
    return sorted(output.parent.glob(f".{output.name}.*.partial"))


def _wait_for_partial(proc, output, timeout=120):
    """Wait until `proc` (pid in the name) writes its temporary file, then a little longer; return the file."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        mine = [p for p in _partials(output) if f".{proc.pid}." in p.name]
        if mine:
            time.sleep(1.0)  # well inside the episodes
            return mine[0]
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(proc.communicate())


@pytest.fixture
def collections():
    """Start collections with `start(output)`; any still running when the test ends (a failure) is killed."""
    started = []

    def start(output):
        started.append(_start_collection(output))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
def test_ctrl_c_ends_a_collection_with_one_line_and_kill_9_leftovers_are_removed(tmp_path, collections):
    output = tmp_path / "x.h5"
    killed = collections(output)
    stale = _wait_for_partial(killed, output)
    killed.kill()  # kill -9: no clean-up can run
    killed.communicate()
    assert _partials(output) == [stale]

    interrupted = collections(output)
    _wait_for_partial(interrupted, output)
    assert not stale.exists()  # the new collection removed the dead one's file when it started
    interrupted.send_signal(signal.SIGINT)
    out, err = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 130, err
    assert err.strip().splitlines() == ["error: interrupted; no dataset was written"]
    assert list(tmp_path.iterdir()) == []  # no dataset, no temporary file


def test_partial_files_of_running_collections_are_kept(tmp_path):
    from mtrl.data.dataset import remove_stale_partials

    output = tmp_path / "x.h5"
    dead = tmp_path / ".x.h5.999999999.abcd1234.partial"  # beyond any pid_max: no such process
    old_style = tmp_path / ".x.h5.abcd1234.partial"  # named before pids were recorded
    running = tmp_path / f".x.h5.{os.getpid()}.abcd1234.partial"
    other_output = tmp_path / ".y.h5.999999999.abcd1234.partial"
    for path in (dead, old_style, running, other_output):
        path.write_bytes(b"")
    assert sorted(remove_stale_partials(output)) == sorted([dead, old_style])
    assert running.exists() and other_output.exists()
