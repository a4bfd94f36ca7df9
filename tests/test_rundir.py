"""Run directories: never overwritten unless asked, locked while a run uses them,
checkpoints checked field by field and against their logs, writes that fail survived.

The command line runs in this process (``azopg.cli.main``), so each test takes a
fraction of a second; runs are serial with a few updates.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shutil

import numpy as np
import pytest

import azopg
from _support import Interrupter
from azopg.cli import main
from azopg.run import checkpoint as checkpoint_module
from azopg.run.output import write_run
from azopg.run.rundir import LOCK, RUN_FILES

HUGE = '{"A": [[-1e308, 0], [0, -1]], "B": [[1], [1]], "Q": [[1, 0], [0, 1]], "R": 1}'


def one_error_line(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("azopg: error:") and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def snapshot(d) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and p.name != LOCK}


def interrupted_run(problem, out, seed=3):
    res = azopg.train(problem, method="two-point", seed=seed, target_gap=1e-3, max_time=60, out_dir=out,
                      progress=Interrupter(3))
    assert res.status == "interrupted" and res.updates > 0
    return res


@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "run1"
    assert main(["train", "--out", str(out), "--quiet", "--max-updates", "3"]) == 0
    return out


# ---------------------------------------------------------------- no overwrite

def test_rejected_input_into_an_existing_run_keeps_it(finished, tmp_path, capsys):
    before = snapshot(finished)
    assert {"result.json", "checkpoint.json", "history.csv"} <= set(before)
    capsys.readouterr()
    (tmp_path / "huge2.json").write_text(HUGE)
    assert main(["train", "--problem", str(tmp_path / "huge2.json"), "--out", str(finished), "--quiet"]) == 2
    one_error_line(capsys, "badly scaled")  # the input is refused before --out is looked at
    assert snapshot(finished) == before


def test_a_run_into_a_finished_run_is_refused_and_overwrite_replaces_only_run_files(finished, capsys):
    (finished / "notes.txt").write_text("mine\n")
    (finished / "compare.json").write_text("{}\n")
    before = snapshot(finished)
    capsys.readouterr()
    assert main(["train", "--out", str(finished), "--quiet", "--max-updates", "3", "--seed", "5"]) == 2
    line = one_error_line(capsys, "holds a run", "--overwrite")
    assert "--resume" not in line  # a finished run has nothing to resume
    assert snapshot(finished) == before
    # the paper's rule: 2 updates cannot reach the target (policy iteration may in 1)
    assert main(["train", "--out", str(finished), "--quiet", "--max-updates", "2", "--seed", "5", "--overwrite",
                 "--method", "two-point"]) == 0
    assert (finished / "notes.txt").read_text() == "mine\n"
    assert not (finished / "compare.json").exists()  # a run file of the old run
    assert json.loads((finished / "result.json").read_text())["seed"] == 5
    assert json.loads((finished / "checkpoint.json").read_text())["master"]["updates"] == 2


def test_an_interrupted_run_is_refused_with_how_to_resume_it(chain3, tmp_path, capsys):
    out = tmp_path / "run"
    interrupted_run(chain3, out)
    before = snapshot(out)
    assert main(["train", "--out", str(out), "--quiet"]) == 2
    one_error_line(capsys, f"azopg train --resume {out}", "--overwrite")
    assert snapshot(out) == before
    with pytest.raises(azopg.SettingsError, match="holds a run"):
        azopg.train(chain3, max_updates=2, out_dir=out)
    assert snapshot(out) == before
    res = azopg.resume(out)  # still resumable
    assert res.status == "converged" and res.stats["resumes"] == 1


def test_rejected_input_into_a_new_directory_writes_nothing(tmp_path, capsys):
    (tmp_path / "huge2.json").write_text(HUGE)
    out = tmp_path / "new"
    assert main(["train", "--problem", str(tmp_path / "huge2.json"), "--out", str(out), "--quiet"]) == 2
    one_error_line(capsys, "badly scaled")
    assert not out.exists()


@pytest.mark.parametrize("name", ["", " ", "\t"])
def test_empty_out_is_refused(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "history.csv").write_text("a user's file\n")
    assert main(["train", "--out", name, "--quiet", "--max-updates", "2"]) == 2
    one_error_line(capsys, "--out", "empty")
    assert sorted(os.listdir(tmp_path)) == ["history.csv"]


def test_speedup_refuses_an_existing_speedup_csv(tmp_path, capsys):
    (tmp_path / "speedup.csv").write_text("earlier results\n")
    assert main(["speedup", "--out", str(tmp_path), "-W", "1", "--backend", "simulated", "--repeats", "1"]) == 2
    one_error_line(capsys, "speedup.csv", "--overwrite")
    assert (tmp_path / "speedup.csv").read_text() == "earlier results\n"


# ---------------------------------------------------------------------- lock

def test_a_running_run_holds_its_lock(chain3, tmp_path, capsys):
    out = tmp_path / "D"
    codes = []

    def second_run(master) -> None:
        if not codes:
            codes.append(main(["train", "--problem", "he1", "--out", str(out), "--quiet", "--overwrite"]))
            codes.append(main(["train", "--resume", str(out), "--quiet"]))

    res = azopg.train(chain3, method="two-point", seed=1, max_updates=40, out_dir=out, progress=second_run)
    assert codes == [2, 2]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(f"in use by another azopg run (pid {os.getpid()})" in ln for ln in lines), lines
    write_run(out, res, plot=False)
    assert json.loads((out / "problem.json").read_text())["name"] == "chain3"
    assert json.loads((out / "checkpoint.json").read_text())["master"]["updates"] == 40
    assert main(["train", "--out", str(out), "--quiet", "--overwrite", "--max-updates", "2"]) == 0  # released


def test_lock_held_by_another_process_refuses_and_a_stale_lock_file_does_not(tmp_path, capsys):
    out = tmp_path / "D"
    out.mkdir()
    fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        assert main(["train", "--out", str(out), "--quiet", "--max-updates", "2"]) == 2
        one_error_line(capsys, "--out", "pid 4242")
        assert os.listdir(out) == [LOCK]
    finally:
        os.close(fd)  # as when the holder dies: the lock goes, the file with its pid stays
    assert main(["train", "--out", str(out), "--quiet", "--max-updates", "2"]) == 0
    assert (out / "result.json").is_file()


# --------------------------------------------------------------- resume checks

def test_resume_refuses_the_logs_of_another_run(chain3, tmp_path, capsys):
    mine, other = tmp_path / "mine", tmp_path / "other"
    interrupted_run(chain3, mine)
    interrupted_run(azopg.get_problem("he1"), other)
    for name in ("history.csv", "arrivals.csv"):
        saved = (mine / name).read_bytes()
        shutil.copy(other / name, mine / name)  # shorter or longer: refused either way
        assert main(["train", "--resume", str(mine), "--quiet"]) == 2
        one_error_line(capsys, "--resume", "cannot resume", name)
        middle = len(saved) // 2  # the same length, one digit changed
        digit = next(i for i in range(middle, len(saved)) if chr(saved[i]).isdigit())
        edited = saved[:digit] + str((int(chr(saved[digit])) + 1) % 10).encode() + saved[digit + 1:]
        (mine / name).write_bytes(edited)
        assert main(["train", "--resume", str(mine), "--quiet"]) == 2
        one_error_line(capsys, "--resume", name, "not the log of this checkpoint")
        (mine / name).write_bytes(saved)
    (mine / "history.csv").write_bytes((mine / "history.csv").read_bytes()[:-5])  # cut short
    with pytest.raises(azopg.SettingsError, match="fewer than"):
        azopg.resume(mine)


def test_an_interrupted_run_written_out_resumes(chain3, tmp_path):
    out = tmp_path / "run"
    first = interrupted_run(chain3, out)
    write_run(out, first, plot=False)  # the logs rewritten as the command line does
    res = azopg.resume(out)
    assert res.status == "converged" and res.updates > first.updates


@pytest.fixture(scope="module")
def resumable(chain3, tmp_path_factory):
    out = tmp_path_factory.mktemp("resumable") / "run"
    interrupted_run(chain3, out)
    return out


def unstable_gain(problem) -> list[list[float]]:
    K = -100.0 * np.asarray(problem.B).T  # A - B K = A + 100 B B' : unstable
    assert not problem.is_stabilizing(K)
    return K.tolist()


BAD_FIELDS = {
    # label: (where, key, value, words in the message)
    "version-abc": ("master", "version", "abc", "master.version"),
    "version-1e30": ("master", "version", 1e30, "master.version"),
    "master-without-K": ("master", "K", None, "master.K"),
    "master-a-list": (None, "master", [1, 2], "master"),
    "K-NaN": ("master", "K", "nan-matrix", "master.K"),
    "K-a-string": ("master", "K", "abc", "master.K"),
    "alpha-nan": ("master", "alpha", "nan", "master.alpha"),
    "r-inf": ("master", "r", "inf", "master.r"),
    "settings-a-list": (None, "settings", [1], "settings"),
    "elapsed_s-string": (None, "elapsed_s", "1.0", "elapsed_s"),
    "resumes-string": (None, "resumes", "0", "resumes"),
    "calibration_s-string": (None, "calibration_s", "0.1", "calibration_s"),
    "tau-negative": ("master", "tau", -1.0, "master.tau"),
    "updates-negative": ("master", "updates", -3, "master.updates"),
    "backend-unknown": (None, "backend", "threads", "backend"),
    "status-unknown": (None, "status", "sleeping", "status"),
    "format-old": (None, "format", 1, "format"),
    "logs-missing": (None, "logs", None, "logs"),
    "problem-bad": (None, "problem", {"A": "abc"}, "problem"),
    "K-wrong-shape": ("master", "K", [[1.0]], "master.K"),
    "K-not-stabilizing": ("master", "K", "unstable", "master.K", "stabilize"),
    "anchor-not-stabilizing": ("master", "anchor_K", "unstable", "master.anchor_K", "stabilize"),
    "noisy-a-string": ("master", "noisy", "yes", "master.noisy"),
    "noisy-a-number": ("master", "noisy", 1, "master.noisy"),
    "noise-negative": ("master", "noise", -0.1, "master.noise"),
    "noise-nan": ("master", "noise", "nan", "master.noise"),
    "noise-inf": ("master", "noise", 1e400, "master.noise"),
}


@pytest.mark.parametrize("case", list(BAD_FIELDS.values()), ids=list(BAD_FIELDS))
def test_malformed_checkpoint_is_one_line(chain3, resumable, tmp_path, capsys, case):
    where, key, value, *words = case
    out = tmp_path / "run"
    shutil.copytree(resumable, out)
    ckpt = json.loads((out / "checkpoint.json").read_text())
    target = ckpt[where] if where else ckpt
    if value == "nan-matrix":
        value = (np.array(target[key]) * math.nan).tolist()
    elif value == "unstable":
        value = unstable_gain(chain3)
    if value is None:
        del target[key]
    else:
        target[key] = value
    (out / "checkpoint.json").write_text(json.dumps(ckpt))
    before = snapshot(out)
    assert main(["train", "--resume", str(out), "--quiet"]) == 2
    one_error_line(capsys, "--resume", *words)
    assert snapshot(out) == before


def test_checkpoint_json_that_is_a_directory(tmp_path, capsys):
    (tmp_path / "run" / "checkpoint.json").mkdir(parents=True)
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    one_error_line(capsys, "checkpoint.json is a directory")


# -------------------------------------------------------------- failing writes

def test_directory_unwritable_mid_run_warns_once_and_reports_the_gain(chain3, tmp_path, monkeypatch, capsys, caplog):
    out = tmp_path / "run"
    real_replace = os.replace
    saves = []

    def replace(src, dst):
        if len(saves) >= 2:  # after the first checkpoint: as if the directory became read-only
            raise PermissionError(13, "Permission denied", str(dst))
        real_replace(src, dst)

    real_save = checkpoint_module.RunRecorder.save

    def save(self, *args, **kwargs):
        saves.append(args)
        real_save(self, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(checkpoint_module, "INTERVAL", 0.0)
    monkeypatch.setattr(checkpoint_module.RunRecorder, "save", save)
    caplog.set_level(logging.WARNING, logger="azopg")
    assert main(["train", "--out", str(out), "--quiet", "--target-gap", "1e-2"]) == 0
    assert len(saves) >= 2
    stdout = capsys.readouterr().out
    assert "converged" in stdout
    (k_line,) = [ln for ln in stdout.splitlines() if ln.startswith("K = ")]
    K = np.array(json.loads(k_line[4:]))
    assert chain3.relative_gap(K) <= 1e-2
    warnings = [r.getMessage() for r in caplog.records if r.name == "azopg"]
    assert len(warnings) == 2, warnings
    assert "cannot write to" in warnings[0] and "without checkpoints" in warnings[0]
    assert "result.json, history.csv, arrivals.csv, problem.json" in warnings[1]
    ckpt = json.loads((out / "checkpoint.json").read_text())  # the last one written is intact
    assert ckpt["status"] == "running" and not (out / "result.json").exists()


# -------------------------------------------------------------------- replay

@pytest.mark.parametrize("garbage", ["garbage", "1,0,estimate,x,1.0,0.1,2", "1,0,estimate,1,nan,0.1,2",
                                     "1,0,teleport,1,1.0,0.1,2", "1,0,estimate,999,1.0,0.1,2"])
def test_replay_with_a_garbage_line_is_one_line(finished, capsys, garbage):
    with open(finished / "arrivals.csv", "a") as fh:
        fh.write(garbage + "\n")
    lines = (finished / "arrivals.csv").read_text().splitlines()
    capsys.readouterr()
    assert main(["replay", str(finished)]) == 2
    one_error_line(capsys, f"line {len(lines)}")


def test_run_files_are_the_files_a_run_writes(finished):
    assert set(snapshot(finished)) <= set(RUN_FILES)
