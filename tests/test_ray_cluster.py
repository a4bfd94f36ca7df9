"""The ``ray`` backend on a real multi-node cluster: a head and three worker nodes started on
this machine with Ray's own :class:`ray.cluster_utils.Cluster` (separate raylets, each with
its own resources, every listener on 127.0.0.1), joined through ``ray_address``.

The head has no CPUs and each node one, so six actors of half a CPU each fill the three
nodes exactly: where they run is forced by the resources and checked from Ray (each actor's
runtime context), not assumed. The cluster is module-wide and stopped by
``Cluster.shutdown`` (only the processes it started); the address file Ray writes for
``ray.init()`` is put back as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter

import pytest

import azopg
from azopg.engine.ray_session import CPU_QUANTUM, LOOPBACK_ENV, actor_cpus

os.environ.setdefault(LOOPBACK_ENV, "0")  # before Ray's first import: its nodes stay on 127.0.0.1
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'azopg[ray]')")

#: Per node: one CPU (a logical resource: the machine's cores are shared by every node) and a small store.
NODE = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 80 * 1024**2}
WORKERS = 6


# ---------------------------------------------------------------- actor_cpus (no Ray needed)
@pytest.mark.parametrize(("nodes", "workers"), [([1, 1, 1], 6), ([1, 1, 1], 7), ([2, 1], 4), ([4], 2),
                                                ([0, 1, 1], 5), ([3, 1, 1], 64)])
def test_actor_cpus_is_the_largest_share_with_which_every_actor_fits(nodes, workers):
    x = actor_cpus(nodes, workers)
    fits = lambda share: sum(int(c / share + 1e-9) for c in nodes)
    assert 0 < x <= 1
    assert fits(x) >= workers  # all of them are placed at once
    assert x == 1 or fits(x + CPU_QUANTUM) < workers  # and no larger share would do


def test_actor_cpus_is_one_cpu_while_the_nodes_have_room_and_splits_a_node_exactly():
    assert actor_cpus([2, 2], 4) == 1.0
    assert actor_cpus([1, 1, 1], 6) == 0.5
    assert actor_cpus([1, 1, 1], 7) == pytest.approx(1 / 3, abs=CPU_QUANTUM)  # 7 / 3 = 2.33 would leave one out


# ---------------------------------------------------------------------------- the cluster
@pytest.fixture(scope="module")
def cluster():
    from ray._private.utils import read_ray_address, write_ray_address
    from ray.cluster_utils import Cluster

    previous = read_ray_address()
    c = Cluster(initialize_head=True, head_node_args={**NODE, "num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(3):
            c.add_node(**NODE)
        c.wait_for_nodes()
        yield c
    finally:
        if ray.is_initialized():
            ray.shutdown()
        c.shutdown()
        if previous is not None:  # another instance of this machine wrote it: theirs again
            with contextlib.suppress(OSError):
                write_ray_address(previous)


@pytest.fixture(scope="module")
def problem():
    return azopg.get_problem("chain3")


def _our_actors() -> dict[str, object]:
    """The run's worker actors by name (the one namespace of this driver's live run)."""
    found = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith("azopg-worker-")]
    namespaces = {a["namespace"] for a in found}
    assert len(namespaces) == 1, found
    return {a["name"]: ray.get_actor(a["name"], namespace=a["namespace"]) for a in found}


def _where(actors: dict[str, object], timeout: float = 90) -> dict[str, tuple[int, str, int]]:
    """(pid, node id, tasks run) of each actor, from inside it; asked again while Ray restarts
    one (a call to a restarting actor fails at once)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return dict(zip(actors, ray.get([a.where.remote() for a in actors.values()], timeout=timeout),
                            strict=True))
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _back(actors: dict[str, object], names: list[str]) -> bool:
    """Whether every actor in ``names`` answers now (Ray found it a node), without waiting for a restart."""
    try:
        ray.get([actors[n].where.remote() for n in names], timeout=5)
    except (ray.exceptions.RayError, TimeoutError):
        return False
    return True


def _worker_nodes(c) -> set[str]:
    return {n.node_id for n in c.worker_nodes}


@pytest.mark.slow
def test_actors_are_spread_over_the_nodes_and_every_node_runs_tasks(cluster, problem, fixed):
    seen: dict[str, dict] = {}

    def look(master):
        if "where" not in seen and master.updates >= 60:
            seen["where"] = _where(_our_actors())

    res = azopg.train(problem, backend="ray", workers=WORKERS, ray_address=cluster.address, seed=0,
                      target_gap=1e-2, max_time=120, progress=look, method="two-point", **fixed)
    assert res.status == "converged", res.status
    where = seen["where"]
    assert len(where) == WORKERS
    per_node = Counter(node for _, node, _ in where.values())
    # none on the head (no CPUs there), two on each of the three nodes (half a CPU each)
    assert set(per_node) == _worker_nodes(cluster), (per_node, _worker_nodes(cluster))
    assert set(per_node.values()) == {2}
    assert all(calls > 0 for _, _, calls in where.values())  # every actor, so every node, ran tasks
    assert res.stats["workers_replaced"] == 0
    assert not ray.is_initialized()  # the driver disconnected; the cluster is still up
    assert cluster.remaining_processes_alive()


@pytest.mark.slow
def test_a_lost_node_is_logged_the_run_goes_on_and_a_node_added_later_is_used(cluster, problem, fixed, caplog):
    caplog.set_level(logging.INFO, logger="azopg")
    seen: dict[str, object] = {}

    def chaos(master):
        if "removed" not in seen and master.updates >= 30:
            where = _where(_our_actors())
            victim = next(n for n in cluster.worker_nodes if n.node_id in {v[1] for v in where.values()})
            seen["displaced"] = {int(name.rsplit("-", 1)[1]) for name, v in where.items() if v[1] == victim.node_id}
            seen["victim"] = victim.node_id
            cluster.remove_node(victim)  # its raylet and both actors' processes are killed
            seen["removed"] = master.updates
        elif "removed" in seen and "added" not in seen and master.updates >= seen["removed"] + 100:
            # the run went on with the four actors left; the other two usually cannot be placed (no room),
            # but Ray may already have found them room on a surviving node
            actors = _our_actors()
            names = [f"azopg-worker-{w}" for w in sorted(seen["displaced"])]
            seen["back_before_add"] = _back(actors, names)
            new = cluster.add_node(**NODE)
            seen["added"], seen["new"] = master.updates, new.node_id
            seen["replaced_on"] = {n: _where({n: actors[n]})[n][1] for n in names}  # waits for their restart
        elif "added" in seen and "used" not in seen and master.updates >= seen["added"] + 100:
            actors = _our_actors()
            seen["used"] = {n: _where({n: actors[n]})[n] for n in seen["replaced_on"]}

    t0 = time.monotonic()
    res = azopg.train(problem, backend="ray", workers=WORKERS, ray_address=cluster.address, seed=1,
                      target_gap=1e-2, max_time=240, progress=chaos, method="two-point", **fixed)
    assert "used" in seen, (seen, res.status, time.monotonic() - t0)
    assert res.status == "converged", res.status
    assert res.relative_gap <= 1e-2
    displaced = seen["displaced"]
    assert len(displaced) == 2
    # the loss: one worker-lost row and one warning line per actor of the node, naming the node
    lost = [h for h in res.history if h.event == "worker-lost"]
    assert sorted(h.worker for h in lost) == sorted(displaced), lost
    assert res.stats["workers_replaced"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    gone = [m for m in warnings if f"with its node {seen['victim'][:12]}" in m]
    assert len(gone) == 2, warnings
    # their tasks went on (resent to live actors, then on their restarted actors): updates from those workers
    after = [h for h in res.history if h.event == "update" and h.update > seen["removed"]]
    assert displaced <= {h.worker for h in after}
    assert any("is back" in r.getMessage() for r in caplog.records), caplog.text
    assert seen["victim"] not in set(seen["replaced_on"].values()), seen
    if not seen["back_before_add"]:  # they waited for room: the node added later got both, and they ran there
        assert set(seen["replaced_on"].values()) == {seen["new"]}, seen
        assert all(node == seen["new"] and calls > 0 for _, node, calls in seen["used"].values()), seen
