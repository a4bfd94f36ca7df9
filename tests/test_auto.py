"""``method="auto"``: resolved once per plant as documented, saved as given, resolved identically
on resume and replay; and every rule reaches gap 1e-6 with gain error 1e-3 on small problems."""

from __future__ import annotations

import json

import numpy as np
import pytest

import azopg
from _support import BlackBoxPlant
from azopg.method.auto import PI_MAX_COST_NOISE, choose_method, resolve_settings
from azopg.method.rules import make_rule
from azopg.run.output import write_run
from azopg.run.replay import replay_run
from azopg.settings import Settings


def test_auto_is_the_default_and_is_resolved_per_plant(chain3):
    assert Settings().method == "auto"
    linear, black_box = azopg.LinearPlant(chain3), BlackBoxPlant(chain3)
    assert azopg.plants.base.returns_moments(linear) and not azopg.plants.base.returns_moments(black_box)
    assert resolve_settings(Settings(), linear).method == "policy-iteration"
    assert resolve_settings(Settings(), black_box).method == "two-point"
    noisy = Settings(cost_noise=2 * PI_MAX_COST_NOISE)
    assert resolve_settings(noisy, linear).method == "natural"
    assert resolve_settings(noisy, black_box).method == "two-point"
    assert resolve_settings(Settings(cost_noise=PI_MAX_COST_NOISE), linear).method == "policy-iteration"
    # moments that are not a linear model's exact ones (sampled, nonlinear): natural, not the regression
    sampled = azopg.CallablePlant(lambda K, x0, tau, rng: (0.0, np.zeros((6, 6)), x0), n=6, m=3, returns_moments=True)
    assert resolve_settings(Settings(), sampled).method == "natural"
    sampled.exact_moments = True  # a plant may declare its moments exact
    assert resolve_settings(Settings(), sampled).method == "policy-iteration"
    for method in ("two-point", "one-point", "natural", "policy-iteration"):  # a concrete rule is kept
        assert choose_method(Settings(method=method, cost_noise=0.1), False) == method
    with pytest.raises(azopg.SettingsError, match="resolved"):
        make_rule(np.array(chain3.K0), Settings(), R=np.array(chain3.R))


def test_auto_run_records_the_concrete_rule_and_the_given_auto(chain3, tmp_path):
    res = azopg.train(chain3, seed=2, backend="simulated", workers=3, target_gap=1e-5, max_rollouts=20_000,
                      latency_model="exponential", out_dir=tmp_path / "run")
    assert res.status == "converged"
    assert res.settings["method"] == "policy-iteration" and res.given_settings["method"] == "auto"
    assert {h.event for h in res.history} >= {"update"}
    write_run(tmp_path / "run", res, plot=False)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["settings"]["method"] == "policy-iteration" and saved["given_settings"]["method"] == "auto"
    assert json.loads((tmp_path / "run" / "checkpoint.json").read_text())["settings"]["method"] == "auto"
    K, K_recorded, events = replay_run(tmp_path / "run")  # replay resolves "auto" the same way
    assert events == len(res.arrivals) and np.array_equal(K, K_recorded) and np.array_equal(K_recorded, res.K)


def test_auto_on_a_black_box_plant_runs_the_paper_rule(chain3):
    res = azopg.train(BlackBoxPlant(chain3), K0=chain3.K0, seed=0, max_updates=3)
    assert res.settings["method"] == "two-point" and res.given_settings["method"] == "auto"
    two = azopg.train(BlackBoxPlant(chain3), K0=chain3.K0, seed=0, max_updates=3, method="two-point")
    assert np.array_equal(res.K, two.K)  # the same run, bit for bit


def test_resume_resolves_auto_identically(chain3, tmp_path):
    from _support import Interrupter

    out = tmp_path / "run"
    first = azopg.train(chain3, seed=1, target_gap=1e-6, max_time=60, out_dir=out, rollout_latency=0.002,
                        progress=Interrupter(1))
    assert first.status == "interrupted" and first.settings["method"] == "policy-iteration"
    res = azopg.resume(out)
    assert res.status == "converged" and res.stats["resumes"] == 1
    assert res.settings["method"] == "policy-iteration" and res.given_settings["method"] == "auto"
    assert chain3.relative_gap(res.K) <= 1e-6


@pytest.mark.parametrize("name", ["chain3", "ac17"])
@pytest.mark.parametrize("method", ["two-point", "natural", "policy-iteration"])
def test_every_rule_reaches_gap_and_gain_error_targets(method, name):
    p = azopg.get_problem(name)
    res = azopg.train(p, method=method, target_gap=1e-6, target_gain_error=1e-3, max_rollouts=60_000)
    assert res.status == "converged", (res.status, res.relative_gap, res.gain_error)
    assert p.relative_gap(res.K) <= 1e-6
    assert np.linalg.norm(res.K - p.optimal_gain) <= 1e-3 * np.linalg.norm(p.optimal_gain)


def test_auto_on_environments_trusts_only_exact_discrete_moments():
    gym = pytest.importorskip("gymnasium")
    from azopg.plants.discrete_env import DiscreteLinearEnv
    from azopg.plants.envs import LinearEnv, register_envs

    register_envs()
    d = azopg.get_problem("dean3")
    made = azopg.GymPlant(lambda: gym.make("azopg/Dean3-v0"), 3, 3, R=d.R)  # TimeLimit, OrderEnforcing, checker
    assert made.exact_moments and resolve_settings(Settings(), made).method == "policy-iteration"
    bare = azopg.GymPlant(lambda: DiscreteLinearEnv.from_problem(d), 3, 3)
    assert resolve_settings(Settings(), bare).method == "policy-iteration"
    # a wrapper that changes the rewards (or observations) breaks the identity: natural
    scaled = azopg.GymPlant(lambda: gym.wrappers.TransformReward(DiscreteLinearEnv.from_problem(d), lambda r: 2 * r),
                            3, 3)
    assert not scaled.exact_moments and resolve_settings(Settings(), scaled).method == "natural"
    # a dt makes the sums samples of an integral: natural, for the continuous env as well
    timed = azopg.GymPlant(lambda: DiscreteLinearEnv.from_problem(d), 3, 3, dt=0.1)
    assert not timed.exact_moments and resolve_settings(Settings(), timed).method == "natural"
    he1 = azopg.get_problem("he1")
    sampled = azopg.GymPlant(lambda: LinearEnv.from_problem(he1), he1.n, he1.m)
    assert not sampled.exact_moments and resolve_settings(Settings(), sampled).method == "natural"
    res = azopg.train(made, K0=d.K0, judge=d, seed=0, target_gap=1e-4, max_rollouts=5_000)
    assert res.settings["method"] == "policy-iteration" and d.relative_gap(res.K) <= 1e-4
