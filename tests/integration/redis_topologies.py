"""Real Redis topologies on free loopback ports: a Redis Cluster and a Sentinel set.

Each runs `redis-server` processes in a temp dir, with an ACL user (the default user off)
so the username and password travel the way production's do, and stops them on `stop()`.
`fail_over()` hands the primary's role over (or kills the primary) and returns once its
replica has taken over.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
from stacks import RUN_ID, Stack, _drop_databases

from feature_platform.devtools.launcher import free_port
from feature_platform.offline import tables as offline_tables

USER = "feature_platform"
MASTER = "mymaster"
CLUSTER = "redis_cluster"
SENTINEL = "redis_sentinel"


@dataclass
class Topology:
    kind: str
    directory: Path
    password: str
    addresses: list[int] = field(default_factory=list)
    """Ports the connection string lists: cluster seed nodes, or the sentinels."""
    data_ports: list[int] = field(default_factory=list)
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def overrides(self) -> dict[str, str]:
        """The dev stack's Redis settings (ci/env/dev.env) pointed at this topology."""
        first, *others = self.addresses
        return {
            "REDIS_TYPE": self.kind,
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(first),
            "REDIS_OTHER_NODES": "".join(f",127.0.0.1:{port}" for port in others),
            "REDIS_DB": "0",
            "REDIS_USERNAME": USER,
            "REDIS_PASSWORD": self.password,
            "REDIS_SENTINEL_MASTER": MASTER,
        }

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, username=USER, password=self.password, socket_timeout=2)

    def start_server(self, port: int, *args: str) -> None:
        workdir = self.directory / str(port)
        workdir.mkdir(exist_ok=True)
        acl = ["--user", "default", "off", "--user", USER, "on", f">{self.password}", "~*",
               "&*", "+@all", "--masteruser", USER, "--masterauth", self.password]  # fmt: skip
        argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                "--save", "", "--appendonly", "no", *acl, *args]  # fmt: skip
        log = (workdir / "redis.log").open("wb")
        self.processes[port] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        _until(lambda: self.node(port).ping(), f"redis-server on {port}")

    def primary_port(self) -> int:
        """The port of the primary the next fail_over() kills."""
        if self.kind == SENTINEL:
            _, port = self.sentinel().discover_master(MASTER)
            return int(port)
        # The primary of slot 0 (redis-cli --cluster create gives it to the first node).
        for address, node in self._cluster_nodes().items():
            flags = node["flags"]
            if "master" in flags and "fail" not in flags and ["0"] in _starts(node["slots"]):
                return int(address.split(":")[1])
        raise AssertionError("no primary serves slot 0")

    def primary_ports(self) -> list[int]:
        """Every primary's port: the cluster's three, or the one the sentinels name."""
        if self.kind == SENTINEL:
            return [self.primary_port()]
        nodes = self._cluster_nodes().items()
        return sorted(
            int(address.split(":")[1])
            for address, node in nodes
            if "master" in node["flags"] and "fail" not in node["flags"]
        )

    def _cluster_nodes(self) -> dict[str, dict[str, Any]]:
        """CLUSTER NODES, parsed: "host:port" -> flags, slots, ... as a live node sees it."""
        for port in self.processes:
            try:
                nodes: dict[str, dict[str, Any]] = self.node(port).execute_command("CLUSTER NODES")
            except redis.RedisError:
                continue
            return nodes
        raise AssertionError("no cluster node answers")

    def cluster_ok(self, port: int) -> bool:
        return bool(self.node(port).execute_command("CLUSTER INFO")["cluster_state"] == "ok")

    def sentinel(self) -> redis.Sentinel:
        return redis.Sentinel([("127.0.0.1", p) for p in self.addresses], socket_timeout=1)

    def settled(self) -> bool:
        """Ready to fail over: every replica in sync, every sentinel knows the others."""
        if self.kind == CLUSTER:
            return _cluster_ready(self)
        primary = self.primary_port()
        replicas = [p for p in self.data_ports if p != primary and p in self.processes]
        return all(_replica_linked(self.node(p)) for p in replicas) and all(
            len(redis.Redis(port=p).execute_command("SENTINEL", "SENTINELS", MASTER)) == 2
            and len(redis.Redis(port=p).execute_command("SENTINEL", "REPLICAS", MASTER)) >= 1
            for p in self.addresses
        )

    def settle(self) -> None:
        _until(self.settled, "the topology to settle", 30)

    def fail_over(self, graceful: bool = False, timeout_s: float = 30) -> tuple[int, int]:
        """Hand the primary's role to its replica (`CLUSTER FAILOVER` on the replica, or
        `SENTINEL FAILOVER`), or kill the primary once its replica holds every write; then
        wait for the promotion. (old, new) primary port."""
        self.settle()
        old = self.primary_port()
        self.node(old).execute_command("WAIT", 1, 5000)
        if not graceful:
            self.processes.pop(old).kill()
        elif self.kind == CLUSTER:
            primary_id = self._cluster_nodes()[f"127.0.0.1:{old}"]["node_id"]
            replica = next(
                int(address.split(":")[1])
                for address, node in self._cluster_nodes().items()
                if node["master_id"] == primary_id
            )
            self.node(replica).execute_command("CLUSTER FAILOVER")
        else:
            redis.Redis(port=self.addresses[0]).execute_command("SENTINEL", "FAILOVER", MASTER)
        if self.kind == CLUSTER:
            seed = next(p for p in self.processes if p in self.addresses)
            promoted = lambda: self.primary_port() != old and self.cluster_ok(seed)  # noqa: E731
        else:
            promoted = lambda: self.primary_port() != old  # noqa: E731
        _until(promoted, "the promotion of a replica", timeout_s)
        return old, self.primary_port()

    def stop(self) -> None:
        for process in self.processes.values():
            process.kill()
        for process in self.processes.values():
            process.wait()
        self.processes.clear()


def _until(check: object, what: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError, AssertionError) as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"waited {timeout_s:.0f}s for {what}: {last!r}")


def _ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = free_port()
        # The cluster bus listens on port + 10000.
        if port not in ports and port + 10000 < 65536:
            ports.append(port)
    return ports


@contextmanager
def cluster(directory: Path) -> Iterator[Topology]:
    """Three primaries and three replicas (`redis-cli --cluster create`)."""
    topology = Topology(CLUSTER, directory, secrets.token_hex(12))
    ports = _ports(6)
    try:
        for port in ports:
            topology.start_server(
                port, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "1000",
            )  # fmt: skip
        create = ["redis-cli", "--user", USER, "--pass", topology.password, "--no-auth-warning",
                  "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
                  "--cluster-replicas", "1", "--cluster-yes"]  # fmt: skip
        subprocess.run(create, check=True, capture_output=True, timeout=60)
        topology.addresses, topology.data_ports = ports[:2], ports
        _until(lambda: all(topology.cluster_ok(port) for port in ports), "the cluster to form")
        yield topology
    finally:
        topology.stop()


def _cluster_ready(topology: Topology) -> bool:
    if not all(topology.cluster_ok(port) for port in topology.processes):
        return False
    replicas = [
        int(address.split(":")[1])
        for address, node in topology._cluster_nodes().items()
        if "slave" in node["flags"]
    ]
    return len(replicas) == 3 and all(_replica_linked(topology.node(p)) for p in replicas)


def _replica_linked(node: redis.Redis) -> bool:
    info = cast(dict[str, Any], node.info("replication"))
    return bool(info.get("master_link_status") == "up")


def _starts(slots: list[list[str]]) -> list[list[str]]:
    return [[slot_range[0]] for slot_range in slots]


@contextmanager
def sentinel(directory: Path) -> Iterator[Topology]:
    """A primary, a replica and three sentinels (quorum 2)."""
    topology = Topology(SENTINEL, directory, secrets.token_hex(12))
    primary, replica, *sentinels = _ports(5)
    try:
        topology.start_server(primary)
        topology.start_server(replica, "--replicaof", "127.0.0.1", str(primary))
        for port in sentinels:
            conf = directory / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {directory}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
                f"sentinel auth-user {MASTER} {USER}\n"
                f"sentinel auth-pass {MASTER} {topology.password}\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 2000\n"
            )
            log = (directory / f"sentinel-{port}.log").open("wb")
            topology.processes[port] = subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
            )
        topology.addresses, topology.data_ports = sentinels, [primary, replica]
        # Failing over waits for the sentinels to find each other (settled()); the
        # stack deploys meanwhile.
        _until(topology.primary_port, "a sentinel to name the primary")
        yield topology
    finally:
        topology.stop()


def available() -> str | None:
    """Why the topologies cannot run here, or None."""
    missing = [tool for tool in ("redis-server", "redis-cli") if shutil.which(tool) is None]
    return f"needs {' and '.join(missing)}" if missing else None


def topology_stack(topology: Topology, name: str) -> Stack:
    """A dev stack on its own databases whose online store is `topology` (the whole of
    it: the topology is this test module's own)."""
    prefix = f"fpt_{RUN_ID}_{name}"
    overrides = {
        **topology.overrides(),
        "POSTGRES_PASSWORD": "",
        "REGISTRY_DB": f"{prefix}_registry",
        "OFFLINE_DB": f"{prefix}_offline",
    }
    stack = Stack("dev", overrides)
    settings = stack.settings()
    offline_tables.ensure_databases(settings, lambda _msg: None)
    stack.cleanups.append(
        lambda: _drop_databases(settings, [overrides["REGISTRY_DB"], overrides["OFFLINE_DB"]])
    )
    return stack
