"""A checkpoint holds every decision-making counter: a resumed rule decides as the uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pytest

import azopg
from azopg.method.rules import make_rule
from azopg.method.tasks import run_task
from azopg.settings import Settings


class Events:
    """Every event (with the rule's version, update count and step) and arrival, in order."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def event(self, record):
        self.rows.append(record[:1] + record[2:])  # all but the gain

    def arrival(self, row):
        self.rows.append(("arrival", *row))


def _drive(rule, plant, stop):
    """The serial loop (one task at a time), stopped between two tasks when ``stop(rule)``: then no
    task is in flight, so a resume from the rule's state loses nothing."""
    def run(task):
        return run_task(plant, task)

    while not stop(rule):
        rule.tell(run(rule.ask(0)))
        if rule.needs_recalibration:
            rule.recalibrate(run)


def _stalling_rule(p, observer):
    # at the optimum no step helps: checks keep failing, step searches find nothing, the limit doubles
    s = Settings(method="two-point", step=1e-300, target_gap=None, seed=0)
    return make_rule(np.array(p.optimal_gain), s, R=np.array(p.R), observer=observer)


def test_a_resumed_rule_remembers_how_close_it_was_to_recalibrating():
    p = azopg.get_problem("chain3")
    plant = azopg.LinearPlant(p)
    a_log, b_log = Events(), Events()
    a = _stalling_rule(p, a_log)
    a.calibrate(lambda task: run_task(plant, task))
    # interrupt at a named point: the first time 10 or more checks have failed in a row
    _drive(a, plant, lambda rule: rule.safeguards.rejects_in_row >= 10)
    g = a.safeguards
    assert g.rejects_in_row > 0 and g.stall_limit > g.rejects_in_row
    state = json.loads(json.dumps(a.state_dict(), allow_nan=False))  # as a checkpoint stores it
    b = _stalling_rule(p, b_log)
    b.load_state(state)
    assert (b.safeguards.rejects_in_row, b.safeguards.stall_limit, b.safeguards.anchor_serial) == \
           (g.rejects_in_row, g.stall_limit, g.anchor_serial)
    resumed_at = len(a_log.rows)
    end = a.stats.updates + 12 * g.check_every  # two more step searches in the uninterrupted run
    _drive(a, plant, lambda rule: rule.stats.updates >= end)
    _drive(b, plant, lambda rule: rule.stats.updates >= end)
    after = a_log.rows[resumed_at:]
    assert sum(row[0] == "recalibrate" for row in after) >= 2  # the decisions compared include searches
    assert b_log.rows == after
    assert b.state_dict() == a.state_dict()


def test_a_format_2_checkpoint_state_still_loads():
    """A state saved before the stall counters were checkpointed resumes with none counted."""
    p = azopg.get_problem("chain3")
    a = _stalling_rule(p, None)
    state = a.state_dict()
    for key in ("rejects_in_row", "stall_limit", "anchor_serial"):
        del state[key]
    b = _stalling_rule(p, None)
    b.safeguards.rejects_in_row = 7
    b.load_state(state)
    assert b.safeguards.rejects_in_row == 0 and b.safeguards.stall_limit == a.safeguards.stall_limit


@pytest.mark.parametrize("fmt", [2, 3])
def test_checkpoints_of_format_2_and_3_resume(tmp_path, fmt, caplog):
    from _support import Interrupter
    out = tmp_path / "run"
    p = azopg.get_problem("chain3")
    azopg.train(p, method="two-point", seed=3, max_time=60, out_dir=out, progress=Interrupter(3))
    path = out / "checkpoint.json"
    ckpt = json.loads(path.read_text())
    assert ckpt["format"] == 3 and ckpt["master"]["stall_limit"] >= 1
    if fmt == 2:
        ckpt["format"] = 2
        for key in ("rejects_in_row", "stall_limit", "anchor_serial"):
            del ckpt["master"][key]
        path.write_text(json.dumps(ckpt))
    with caplog.at_level("WARNING", logger="azopg"):
        res = azopg.resume(out)
    assert res.status == "converged" and res.stats["resumes"] == 1
    assert ("format-2 checkpoint" in caplog.text) == (fmt == 2)
