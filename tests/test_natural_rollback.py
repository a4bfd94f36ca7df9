"""A rollback of the natural rule restores the anchor's state moment ``Xh`` with its gain.

The moments of rollouts at a discarded gain are not the anchor's: a slowly unstable update leaves estimates
whose rollouts grew without blowing up, and their moments used to stay in ``Xh`` and whiten every later step.
"""

from __future__ import annotations

import numpy as np

from azopg.method.kinds import Event
from azopg.method.rules import make_rule
from azopg.method.safeguards import Verdict
from azopg.settings import Settings


def test_a_rollback_restores_the_anchors_moments_and_an_accept_keeps_the_new_ones(chain3):
    rule = make_rule(np.array(chain3.K0), Settings(method="natural"), R=np.array(chain3.R))
    n = chain3.n
    X0 = np.diag(np.arange(1.0, n + 1))
    rule.whitening.load(X0)
    rule._anchor_X = rule.whitening.X()  # as at the end of the calibration
    rule.whitening.add(1e6 * np.eye(n) * 20, 20)  # the moments of a gain that is then rolled back
    assert not np.allclose(rule.whitening.X(), X0)
    rule.apply_verdict(Verdict(Event.CHECK_REJECT, 0, 0, rule.version, alpha=0.5, rejected=1, rollback=True))
    np.testing.assert_array_equal(rule.whitening.X(), X0)
    np.testing.assert_allclose(rule.factors_at(rule.version).M, rule.whitening.factors().M)  # refreshed from it
    X1 = 2.0 * np.eye(n)
    rule.whitening.load(X1)
    rule.apply_verdict(Verdict(Event.CHECK_ACCEPT, 0, 0, rule.version, alpha=1.2, accepted=1))
    rule.whitening.add(1e6 * np.eye(n) * 20, 20)
    rule.apply_verdict(Verdict(Event.ROLLBACK_BLOWUP, 0, 0, rule.version, alpha=0.5, rollback=True))
    np.testing.assert_array_equal(rule.whitening.X(), X1)


def test_the_anchors_moments_survive_a_checkpoint(chain3):
    rule = make_rule(np.array(chain3.K0), Settings(method="natural"), R=np.array(chain3.R))
    X0 = np.diag(np.arange(1.0, chain3.n + 1))
    rule.whitening.load(X0)
    rule._anchor_X = rule.whitening.X()
    rule.whitening.add(np.eye(chain3.n) * 20, 20)
    again = make_rule(np.array(chain3.K0), Settings(method="natural"), R=np.array(chain3.R))
    again.load_state(rule.state_dict())
    again.apply_verdict(Verdict(Event.CHECK_REJECT, 0, 0, again.version, alpha=0.5, rejected=1, rollback=True))
    np.testing.assert_allclose(again.whitening.X(), X0)
