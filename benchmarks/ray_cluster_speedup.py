"""The Ray speedup study over a multi-node cluster on this machine.

Starts Ray's own :class:`ray.cluster_utils.Cluster` -- a head with no CPUs and ``--nodes``
worker nodes (separate raylets, all on 127.0.0.1) -- runs ``azopg speedup --backend ray
--ray-address <the cluster>`` over it in this process (the CLI's own code: table on stdout,
``speedup.csv`` and ``speedup.png`` in ``--out``), then shuts the cluster down (only the
processes it started). Each node counts ``ceil(max W / nodes)`` CPUs, so every actor gets
one CPU of Ray's accounting and the actors are spread over the nodes. Every other option
is passed on to ``azopg speedup``::

    python benchmarks/ray_cluster_speedup.py --workers 1,2,4,8,16,32,64 --rollout-latency 0.01 \\
        --batch 1 --target-gap 1e-2 --repeats 1 --out runs/ray-cluster-speedup
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: nodes on 127.0.0.1

import argparse
import math
import sys
import time

from azopg.cli import main as azopg_main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, help="worker nodes besides the head (default 3)")
    parser.add_argument("--workers", "-W", default="1,2,4,8,16,32,64", help="worker counts (as azopg speedup)")
    args, rest = parser.parse_known_args()
    from ray.cluster_utils import Cluster

    widest = max(int(w) for w in args.workers.split(","))
    node = {"num_cpus": math.ceil(widest / args.nodes), "node_ip_address": "127.0.0.1",
            "object_store_memory": 80 * 1024**2}
    t0 = time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(args.nodes):
            cluster.add_node(**node)
        cluster.wait_for_nodes()
        print(f"cluster at {cluster.address}: a head and {args.nodes} nodes of {node['num_cpus']} CPUs, "
              f"up in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return azopg_main(["speedup", "--backend", "ray", "--ray-address", cluster.address,
                           "--workers", args.workers, *rest])
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
