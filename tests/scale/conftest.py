"""One real 2-node Ray cluster on 127.0.0.1 for every Ray test of the session (starting one costs seconds).

Ray turns a 127.0.0.1 address given to ``ray.init`` into the machine's interface address unless it believes it runs
without multi-machine support: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, set before Ray is imported, keeps every
connection on loopback. The cluster's processes are stopped through its own handle, never by name.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

#: Each node's resources: 2 logical CPUs (a read task and an actor, or two cells), loopback only.
NODE = {"num_cpus": 2, "node_ip_address": "127.0.0.1", "include_dashboard": False}


def free_port() -> int:
    """A free loopback port outside Ray's worker-port range (10002-19999): the kernel's ephemeral range."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RayCluster:
    """The running cluster (``ray.cluster_utils.Cluster``) and the driver's ``ray`` module, connected to it."""

    cluster: Any
    ray: Any

    def alive_nodes(self) -> list[dict[str, Any]]:
        """The nodes the cluster reports alive."""
        return [n for n in self.ray.nodes() if n["Alive"]]

    def lose_worker(self) -> None:
        """Kill one worker node's processes at once (no graceful drain), as a crashed machine would."""
        node = next(iter(self.cluster.worker_nodes))
        self.cluster.remove_node(node, allow_graceful=False)

    def replace_worker(self) -> None:
        """Add a worker node (after :meth:`lose_worker`) and wait until the cluster counts only living nodes."""
        self.cluster.add_node(**NODE)
        self.cluster.wait_for_nodes()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    """A head and one worker node, 2 CPUs each, on 127.0.0.1; the driver connected to it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        ray = pytest.importorskip("ray", reason="the Ray tests need the 'scale' extra (ray[data])")
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={**NODE, "gcs_server_port": free_port()})
        try:
            cluster.add_node(**NODE)
            ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
            running = RayCluster(cluster, ray)
            nodes = running.alive_nodes()
            assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
            yield running
        finally:
            ray.shutdown()
            cluster.shutdown()
