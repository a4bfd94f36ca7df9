"""Takes: every report that arrived while the master was busy is taken in one go.

Specifications: for a rule that applies each estimate at once (the paper's), a take is exactly its
reports told one by one; policy iteration adds a take's rollouts and fits once; the arrival log
marks the takes, and a replay of a run with takes reproduces its gain bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

import azopg
from azopg.engine import backends
from azopg.engine.backends import SimulatedExecutor
from azopg.method.rules import make_rule
from azopg.method.tasks import Report, run_task
from azopg.plants.linear import LinearPlant
from azopg.run.output import write_run
from azopg.run.replay import replay_run
from azopg.settings import Settings


class TakingExecutor(SimulatedExecutor):
    """The simulated executor with a busy master: after each report, the next 0-4 reports (a seeded
    draw) have already arrived, as when the master was fitting while they came in."""

    def __init__(self, *args, **kw) -> None:
        super().__init__(*args, **kw)
        self._draws = np.random.default_rng(7)

    def ready_reports(self) -> list[Report]:
        take = []
        for _ in range(int(self._draws.integers(0, 5))):
            rep = self.next_report()
            if rep is None:
                break
            take.append(rep)
        return take


@pytest.fixture
def busy_master(monkeypatch):
    def make(plant_factory, workers, o):
        return TakingExecutor(plant_factory, workers, per_rollout=o.per_rollout, model=o.latency_model, seed=o.seed)

    monkeypatch.setitem(backends._EXECUTORS, "simulated", make)


def _counting(fn, calls):
    def counted(*args):
        calls.append(1)
        return fn(*args)
    return counted


def _reports(rule, plant, workers):
    tasks = [rule.ask(w) for w in range(workers)]
    return [run_task(plant, t) for t in tasks]


def test_a_take_of_the_papers_rule_is_its_reports_one_by_one(chain3):
    settings = Settings(method="two-point", plain=True, step=1e-3, r=1e-3, tau=8.0, batch=1, workers=6)
    plant = LinearPlant(chain3)
    one, many = (make_rule(np.array(chain3.K0), settings, R=np.array(chain3.R)) for _ in range(2))
    for _ in range(3):
        reports = _reports(one, plant, 6)
        assert [r.task_id for r in _reports(many, plant, 6)] == [r.task_id for r in reports]
        for rep in reports:
            one.tell(rep)
        many.tell_many(reports)
    assert one.version == many.version == 18
    assert np.array_equal(one.K, many.K)


def test_policy_iteration_fits_once_per_take(chain3):
    settings = Settings(method="policy-iteration", workers=8, seed=0)
    plant = LinearPlant(chain3)
    counts = []
    for taken in (False, True):
        rule = make_rule(np.array(chain3.K0), settings, R=np.array(chain3.R), deterministic_plant=True)
        rule.calibrate(lambda task: run_task(plant, task))
        fits: list[int] = []
        rule._iterate = _counting(rule._iterate, fits)
        reports = [rep for rep in _reports(rule, plant, 8) if rep.kind.value == "moments"]
        assert len(reports) >= 4
        if taken:
            rule.tell_many(reports)
        else:
            for rep in reports:
                rule.tell(rep)
        counts.append(len(fits))
    one_by_one, in_a_take = counts
    assert in_a_take == 1 and one_by_one == len(reports)  # the first fit's data is there after one rollout


@pytest.mark.parametrize("method", ["policy-iteration", "two-point", "natural"])
def test_replay_reproduces_a_run_with_takes(chain3, tmp_path, busy_master, method):
    res = azopg.train(chain3, method=method, backend="simulated", workers=6, seed=3, target_gap=None,
                      max_updates=30, max_rollouts=20_000, latency_model="exponential")
    taken = [a.taken_with for a in res.arrivals]
    assert max(taken) >= 2 and taken[0] == 0  # takes of several reports happened
    write_run(tmp_path, res, plot=False)
    assert "taken_with" in (tmp_path / "arrivals.csv").read_text().splitlines()[0]
    K, K_recorded, events = replay_run(tmp_path)
    assert events == len(res.arrivals)
    assert np.array_equal(K_recorded, res.K) and np.array_equal(K, K_recorded)


def test_replay_reads_a_log_without_takes(chain3, tmp_path):
    """A log written before takes were logged (no ``taken_with`` column) replays one report at a time."""
    res = azopg.train(chain3, method="two-point", backend="simulated", workers=3, seed=1, target_gap=None,
                      max_updates=20, latency_model="exponential")
    write_run(tmp_path, res, plot=False)
    path = tmp_path / "arrivals.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(line.rsplit(",", 1)[0] for line in lines) + "\n")
    K, K_recorded, _ = replay_run(tmp_path)
    assert np.array_equal(K, K_recorded)


def test_replay_refuses_a_take_that_skips(chain3, tmp_path):
    res = azopg.train(chain3, method="two-point", backend="simulated", workers=3, seed=1, target_gap=None,
                      max_updates=5)
    write_run(tmp_path, res, plot=False)
    path = tmp_path / "arrivals.csv"
    lines = path.read_text().splitlines()
    lines[2] = lines[2].rsplit(",", 1)[0] + ",5"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(azopg.SettingsError, match="line 3"):
        replay_run(tmp_path)


def test_replay_reproduces_an_async_policy_iteration_run(chain3, tmp_path):
    """Real worker processes: whatever takes the master's pace made, the replay follows them."""
    res = azopg.train(chain3, method="policy-iteration", backend="async", workers=3, seed=1, target_gap=1e-9,
                      rollout_latency=0.0005, max_time=120)
    assert res.status == "converged"
    write_run(tmp_path, res, plot=False)
    K, K_recorded, events = replay_run(tmp_path)
    assert events == len(res.arrivals)
    assert np.array_equal(K, K_recorded)
