"""Network namespace harness: "nodes" joined by an underlay veth and a VXLAN overlay, "pods" behind them.

The layout copies what Calico builds on a node. Each pod has an `eth0` with a /32 address and a default
route to 169.254.1.1 over its veth. The node routes each pod's /32 to the node end of that veth, and
another node's pods over the VXLAN device. A stub DNS resolver and a TCP listener stand in
for CoreDNS and the API server. Everything needs root; `Topology.close` removes every namespace,
device and file it created.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import shlex
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = Path("/run/netns")
# `ip netns exec NS` bind-mounts files from here over /etc, so each pod gets its own resolv.conf.
NETNS_ETC_DIR = Path("/etc/netns")
# Calico's pods reach their node through this link-local next hop, and the node replies to its ARP requests.
POD_GATEWAY = "169.254.1.1"
VXLAN_ID = 4096
VXLAN_PORT = 4789
# Headroom VXLAN adds over IPv4: outer IPv4 (20), UDP (8), VXLAN (8) and inner Ethernet (14) headers.
VXLAN_OVERHEAD = 50
COMMAND_TIMEOUT = 20


class NetnsError(RuntimeError):
    """A command that builds the topology failed."""


def run(*command: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a command and return its stdout. Raise NetnsError with its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise NetnsError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


def ip(arguments: str) -> str:
    """Run `ip` with a space-separated argument string, for example "-n ns link set lo up"."""
    return run("ip", *shlex.split(arguments))


def missing_requirements() -> str | None:
    """Return why namespace tests cannot run on this machine, or None when they can."""
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns failed: {os.strerror(errno)}")


@contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Move the calling thread into a network namespace for the duration of the block.

    A socket created inside the block stays in that namespace after the thread moves back, which is
    how the stub servers below listen on addresses that exist only in the topology.
    """
    original = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    target = os.open(NETNS_RUN_DIR / namespace, os.O_RDONLY)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(original)
    finally:
        os.close(target)
        os.close(original)


# --- Stub servers ----------------------------------------------------------------------------------------

DNS_NXDOMAIN = 3


def _read_question(packet: bytes) -> tuple[str, int, int]:
    """Return the first question's name, type and the offset just past it."""
    labels: list[str] = []
    offset = 12
    while packet[offset] != 0:
        length = packet[offset]
        labels.append(packet[offset + 1 : offset + 1 + length].decode("ascii"))
        offset += 1 + length
    offset += 1
    qtype = struct.unpack("!H", packet[offset : offset + 2])[0]
    return ".".join(labels).lower(), qtype, offset + 4


@dataclass
class StubResolver:
    """A UDP DNS server that resolves A queries from a fixed table. Any other name gets NXDOMAIN.

    With `silent` set it reads queries and sends no response, like a resolver that is down.
    """

    namespace: str
    address: str
    records: Mapping[str, str]
    """Fully qualified name (no trailing dot) to IPv4 address."""
    silent: bool = False
    queries: list[str] = field(default_factory=list)
    """Every name asked, in order."""

    def __post_init__(self) -> None:
        with inside(self.namespace):
            self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind((self.address, 53))
        # Closing a socket does not wake a thread blocked reading it, so the thread polls a stop flag.
        self._socket.settimeout(0.1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"dns-{self.address}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                packet, client = self._socket.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                name, qtype, end = _read_question(packet)
            except (IndexError, UnicodeDecodeError):
                continue
            self.queries.append(name)
            if self.silent:
                continue
            self._socket.sendto(self._answer(packet, name, qtype, end), client)

    def _answer(self, packet: bytes, name: str, qtype: int, end: int) -> bytes:
        query_id = packet[:2]
        address = self.records.get(name)
        question = packet[12:end]
        # Flags: a response (QR), authoritative, recursion desired copied, recursion available.
        flags = 0x8400 | (struct.unpack("!H", packet[2:4])[0] & 0x0100) | 0x0080
        if address is None:
            header = query_id + struct.pack("!HHHHH", flags | DNS_NXDOMAIN, 1, 0, 0, 0)
            return header + question
        if qtype != 1:
            return query_id + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + question
        # The answer's name points back at the question (offset 12), type A, class IN, TTL 30 s.
        answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + ipaddress.IPv4Address(address).packed
        return query_id + struct.pack("!HHHHH", flags, 1, 1, 0, 0) + question + answer

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._socket.close()


class TcpListener:
    """A listening TCP socket. The kernel completes each handshake, so a connect succeeds."""

    def __init__(self, namespace: str, address: str, port: int) -> None:
        with inside(namespace):
            self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((address, port))
        self._socket.listen(16)

    def close(self) -> None:
        self._socket.close()


# --- Topology --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """A pod namespace behind a node."""

    name: str
    """Pod name, also used in reports."""
    namespace: str
    """Network namespace name."""
    node: str
    """Name of the node it runs on."""
    address: str
    mtu: int


@dataclass(frozen=True)
class Node:
    """A node namespace with its underlay and VXLAN addresses."""

    name: str
    namespace: str
    underlay_address: str
    vtep_address: str
    """Address of the node's VXLAN device, the next hop other nodes use for this node's pods."""


class Topology:
    """Nodes on one underlay link with a VXLAN overlay between them, and pods added per test case.

    The VXLAN devices set don't-fragment on the outer header: an encapsulated packet larger than the
    underlay MTU is dropped without any ICMP reaching the pod, the "no reply" a too-large pod MTU gets
    on underlays that drop or cannot carry fragments.
    """

    def __init__(self, prefix: str, underlay_mtu: int = 1500) -> None:
        self.prefix = prefix
        self.underlay_mtu = underlay_mtu
        self.nodes: dict[str, Node] = {}
        self.pods: dict[str, Pod] = {}
        self._namespaces: list[str] = []
        self._servers: list[StubResolver | TcpListener] = []
        self._routed_prefixes: set[tuple[str, str]] = set()

    def build(self, node_addresses: Sequence[tuple[str, str, str]]) -> None:
        """Create two nodes, each given as (name, underlay address, VXLAN address), on one underlay link.

        Two nodes are what the scenarios need: one for same-node and one for other-node traffic.
        """
        if len(node_addresses) != 2:
            raise ValueError("the topology joins exactly two nodes with one veth")
        for name, underlay, vtep in node_addresses:
            namespace = self._add_namespace(f"{self.prefix}-{name}")
            self.nodes[name] = Node(name, namespace, underlay, vtep)
            run("ip", "netns", "exec", namespace, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            # The pods' gateway is a local address of every node, so the node replies to its ARP requests.
            ip(f"-n {namespace} address add {POD_GATEWAY}/32 dev lo")
        first, second = (self.nodes[name] for name, _, _ in node_addresses)
        mtu = self.underlay_mtu
        ip(f"link add ul0 netns {first.namespace} mtu {mtu} type veth peer name ul0 netns {second.namespace} mtu {mtu}")
        for node, peer in ((first, second), (second, first)):
            ns = node.namespace
            ip(f"-n {ns} address add {node.underlay_address}/24 dev ul0")
            ip(f"-n {ns} link set ul0 up")
            ip(
                f"-n {ns} link add vxlan0 type vxlan id {VXLAN_ID} local {node.underlay_address} "
                f"remote {peer.underlay_address} dstport {VXLAN_PORT} df set"
            )
            # The device's own MTU is the underlay's, so the underlay, not the device, limits a pod's packets.
            ip(f"-n {ns} link set vxlan0 mtu {mtu} up")
            ip(f"-n {ns} address add {node.vtep_address}/32 dev vxlan0")

    def _add_namespace(self, name: str) -> str:
        run("ip", "netns", "add", name)
        self._namespaces.append(name)
        ip(f"-n {name} link set lo up")
        return name

    def add_pod(self, name: str, node: str, address: str, mtu: int, resolv_conf: str | None = None) -> Pod:
        """Create a pod behind `node` with a /32 `address` and `mtu` on both ends of its veth."""
        host = self.nodes[node]
        namespace = self._add_namespace(f"{self.prefix}-{name}")
        host_end = f"c{len(self.pods):02d}{name}"[:15]
        ip(f"link add {host_end} netns {host.namespace} mtu {mtu} type veth peer name eth0 netns {namespace} mtu {mtu}")
        ip(f"-n {namespace} address add {address}/32 dev eth0")
        ip(f"-n {namespace} link set eth0 up")
        ip(f"-n {namespace} route add {POD_GATEWAY} dev eth0 scope link")
        ip(f"-n {namespace} route add default via {POD_GATEWAY} dev eth0")
        # The check pod's spec sets this range, so iputils ping uses an ICMP datagram socket there.
        # The same setting here makes the tests take the same path through ping.
        run("ip", "netns", "exec", namespace, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
        ip(f"-n {host.namespace} link set {host_end} up")
        ip(f"-n {host.namespace} route add {address}/32 dev {host_end}")
        for other in self.nodes.values():
            if other.name != node:
                self._route_over_vxlan(other, host, address)
        pod = Pod(name, namespace, node, address, mtu)
        self.pods[name] = pod
        if resolv_conf is not None:
            self.set_resolv_conf(name, resolv_conf)
        return pod

    def set_resolv_conf(self, pod: str, text: str) -> None:
        """Write the resolv.conf that commands run with `exec_in(pod, ...)` see as /etc/resolv.conf."""
        directory = NETNS_ETC_DIR / self.pods[pod].namespace
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resolv.conf").write_text(text, encoding="utf-8")

    def _route_over_vxlan(self, source: Node, destination: Node, address: str) -> None:
        """Route `address`, a pod of `destination`, from `source` through the VXLAN device."""
        ip(f"-n {source.namespace} route add {address}/32 via {destination.vtep_address} dev vxlan0 onlink")

    def limit_route_mtu(self, node: str, address: str, mtu: int) -> None:
        """Lock `node`'s route to `address` at `mtu`, so the node replies to larger DF packets with ICMP."""
        host = self.nodes[node]
        route = ip(f"-n {host.namespace} route show {address}/32").split()
        ip(f"-n {host.namespace} route replace {address}/32 {' '.join(route[1:])} mtu lock {mtu}")

    def add_local_address(self, node: str, address: str) -> None:
        """Give `node` an extra /32 address, for a stub server its pods can reach."""
        ip(f"-n {self.nodes[node].namespace} address add {address}/32 dev lo")

    def serve_dns(self, node: str, address: str, records: Mapping[str, str], silent: bool = False) -> StubResolver:
        resolver = StubResolver(self.nodes[node].namespace, address, records, silent)
        self._servers.append(resolver)
        return resolver

    def listen_tcp(self, node: str, address: str, port: int) -> TcpListener:
        listener = TcpListener(self.nodes[node].namespace, address, port)
        self._servers.append(listener)
        return listener

    def exec_in(self, pod: str, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command inside a pod's namespace, with the pod's resolv.conf, and return the result."""
        return subprocess.run(
            ["ip", "netns", "exec", self.pods[pod].namespace, *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def close(self) -> None:
        """Stop the servers and delete every namespace (and so every device) and resolv.conf created."""
        for server in self._servers:
            server.close()
        for namespace in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, check=False)
            shutil.rmtree(NETNS_ETC_DIR / namespace, ignore_errors=True)
        self._namespaces.clear()
