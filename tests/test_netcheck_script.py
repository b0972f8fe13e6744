"""netcheck.sh run for real: iputils ping, dig and TCP between network namespaces, and its await mode.

Two "nodes" share a 1500-byte underlay veth and a VXLAN overlay, and "pods" sit behind them as Calico
wires them. Each case gets its own pods, so one topology serves the whole module. A stub resolver and a TCP
listener on node-a stand in for CoreDNS and the API server's ClusterIP.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.netns import VXLAN_OVERHEAD, StubResolver, Topology, missing_requirements

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "components" / "scripts" / "netcheck.sh"

UNDERLAY_MTU = 1500
VXLAN_POD_MTU = UNDERLAY_MTU - VXLAN_OVERHEAD
POOL = "198.51.100.0/24"
API_SERVER = "192.0.2.100"
API_PORT = 6443
API_NAME = "kubernetes.default.svc.cluster.local"
RESOLVER = "192.0.2.53"
SILENT_RESOLVER = "192.0.2.54"
MISLEADING_RESOLVER = "192.0.2.55"
WRONG_ADDRESS = "192.0.2.99"
# Per-reply timeout and attempts given to the script: short, so the module stays fast.
TIMEOUT = 1
ATTEMPTS = 2
SCENARIOS = {
    "pod-ip-in-pool",
    "pod-mtu",
    "pod-to-pod-same-node",
    "pod-to-pod-other-node",
    "path-mtu-other-node",
    "dns",
    "pod-to-service",
}
REQUIRED_TOOLS = ("ip", "ping", "dig", "jq", "sysctl")


def resolv_conf(nameserver: str) -> str:
    """Return a resolv.conf like the one kubelet writes for a pod in the default namespace."""
    return (
        f"nameserver {nameserver}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    )


LINE = re.compile(r"^(PASS|FAIL|SKIP) (\S+) (.+?) -> (.+?): (.*)$")


@dataclass(frozen=True)
class Line:
    result: str
    scenario: str
    source: str
    destination: str
    detail: str


@dataclass
class Report:
    """One run of the script: exit status, output and the parsed scenario lines."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def lines(self) -> list[Line]:
        return [Line(*match.groups()) for match in map(LINE.match, self.stdout.splitlines()) if match]

    def scenarios(self, result: str) -> set[str]:
        return {line.scenario for line in self.lines if line.result == result}

    def of(self, scenario: str, result: str | None = None) -> list[Line]:
        return [line for line in self.lines if line.scenario == scenario and result in (None, line.result)]

    @property
    def summary(self) -> str:
        found = [line for line in self.stdout.splitlines() if line.startswith("summary: ")]
        assert len(found) == 1, f"expected one summary line:\n{self}"
        return found[0]

    def __str__(self) -> str:
        return f"exit status {self.returncode} after {self.seconds:.1f} s\n{self.stdout}{self.stderr}"


@dataclass
class Lab:
    """The module's topology and its stub resolvers by address."""

    topology: Topology
    resolvers: dict[str, StubResolver]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    # CI installs these; failing, not skipping, keeps a missing package from hiding the tests.
    assert not missing, f"missing tools {missing}: install iproute2 iputils-ping bind9-dnsutils jq procps"

    topo = Topology(f"nc{os.getpid() % 100000}", underlay_mtu=UNDERLAY_MTU)
    try:
        topo.build([("node-a", "192.0.2.1", "198.51.100.1"), ("node-b", "192.0.2.2", "198.51.100.129")])
        for address in (RESOLVER, SILENT_RESOLVER, MISLEADING_RESOLVER, API_SERVER):
            topo.add_local_address("node-a", address)
        resolvers = {
            RESOLVER: topo.serve_dns("node-a", RESOLVER, {API_NAME: API_SERVER}),
            SILENT_RESOLVER: topo.serve_dns("node-a", SILENT_RESOLVER, {API_NAME: API_SERVER}, silent=True),
            MISLEADING_RESOLVER: topo.serve_dns("node-a", MISLEADING_RESOLVER, {API_NAME: WRONG_ADDRESS}),
        }
        topo.listen_tcp("node-a", API_SERVER, API_PORT)

        good_dns = resolv_conf(RESOLVER)
        # Pods at the MTU the program computes for VXLAN on a 1500-byte network.
        topo.add_pod("check-1450", "node-a", "198.51.100.10", VXLAN_POD_MTU, good_dns)
        topo.add_pod("a-1450", "node-a", "198.51.100.11", VXLAN_POD_MTU)
        topo.add_pod("b-1450", "node-b", "198.51.100.140", VXLAN_POD_MTU)
        # Pods at the underlay's MTU: too large once VXLAN adds its 50 bytes.
        topo.add_pod("check-1500", "node-a", "198.51.100.20", UNDERLAY_MTU, good_dns)
        topo.add_pod("a-1500", "node-a", "198.51.100.21", UNDERLAY_MTU)
        topo.add_pod("b-1500", "node-b", "198.51.100.150", UNDERLAY_MTU)
        # Pods whose addresses come from outside the pool, as another CNI plugin would hand out.
        topo.add_pod("check-out", "node-a", "203.0.113.10", VXLAN_POD_MTU, good_dns)
        topo.add_pod("a-out", "node-a", "203.0.113.11", VXLAN_POD_MTU)
        topo.add_pod("b-out", "node-b", "203.0.113.140", VXLAN_POD_MTU)
        # A pod the sending node reaches over a narrower route, so the node replies with an ICMP error.
        topo.add_pod("b-narrow", "node-b", "198.51.100.141", VXLAN_POD_MTU)
        topo.limit_route_mtu("node-a", "198.51.100.141", VXLAN_POD_MTU - 50)
        # Check pods whose interface MTU differs from the configured pod MTU, as a pod created before
        # calico-node rolled out a new MTU has. Each is the source of one case only, so no cached path MTU
        # from another case changes what ping reports.
        topo.add_pod("check-wide", "node-a", "198.51.100.30", UNDERLAY_MTU, good_dns)
        topo.add_pod("check-narrow", "node-a", "198.51.100.31", VXLAN_POD_MTU - 50, good_dns)
        # A pod that ignores echo requests: every ping to it goes unanswered.
        topo.add_pod("b-silent", "node-b", "198.51.100.142", VXLAN_POD_MTU)
        topo.exec_in("b-silent", "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1").check_returncode()
        yield Lab(topo, resolvers)
    finally:
        topo.close()


def run_check(
    topo: Topology,
    tmp_path: Path,
    source: str,
    targets: Sequence[str],
    *,
    service: str = f"{API_SERVER}:{API_PORT}",
    mtu: int | None = None,
    extra: Sequence[str] = (),
) -> Report:
    """Run the scenarios from pod `source` against the pods `targets`, as the check pod does.

    `mtu` is the configured pod MTU, by default the source pod's interface MTU.
    """
    pods_file = tmp_path / "pods.txt"
    pods_file.write_text(
        "".join(f"{name} {topo.pods[name].node} {topo.pods[name].address}\n" for name in targets), encoding="utf-8"
    )
    pod = topo.pods[source]
    start = time.monotonic()
    # The same flags the Job passes, except for the short timeout and attempts.
    result = topo.exec_in(
        source,
        "bash", str(SCRIPT), "scenarios",
        "--self-name", source, "--self-node", pod.node, "--self-ip", pod.address,
        "--pods", str(pods_file), "--pool", POOL, "--mtu", str(mtu or pod.mtu), "--service", service,
        "--timeout", str(TIMEOUT), "--attempts", str(ATTEMPTS), *extra,
    )  # fmt: skip
    return Report(result.returncode, result.stdout, result.stderr, time.monotonic() - start)


def test_vxlan_mtu_passes_every_scenario(topology: Topology, tmp_path: Path) -> None:
    report = run_check(topology, tmp_path, "check-1450", ["a-1450", "b-1450"])

    assert report.returncode == 0, report
    assert report.scenarios("PASS") == SCENARIOS, report
    assert report.scenarios("FAIL") == set(), report
    assert report.scenarios("SKIP") == set(), report
    assert report.summary == "summary: 9 passed, 0 failed, 0 skipped; the network check passed"
    path_mtu = report.of("path-mtu-other-node")[0]
    assert "1422-byte don't-fragment ping: reply" in path_mtu.detail
    assert "1423-byte: rejected by the sending pod's kernel" in path_mtu.detail


def test_pod_mtu_1500_over_vxlan_fails_path_mtu(topology: Topology, tmp_path: Path) -> None:
    """VXLAN over a 1500-byte underlay with pods at MTU 1500: small pings pass, a 1472-byte DF ping does not."""
    report = run_check(topology, tmp_path, "check-1500", ["a-1500", "b-1500"])

    assert report.returncode == 1, report
    assert report.scenarios("FAIL") == {"path-mtu-other-node"}, report
    assert report.scenarios("PASS") == SCENARIOS - {"path-mtu-other-node"}, report
    failure = report.of("path-mtu-other-node", "FAIL")[0]
    assert failure.source == "check-1500 (node-a, 198.51.100.20)"
    assert failure.destination == "b-1500 (node-b, 198.51.100.150)"
    assert "expected a reply to a 1472-byte don't-fragment ping" in failure.detail
    assert f"no reply to {ATTEMPTS} attempts" in failure.detail
    assert "so lower calico:mtu or raise the nodes' MTU" in failure.detail
    assert report.summary.endswith("the network check failed (path-mtu-other-node)")


def test_pods_outside_pool_fail_pool_check(topology: Topology, tmp_path: Path) -> None:
    report = run_check(topology, tmp_path, "check-out", ["a-out", "b-out"])

    assert report.returncode == 1, report
    assert report.scenarios("FAIL") == {"pod-ip-in-pool"}, report
    failures = report.of("pod-ip-in-pool", "FAIL")
    assert [line.source.split()[0] for line in failures] == ["check-out", "a-out", "b-out"]
    assert f"expected an address inside {POOL}, got 203.0.113.140" in failures[2].detail
    assert report.scenarios("PASS") == SCENARIOS - {"pod-ip-in-pool"}, report


def test_one_node_skips_other_node_scenarios(topology: Topology, tmp_path: Path) -> None:
    report = run_check(topology, tmp_path, "check-1450", ["a-1450"], extra=["--expect-nodes", "1"])

    assert report.returncode == 0, report
    assert report.scenarios("SKIP") == {"pod-to-pod-other-node", "path-mtu-other-node"}, report
    for line in report.of("pod-to-pod-other-node") + report.of("path-mtu-other-node"):
        assert "every pingtest pod runs on node-a" in line.detail
        assert "another node is needed" in line.detail
    assert report.scenarios("PASS") == {"pod-ip-in-pool", "pod-mtu", "pod-to-pod-same-node", "dns", "pod-to-service"}
    assert report.summary == "summary: 6 passed, 0 failed, 2 skipped; the network check passed"


def test_pods_on_one_of_two_nodes_fail(topology: Topology, tmp_path: Path) -> None:
    """Two nodes are configured, but every pingtest pod runs on the check pod's node."""
    report = run_check(topology, tmp_path, "check-1450", ["a-1450"], extra=["--expect-nodes", "2"])

    assert report.returncode == 1, report
    assert report.scenarios("FAIL") == {"pod-to-pod-other-node", "path-mtu-other-node"}, report
    assert report.scenarios("SKIP") == set(), report
    for line in report.of("pod-to-pod-other-node") + report.of("path-mtu-other-node"):
        assert "calico:nodes lists 2 nodes but every pingtest pod runs on node-a" in line.detail
        assert "no packet crossed the overlay" in line.detail


def test_missing_pods_fail_not_skip(topology: Topology, tmp_path: Path) -> None:
    report = run_check(topology, tmp_path, "check-1450", [], extra=["--expect-pods", "3"])

    assert report.returncode == 1, report
    assert report.scenarios("FAIL") == {"pingtest-pods"}, report
    assert "expected 3 running pingtest pods with an IP, found 0" in report.of("pingtest-pods")[0].detail
    assert "no pingtest pod was found" in report.of("pod-to-pod-other-node")[0].detail


def test_check_pod_mtu_above_config_fails(topology: Topology, tmp_path: Path) -> None:
    """The check pod's eth0 is 1500 while calico:mtu is 1450: the 1423-byte probe must not count as rejected."""
    report = run_check(topology, tmp_path, "check-wide", ["b-1450"], mtu=VXLAN_POD_MTU)

    assert report.returncode == 1, report
    pod_mtu = report.of("pod-mtu")[0]
    assert pod_mtu.result == "FAIL", report
    assert f"expected MTU {VXLAN_POD_MTU} (calico:mtu), got {UNDERLAY_MTU}" in pod_mtu.detail
    assert "recreate the pods" in pod_mtu.detail
    path_mtu = report.of("path-mtu-other-node")[0]
    assert path_mtu.result == "FAIL", report
    assert f'rejected by the sending pod\'s kernel with "message too long, mtu={VXLAN_POD_MTU}"' in path_mtu.detail


def test_check_pod_mtu_below_config_fails(topology: Topology, tmp_path: Path) -> None:
    """The check pod's eth0 is 1400 while calico:mtu is 1450: the pod is stale, the overlay is fine."""
    narrow = VXLAN_POD_MTU - 50
    report = run_check(topology, tmp_path, "check-narrow", ["b-1450"], mtu=VXLAN_POD_MTU)

    assert report.returncode == 1, report
    pod_mtu = report.of("pod-mtu")[0]
    assert pod_mtu.result == "FAIL", report
    assert f"expected MTU {VXLAN_POD_MTU} (calico:mtu), got {narrow}" in pod_mtu.detail
    path_mtu = report.of("path-mtu-other-node")[0]
    assert path_mtu.result == "FAIL", report
    assert f"mtu={narrow}" in path_mtu.detail
    assert "lower calico:mtu" not in path_mtu.detail
    assert f"The check pod's interface MTU is {narrow}, not {VXLAN_POD_MTU}" in path_mtu.detail


def test_node_icmp_frag_needed_fails_path_mtu(topology: Topology, tmp_path: Path) -> None:
    report = run_check(topology, tmp_path, "check-1450", ["b-narrow"])

    assert report.of("pod-to-pod-other-node")[0].result == "PASS", report
    failure = report.of("path-mtu-other-node")[0]
    assert failure.result == "FAIL", report
    # The first DF ping gets the node's ICMP error. The kernel caches the lower MTU, so a later one fails
    # in the sending pod.
    assert "mtu = 1400" in failure.detail or "mtu=1400" in failure.detail, failure.detail


def test_no_reply_is_retried(topology: Topology, tmp_path: Path) -> None:
    report = run_check(topology, tmp_path, "check-1450", ["b-silent"])

    ping_failure = report.of("pod-to-pod-other-node")[0]
    assert ping_failure.result == "FAIL", report
    assert f"got no reply to {ATTEMPTS} attempts, {TIMEOUT} s each" in ping_failure.detail
    assert report.of("path-mtu-other-node")[0].result == "FAIL", report
    # Two probes went unanswered, each waited out every attempt.
    assert report.seconds >= 2 * ATTEMPTS * TIMEOUT, report


def test_spent_budget_still_prints_summary(topology: Topology, tmp_path: Path) -> None:
    """Each probe of the silent pod waits out every attempt; the rest must fail as not probed, not hang."""
    probe = ATTEMPTS * TIMEOUT
    deadline = probe + 1
    report = run_check(topology, tmp_path, "check-1450", ["b-silent", "b-1450"], extra=["--deadline", str(deadline)])

    assert report.returncode == 1, report
    assert report.summary.startswith("summary: "), report
    assert f"got no reply to {ATTEMPTS} attempts" in report.of("pod-to-pod-other-node")[0].detail
    not_probed = [line for line in report.lines if line.detail.startswith("not probed: the time budget")]
    assert {line.scenario for line in not_probed} == {
        "pod-to-pod-other-node",
        "path-mtu-other-node",
        "dns",
        "pod-to-service",
    }
    assert all(line.result == "FAIL" for line in not_probed), report
    assert report.seconds < deadline + probe + 2, report


@pytest.fixture
def topology(lab: Lab) -> Topology:
    return lab.topology


@pytest.fixture
def source_with_resolver(topology: Topology) -> Iterator[str]:
    """Yield the 1450 check pod, whose resolv.conf the test may change. The fixture restores it."""
    yield "check-1450"
    topology.set_resolv_conf("check-1450", resolv_conf(RESOLVER))


def test_dns_without_answer_is_retried(lab: Lab, tmp_path: Path, source_with_resolver: str) -> None:
    lab.topology.set_resolv_conf(source_with_resolver, resolv_conf(SILENT_RESOLVER))
    silent = lab.resolvers[SILENT_RESOLVER]
    queries_before = len(silent.queries)

    report = run_check(lab.topology, tmp_path, source_with_resolver, ["a-1450"])

    failure = report.of("dns")[0]
    assert failure.result == "FAIL", report
    assert f"no answer from the resolver to {ATTEMPTS} attempts, {TIMEOUT} s each" in failure.detail
    assert len(silent.queries) - queries_before == ATTEMPTS


def test_dns_nxdomain_is_not_retried(lab: Lab, tmp_path: Path) -> None:
    resolver = lab.resolvers[RESOLVER]
    queries_before = len(resolver.queries)

    report = run_check(lab.topology, tmp_path, "check-1450", ["a-1450"], extra=["--dns-name", "missing.default.svc"])

    failure = report.of("dns")[0]
    assert failure.result == "FAIL", report
    assert "got status NXDOMAIN" in failure.detail
    new_queries = resolver.queries[queries_before:]
    assert new_queries, "the resolver got no query"
    assert len(new_queries) == len(set(new_queries)), f"a name was queried twice: {new_queries}"


def test_dns_wrong_address_fails(topology: Topology, tmp_path: Path, source_with_resolver: str) -> None:
    topology.set_resolv_conf(source_with_resolver, resolv_conf(MISLEADING_RESOLVER))

    report = run_check(topology, tmp_path, source_with_resolver, ["a-1450"])

    failure = report.of("dns")[0]
    assert failure.result == "FAIL", report
    assert f"expected kubernetes.default.svc to resolve to {API_SERVER}, got {WRONG_ADDRESS}" in failure.detail


def test_service_refused_fails(topology: Topology, tmp_path: Path) -> None:
    report = run_check(topology, tmp_path, "check-1450", ["a-1450"], service=f"{API_SERVER}:{API_PORT + 1}")

    failure = report.of("pod-to-service")[0]
    assert failure.result == "FAIL", report
    assert "Connection refused" in failure.detail
    assert "attempts" not in failure.detail


# --- Input handling, no namespaces needed ----------------------------------------------------------------


def run_script(*arguments: str, stdin: str | None = None, env: dict[str, str] | None = None) -> Report:
    start = time.monotonic()
    result = subprocess.run(
        ["bash", str(SCRIPT), *arguments], input=stdin, capture_output=True, text=True, timeout=60, env=env, check=False
    )
    return Report(result.returncode, result.stdout, result.stderr, time.monotonic() - start)


def test_missing_options_are_named(tmp_path: Path) -> None:
    report = run_script("scenarios", "--pool", POOL)

    assert report.returncode == 2, report
    assert "missing option(s): --self-name --self-node --self-ip --pods --mtu --service" in report.stderr


def test_bad_pool_is_rejected(tmp_path: Path) -> None:
    pods = tmp_path / "pods.txt"
    pods.write_text("", encoding="utf-8")
    report = run_script(
        "scenarios", "--self-name", "x", "--self-node", "n", "--self-ip", "198.51.100.2", "--pods", str(pods),
        "--pool", "198.51.100.0/33", "--mtu", "1450", "--service", f"{API_SERVER}:{API_PORT}",
    )  # fmt: skip

    assert report.returncode == 2, report
    assert "--pool 198.51.100.0/33 is not an IPv4 CIDR" in report.stderr


POD_LIST = {
    "kind": "PodList",
    "items": [
        {
            "metadata": {"name": "pingtest-1"},
            "spec": {"nodeName": "pi-1"},
            "status": {"phase": "Running", "podIP": "10.244.1.5"},
        },
        {
            "metadata": {"name": "pingtest-2"},
            "spec": {"nodeName": "pi-2"},
            "status": {"phase": "Pending"},
        },
        {
            "metadata": {"name": "pingtest-old", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"nodeName": "pi-2"},
            "status": {"phase": "Running", "podIP": "10.244.2.9"},
        },
        {
            "metadata": {"name": "pingtest-3"},
            "spec": {"nodeName": "pi-3"},
            "status": {"phase": "Running", "podIP": "10.244.3.7"},
        },
    ],
}


def test_pod_list_keeps_running_pods() -> None:
    report = run_script("pods-from-json", stdin=json.dumps(POD_LIST))

    assert report.returncode == 0, report
    assert report.stdout.splitlines() == ["pingtest-1 pi-1 10.244.1.5", "pingtest-3 pi-3 10.244.3.7"]


# --- Cluster mode's pod discovery, against a stand-in curl ------------------------------------------------

FAKE_CURL = """\
#!/usr/bin/env bash
# Stand-in for curl against an API server that rejects the service account's token with 403 Forbidden.
body='{"kind":"Status","status":"Failure","reason":"Forbidden","code":403,"message":"pods is forbidden"}'
printf '%s\\n' "$*" >>"$FAKE_CURL_DIR/calls"
for argument in "$@"; do
    if [[ $argument == --fail ]]; then
        echo "curl: (22) The requested URL returned error: 403" >&2
        exit 22
    fi
done
for argument in "$@"; do
    # The script requests the status code after the body, on a line of its own.
    [[ $argument == *'%{http_code}'* ]] && { printf '%s\\n403' "$body"; exit 0; }
done
printf '%s\\n' "$body"
"""


def test_discovery_forbidden_stops_at_once(tmp_path: Path) -> None:
    curl = tmp_path / "curl"
    curl.write_text(FAKE_CURL, encoding="utf-8")
    curl.chmod(0o755)
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("token", encoding="utf-8")
    (account / "ca.crt").write_text("", encoding="utf-8")
    env = {
        **os.environ,
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "FAKE_CURL_DIR": str(tmp_path),
        "KUBERNETES_SERVICE_HOST": API_SERVER,
        "KUBERNETES_SERVICE_PORT": str(API_PORT),
        "NETCHECK_POD_NAME": "netcheck-x",
        "NETCHECK_NODE_NAME": "node-a",
        "NETCHECK_POD_IP": "198.51.100.10",
    }

    report = run_script(
        "cluster", "--service-account", str(account), "--discovery-timeout", "20", "--expect-pods", "2",
        "--pool", POOL, "--mtu", "1450", env=env,
    )  # fmt: skip

    assert report.returncode == 2, report
    assert report.seconds < 5, report
    assert "HTTP 403" in report.stderr
    assert "ServiceAccount default/netcheck" in report.stderr
    assert "Role default/netcheck" in report.stderr
    assert "RoleBinding default/netcheck" in report.stderr
    assert len((tmp_path / "calls").read_text(encoding="utf-8").splitlines()) == 1


# --- Await mode, against a stand-in kubectl --------------------------------------------------------------

FAKE_KUBECTL = """\
#!/usr/bin/env bash
# Stand-in for kubectl: prints the contents of files in $FAKE_KUBECTL_DIR, and logs each call.
printf '%s\\n' "$*" >>"$FAKE_KUBECTL_DIR/calls"
# A stalled API server: kubectl gives up after its --request-timeout, and hangs for long without one.
if [[ -e $FAKE_KUBECTL_DIR/stall ]]; then
    limit=10
    for argument in "$@"; do
        case $argument in --request-timeout=*) limit=${argument#--request-timeout=}; limit=${limit%s} ;; esac
    done
    sleep "$limit"
    echo "Unable to connect to the server: context deadline exceeded" >&2
    exit 1
fi
case " $* " in
*" get job "*"{.status.succeeded}"*) cat "$FAKE_KUBECTL_DIR/state" ;;
*" get job "*"conditions"*) cat "$FAKE_KUBECTL_DIR/conditions" ;;
*" logs job/"*) cat "$FAKE_KUBECTL_DIR/log" ;;
*" get pods "*"{.state.waiting.reason} {.image}"*) cat "$FAKE_KUBECTL_DIR/waiting" ;;
*" get pods "*"-o wide "*) printf 'NAME READY STATUS\\nnetcheck-abc-x1 0/1 ImagePullBackOff\\n' ;;
*" get pods "*) printf 'container netcheck: ImagePullBackOff Back-off pulling image\\n' ;;
*) echo "unexpected kubectl call: $*" >&2; exit 1 ;;
esac
"""

PASSING_LOG = """\
PASS dns netcheck-x (pi-1, 10.244.1.9) -> resolver 10.96.0.10: kubernetes.default.svc resolves to 10.96.0.1
summary: 1 passed, 0 failed, 0 skipped; the network check passed
"""
FAILING_LOG = """\
FAIL path-mtu-other-node netcheck-x (pi-1, 10.244.1.9) -> pingtest-2 (pi-2, 10.244.2.3): expected a reply
summary: 0 passed, 1 failed, 0 skipped; the network check failed (path-mtu-other-node)
"""


@dataclass
class FakeKubectl:
    """A directory with a stand-in kubectl and the output it prints."""

    directory: Path

    def set_output(self, state: str, log: str = "", conditions: str = "", waiting: str = "") -> None:
        """Set the Job's "succeeded/failed" counts, its log and conditions, and the check pod's waiting state.

        `waiting` is "reason image message" per container, as the await step's query prints it.
        """
        (self.directory / "waiting").write_text(waiting, encoding="utf-8")
        (self.directory / "state").write_text(state, encoding="utf-8")
        (self.directory / "log").write_text(log, encoding="utf-8")
        (self.directory / "conditions").write_text(conditions, encoding="utf-8")

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{self.directory}:{os.environ['PATH']}", "FAKE_KUBECTL_DIR": str(self.directory)}

    @property
    def calls(self) -> list[str]:
        path = self.directory / "calls"
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> FakeKubectl:
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL, encoding="utf-8")
    kubectl.chmod(0o755)
    return FakeKubectl(tmp_path)


def await_job(fake: FakeKubectl, timeout: int = 5) -> Report:
    return run_script(
        "await", "--job", "netcheck-abc", "--timeout", str(timeout), "--interval", "1", "--kubeconfig", "/dev/null",
        env=fake.env,
    )  # fmt: skip


def test_await_passing_job_prints_report(fake_kubectl: FakeKubectl) -> None:
    fake_kubectl.set_output("1/", PASSING_LOG)

    report = await_job(fake_kubectl)

    assert report.returncode == 0, report
    assert report.stdout == PASSING_LOG
    assert "--kubeconfig /dev/null --namespace default get job netcheck-abc" in fake_kubectl.calls[0]


def test_await_failed_job_exits_nonzero(fake_kubectl: FakeKubectl) -> None:
    fake_kubectl.set_output("/1", FAILING_LOG)

    report = await_job(fake_kubectl)

    assert report.returncode == 1, report
    assert "FAIL path-mtu-other-node" in report.stdout
    assert report.stdout.rstrip().endswith("the network check failed (path-mtu-other-node)")


def test_await_failed_job_with_passing_log_fails(fake_kubectl: FakeKubectl) -> None:
    """kubectl prints " 1" for a failed Job: a blank succeeded count, then failed=1."""
    fake_kubectl.set_output("/1", PASSING_LOG)

    report = await_job(fake_kubectl)

    assert report.returncode == 1, report


def test_await_succeeded_without_summary_fails(fake_kubectl: FakeKubectl) -> None:
    fake_kubectl.set_output("1/", "PASS dns x -> y: z\n")

    report = await_job(fake_kubectl)

    assert report.returncode == 1, report
    assert "failed before it reported a summary" in report.stdout


def test_await_job_killed_shows_conditions(fake_kubectl: FakeKubectl) -> None:
    conditions = "Job condition Failed: DeadlineExceeded: Job was active longer than specified deadline\n"
    fake_kubectl.set_output("/1", "PASS dns x -> y: z\n", conditions)

    report = await_job(fake_kubectl)

    assert report.returncode == 1, report
    assert "failed before it reported a summary" in report.stdout
    assert "DeadlineExceeded" in report.stdout
    assert "ImagePullBackOff" in report.stdout


def test_await_times_out(fake_kubectl: FakeKubectl) -> None:
    fake_kubectl.set_output("/", waiting="ContainerCreating docker.io/nicolaka/netshoot:v0.13 \n")

    report = await_job(fake_kubectl, timeout=2)

    assert report.returncode == 1, report
    assert "the network check Job default/netcheck-abc did not finish within 2 s" in report.stdout
    assert "last waiting reason of the check pod: ContainerCreating" in report.stdout
    assert "container netcheck: ImagePullBackOff Back-off pulling image" in report.stdout
    assert report.seconds < 10, report


@pytest.mark.parametrize(
    "reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError"]
)
def test_await_pod_start_error_fails_at_once(fake_kubectl: FakeKubectl, reason: str) -> None:
    image = "docker.io/nicolaka/netshoot:v0.99"
    fake_kubectl.set_output("/", waiting=f"{reason} {image} Back-off pulling image\n")

    report = await_job(fake_kubectl, timeout=30)

    assert report.returncode == 1, report
    assert report.seconds < 10, report
    assert f"the check pod cannot start: {reason} for image {image}" in report.stdout
    assert "calico:pingtest.checkImage" in report.stdout


def test_await_stalled_api_server_is_bounded(fake_kubectl: FakeKubectl) -> None:
    (fake_kubectl.directory / "stall").touch()

    report = run_script(
        "await", "--job", "netcheck-abc", "--timeout", "2", "--interval", "1", "--request-timeout", "2",
        "--kubeconfig", "/dev/null", env=fake_kubectl.env,
    )  # fmt: skip

    assert report.returncode == 1, report
    assert "did not finish within 2 s" in report.stdout
    assert "context deadline exceeded" in report.stdout
    assert all("--request-timeout=" in call for call in fake_kubectl.calls), fake_kubectl.calls
    # The await timeout plus one request timeout, and a second of rounding per call after the deadline.
    assert report.seconds < 2 + 2 + 3, report


def test_await_without_kubectl_names_the_node_requirement(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    bash = shutil.which("bash")
    assert bash is not None
    (bin_dir / "bash").symlink_to(bash)

    report = run_script("await", "--job", "netcheck-abc", env={"PATH": str(bin_dir), "HOSTNAME": "pi-1"})

    assert report.returncode == 2, report
    assert "kubectl not found on pi-1. calico:nodes[0] must be a control-plane node" in report.stderr


def test_await_without_kubeconfig_names_the_node_requirement(fake_kubectl: FakeKubectl, tmp_path: Path) -> None:
    missing = tmp_path / "admin.conf"

    report = run_script("await", "--job", "netcheck-abc", "--kubeconfig", str(missing), env=fake_kubectl.env)

    assert report.returncode == 2, report
    assert f"{missing} is missing or not readable" in report.stderr
    assert fake_kubectl.calls == [], "kubectl ran without a kubeconfig"
