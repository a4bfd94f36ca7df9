"""A task stops at the run's deadline: between rollouts, and a long noisy rollout between grid chunks
(:mod:`azopg.plants.deadline`). Every clock here is a fake one (``time.monotonic``, ``time.perf_counter`` and
``time.sleep`` replaced): no verdict hinges on the machine's speed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import azopg
from azopg.errors import OutOfTime
from azopg.method.kinds import TaskKind
from azopg.method.tasks import Task, run_task
from azopg.plants.linear import LinearPlant
from azopg.plants.noisy import NoisyLinearPlant


class FakeClock:
    """Seconds that pass only when told (:meth:`advance`), or by ``tick`` on every reading."""

    def __init__(self, tick: float = 0.0) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now

    def advance(self, dt: float) -> None:
        self.now += max(dt, 0.0)


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    import time

    clock = FakeClock()
    monkeypatch.setattr(time, "monotonic", clock)
    monkeypatch.setattr(time, "perf_counter", clock)
    monkeypatch.setattr(time, "sleep", clock.advance)
    return clock


class TimedPlant:
    """A linear plant whose every rollout call takes ``per_call`` fake seconds; the first call from the fixed
    evaluation states (a check) after ``straggle_after`` fake seconds takes ``straggle`` more (one long probe).
    Records the fake time at which every call starts."""

    def __init__(self, plant: LinearPlant, clock: FakeClock, per_call: float = 0.01, straggle_after: float = np.inf,
                 straggle: float = 0.0) -> None:
        self.plant, self.clock, self.per_call = plant, clock, per_call
        self.straggle_after, self.straggle = straggle_after, straggle
        self.n, self.m = plant.n, plant.m
        self.returns_moments = True
        self.starts: list[float] = []
        self.straggled = False

    def initial_states(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.plant.initial_states(rng, size)

    def evaluation_states(self) -> np.ndarray:
        return self.plant.evaluation_states()

    def rollout(self, K: np.ndarray, x0: np.ndarray, tau: float, *, moments: bool = False) -> Any:
        self.starts.append(self.clock.now)
        res = self.plant.rollout(K, x0, tau, moments=moments)
        self.clock.advance(self.per_call)
        check = np.shape(x0) == np.shape(self.plant.evaluation_states())
        if check and not self.straggled and self.clock.now >= self.straggle_after:
            self.straggled = True
            self.clock.advance(self.straggle)
        return res


def _evaluate(K: np.ndarray, deadline: float | None) -> Task:
    return Task(7, 0, TaskKind.EVALUATE, K, 0, 1.0, 0.1, 4, "one-point", 3, deadline=deadline)


def test_a_task_stops_between_rollouts_at_its_deadline(chain3, fake_clock: FakeClock) -> None:
    """An evaluation (rollouts at ``tau``, then ``2 tau``) whose first rollout ends past the deadline runs no
    second one; with the deadline ahead, its report is bit for bit the one without a deadline."""
    plant = TimedPlant(LinearPlant(chain3), fake_clock, per_call=1.0)
    with pytest.raises(OutOfTime):
        run_task(plant, _evaluate(chain3.K0, deadline=0.5))
    assert plant.starts == [0.0]
    late = run_task(plant, _evaluate(chain3.K0, deadline=1e9))
    free = run_task(plant, _evaluate(chain3.K0, deadline=None))
    assert (late.cost, late.cost2) == (free.cost, free.cost2)
    assert len(plant.starts) == 5


def test_a_long_noisy_rollout_stops_between_grid_chunks(chain3, fake_clock: FakeClock) -> None:
    """Every reading of the fake clock takes a second: a rollout of many grid chunks is cut after about
    ``deadline`` chunks; one whose deadline is far draws exactly what it draws without one."""
    problem = chain3.with_noise(W=0.1 * np.eye(chain3.n), V=0.01 * np.eye(chain3.n), dt=0.01)
    K = np.broadcast_to(chain3.K0, (64, *chain3.K0.shape))
    x0 = np.zeros((64, chain3.n))
    tau = 200.0  # 20,000 grid steps, in chunks of 1,365
    fake_clock.tick = 1.0
    with pytest.raises(OutOfTime):
        _noisy_task(problem, K, x0, tau, deadline=3.0)
    assert fake_clock.now < 10.0  # cut after a few chunks, not after the rollout's many
    fake_clock.tick = 0.0
    far = _noisy_task(problem, K, x0, tau, deadline=1e12)
    free = NoisyLinearPlant(problem, np.random.default_rng(1)).rollout(K, x0, tau)
    np.testing.assert_array_equal(far.cost, free.cost)


def _noisy_task(problem: azopg.LQRProblem, K: np.ndarray, x0: np.ndarray, tau: float, deadline: float) -> Any:
    from azopg.plants.deadline import deadline_scope

    with deadline_scope(deadline):
        return NoisyLinearPlant(problem, np.random.default_rng(1)).rollout(K, x0, tau)


@pytest.mark.parametrize("backend", ["serial"])
def test_a_straggling_check_is_cut_and_the_run_ends_at_the_budget(chain3, fake_clock: FakeClock,
                                                                   backend: str) -> None:
    """A check whose first rollout takes 1000 s (fake) at 0.8 s of a 2 s budget, after the calibration (0.4 s): no
    rollout starts past the budget (neither the check's second rollout nor the closing measurement), the run ends
    with status ``max_time`` and its gain costs no more than ``K0``. (Without the deadline, the check went on
    at 1000.8 s.)"""
    max_time = 2.0
    plant = TimedPlant(LinearPlant(chain3), fake_clock, per_call=0.01, straggle_after=0.8, straggle=1000.0)
    res = azopg.train(chain3, backend=backend, plant_factory=lambda: plant, max_time=max_time, seed=1,
                      target_gap=1e-12)
    assert plant.straggled  # the long probe happened (else the test shows nothing)
    assert max(plant.starts) < max_time
    assert res.status == "max_time"
    assert chain3.cost(res.K) <= chain3.cost(chain3.K0)


def test_a_worker_answers_a_cut_task_with_a_cut_marker(chain3) -> None:
    """A worker (process or Ray actor) whose task passed its deadline answers ``cut``, which the master drops
    (not a failure of the plant); a deadline already passed holds whatever the machine's speed."""
    import time

    from azopg.engine.inflight import TaskFailed, run_or_fail

    answer = run_or_fail(LinearPlant(chain3), _evaluate(chain3.K0, deadline=time.monotonic() - 1.0))
    assert isinstance(answer, TaskFailed) and answer.cut
    assert not isinstance(run_or_fail(LinearPlant(chain3), _evaluate(chain3.K0, deadline=None)), TaskFailed)


def test_a_run_cut_at_its_deadline_replays_exactly(chain3, fake_clock: FakeClock, tmp_path) -> None:
    """The straggling run above, written and replayed (no clock in a replay): the same gain, bit for bit."""
    from azopg.run.output import write_run
    from azopg.run.replay import replay_run

    plant = TimedPlant(LinearPlant(chain3), fake_clock, per_call=0.01, straggle_after=0.8, straggle=1000.0)
    res = azopg.train(chain3, backend="serial", plant_factory=lambda: plant, max_time=2.0, seed=1,
                      target_gap=1e-12)
    assert plant.straggled and res.status == "max_time"
    write_run(tmp_path, res, plot=False)
    K, K_recorded, events = replay_run(tmp_path)
    assert events == len(res.arrivals) > 0
    assert np.array_equal(K_recorded, res.K)
    assert np.array_equal(K, K_recorded)


def test_worker_processes_drop_a_cut_task(chain3) -> None:
    """A task sent once the budget is spent is cut in its worker process, whose answer the master drops: no
    report, no failure, and the worker is free again (polled until it is: no verdict on how soon)."""
    import functools

    from azopg.engine.backends import ExecutorOptions, make_executor

    ex = make_executor("async", functools.partial(LinearPlant, chain3), 1, ExecutorOptions())
    try:
        ex.start()
        ex.budget = 0.0
        ex.submit(_evaluate(chain3.K0, deadline=None))  # stamped with the (spent) budget's end
        for _ in range(240):
            assert ex.next_report(timeout=0.5) is None
            if ex.idle_workers() == [0]:
                break
        assert ex.idle_workers() == [0]
    finally:
        ex.close()
