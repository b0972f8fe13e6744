"""NetworkCheck under Pulumi's mocks: ordering, re-creation on settings changes, and the report reaching the user.

The mocks below run the check's remote command for real, locally, with a stand-in kubectl. It is the
same command text and netcheck.sh the node would get. So a failed check fails the registration with the
report in the error, as pulumi-command does on a node.
"""

from __future__ import annotations

import gc
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest
from pulumi.runtime import settings as runtime_settings

from components import netcheck
from components import settings as settings_module
from components.netcheck import NetworkCheck, NetworkCheckArgs, build_objects, read_script
from components.pingtest import PingTest, PingTestArgs
from components.settings import Settings, parse_settings
from components.stackconfig import apply_defaults, load_schema
from tests.conftest import RecordingMocks, RecordingMonitor, stack_config

JOB_TYPE = "kubernetes:batch/v1:Job"
COMMAND_TYPE = "command:remote:Command"
CHECK_TYPE = "calico:netcheck:NetworkCheck"


def settings_with(**changes: Any) -> Settings:
    """Return the dev stack's settings with `changes` (short key names) applied."""
    schema = load_schema()
    values = apply_defaults(schema, stack_config() | changes)
    return parse_settings(values, declared_keys=schema)


PASSING_REPORT = """\
PASS dns netcheck-x (pi-1, 10.244.1.9) -> resolver 10.96.0.10: kubernetes.default.svc resolves to 10.96.0.1
SKIP pod-to-pod-same-node netcheck-x (pi-1, 10.244.1.9) -> (none): no pingtest pod runs on pi-1, the source's node
summary: 1 passed, 0 failed, 1 skipped; the network check passed
"""
FAILING_REPORT = """\
PASS pod-to-pod-other-node netcheck-x (pi-1, 10.244.1.9) -> pingtest-b (pi-2, 10.244.2.3): reply in 0.4 ms
FAIL path-mtu-other-node netcheck-x (pi-1, 10.244.1.9) -> pingtest-b (pi-2, 10.244.2.3): expected a reply to a \
1472-byte don't-fragment ping (a 1500-byte packet, the pod MTU), got no reply to 3 attempts, 2 s each
summary: 1 passed, 1 failed, 0 skipped; the network check failed (path-mtu-other-node)
"""

FAKE_KUBECTL = """\
#!/usr/bin/env bash
# Stand-in for kubectl on the control-plane node: the check Job finished with the state and log given.
case " $* " in
*" get job "*"{.status.succeeded}"*) cat "$FAKE_KUBECTL_DIR/state" ;;
*" logs job/"*) cat "$FAKE_KUBECTL_DIR/log" ;;
*" get job "*) echo "Job condition Failed: BackoffLimitExceeded: Job has reached the specified backoff limit" ;;
*" get pods "*) echo "netcheck-x 0/1 Error" ;;
*) echo "unexpected kubectl call: $*" >&2; exit 1 ;;
esac
"""


class CommandFailed(Exception):
    """What pulumi-command reports when the remote command exits non-zero."""


@dataclass
class NodeRunningMocks(RecordingMocks):
    """Mocks that run each remote Command's `create` locally, with its stdin, as the node would."""

    env: Mapping[str, str] | None = None

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ != COMMAND_TYPE:
            return super().new_resource(args)
        self.resources.append(args)
        result = subprocess.run(
            ["bash", "-c", args.inputs["create"]],
            input=args.inputs.get("stdin", ""),
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(self.env or os.environ),
            check=False,
        )
        if result.returncode != 0:
            # pulumi-command's error: the exit status, the command, then stdout and stderr.
            raise CommandFailed(
                f"Process exited with status {result.returncode}: running {args.inputs['create']!r}:\n"
                f"{result.stdout}{result.stderr}"
            )
        outputs = dict(args.inputs)
        outputs.update(stdout=result.stdout.removesuffix("\n"), stderr=result.stderr.removesuffix("\n"))
        return f"{args.name}-id", outputs


def _collect_failed_futures() -> None:
    """Collect the futures a failed registration leaves with unretrieved exceptions, now.

    Each logs its exception when garbage-collected, and Python 3.11 formats that traceback with
    ast.parse. Collected later, inside another ast.parse (pytest importing a module, say), the nested
    call fails with "AST constructor recursion depth mismatch", so they are collected at a safe point.
    """
    gc.collect()


@dataclass
class CheckRun:
    mocks: RecordingMocks
    monitor: RecordingMonitor
    summary: str | None


Registrar = Callable[..., CheckRun]


@pytest.fixture
def register_check() -> Iterator[Registrar]:
    """Provide a function that registers NetworkCheck after a pingtest Deployment and a Calico object."""

    def register(
        settings: Settings, mocks: RecordingMocks | None = None, node_facts: Mapping[str, Any] | None = None
    ) -> CheckRun:
        mocks = mocks or RecordingMocks()
        monitor = RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(mocks, project="calico", stack="dev", preview=False, monitor=monitor)
        resolved: dict[str, str] = {}

        @pulumi.runtime.test
        def program() -> pulumi.Output[str]:
            calico = k8s.core.v1.ConfigMap("calico-config", metadata={"name": "calico-config"})
            pingtest = PingTest(
                "pingtest", PingTestArgs(pingtest=settings.pingtest, settings_hash="0" * 16, calico=[calico])
            )
            check = NetworkCheck(
                "netcheck",
                NetworkCheckArgs(
                    settings=settings,
                    pingtest=pingtest.deployment,
                    calico=pulumi.Output.from_input([calico]),
                    ssh_private_key=None,
                    node_facts=node_facts,
                ),
            )
            return check.summary.apply(lambda summary: resolved.setdefault("summary", summary))

        try:
            program()
        finally:
            _collect_failed_futures()
        return CheckRun(mocks, monitor, resolved.get("summary"))

    yield register
    runtime_settings.reset_options()


@pytest.fixture
def node_with_kubectl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], NodeRunningMocks]:
    """Return a factory of mocks whose "node" has a kubectl reporting the given Job state and log."""
    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n", encoding="utf-8")
    monkeypatch.setattr(netcheck, "KUBECONFIG", str(kubeconfig))
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(FAKE_KUBECTL, encoding="utf-8")
    kubectl.chmod(0o755)

    def make(state: str, log: str) -> NodeRunningMocks:
        (tmp_path / "state").write_text(state, encoding="utf-8")
        (tmp_path / "log").write_text(log, encoding="utf-8")
        env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "FAKE_KUBECTL_DIR": str(tmp_path)}
        return NodeRunningMocks(env=env)

    return make


def test_check_runs_after_pingtest_and_calico(register_check: Registrar) -> None:
    run = register_check(settings_with())

    job = run.mocks.of_type(JOB_TYPE)[0]
    assert run.monitor.registrations[job.name].dependencies >= {"pingtest-deployment", "calico-config"}
    assert run.monitor.registrations[job.name].parent == "netcheck"
    command = run.mocks.of_type(COMMAND_TYPE)[0]
    assert job.name in run.monitor.registrations[command.name].dependencies
    assert run.monitor.registrations["netcheck"].typ == CHECK_TYPE


def test_job_tests_the_stack_settings(register_check: Registrar) -> None:
    run = register_check(settings_with(encapsulation="VXLAN", nodeMtu=1500, podCidr="10.244.0.0/16"))

    job = run.mocks.of_type(JOB_TYPE)[0].inputs
    container = job["spec"]["template"]["spec"]["containers"][0]
    arguments = container["command"]
    assert arguments[arguments.index("--mtu") + 1] == "1450"
    assert arguments[arguments.index("--pool") + 1] == "10.244.0.0/16"
    assert arguments[arguments.index("--expect-pods") + 1] == "3"
    assert arguments[arguments.index("--expect-nodes") + 1] == "3"
    assert container["image"] == "docker.io/nicolaka/netshoot:v0.13"
    assert job["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == netcheck.job_deadline_seconds(3)
    assert arguments[arguments.index("--deadline") + 1] == str(netcheck.script_budget_seconds(3))
    script = run.mocks.named("netcheck-script").inputs
    assert script["data"]["netcheck.sh"] == read_script()
    volume = job["spec"]["template"]["spec"]["volumes"][0]
    assert volume["configMap"]["name"] == script["metadata"]["name"]


def test_headless_service_selects_pingtest(register_check: Registrar) -> None:
    run = register_check(settings_with())

    service = run.mocks.named("netcheck-pingtest-service").inputs
    assert service["metadata"]["name"] == "pingtest"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == {"app": "pingtest"}


def test_mtu_change_replaces_the_job(register_check: Registrar) -> None:
    before = register_check(settings_with(mtu=1450))
    after = register_check(settings_with(mtu=1400))

    job_before = before.mocks.of_type(JOB_TYPE)[0].inputs["metadata"]["name"]
    job_after = after.mocks.of_type(JOB_TYPE)[0].inputs["metadata"]["name"]
    # A Job's name is its identity, so a new name makes Pulumi create the new Job and delete the old.
    assert job_before != job_after
    command_after = after.mocks.of_type(COMMAND_TYPE)[0].inputs
    assert command_after["triggers"] == [job_after]
    assert f"--job {job_after}" in command_after["create"]


@pytest.mark.parametrize(
    "change",
    [
        {"version": "v3.29.7"},
        {"podCidr": "10.42.0.0/16"},
        {"encapsulation": "IPIP"},
        {"mtu": 1400},
        {"pingtest": {"enabled": True, "replicas": 2}},
        {"pingtest": {"enabled": True, "checkImage": "docker.io/nicolaka/netshoot:v0.14"}},
        {"ipAutodetectionMethod": "interface=eth0"},
        {"blockSize": 24},
        {"nodes": [{"name": "pi-1", "host": "192.0.2.11"}, {"name": "pi-4", "host": "192.0.2.14"}]},
        {
            "nodes": [
                {"name": "pi-1", "host": "192.0.2.11"},
                {"name": "pi-2", "host": "192.0.2.12"},
                {"name": "pi-9", "host": "192.0.2.13"},
            ]
        },
    ],
    ids=[
        "version",
        "podCidr",
        "encapsulation",
        "mtu",
        "replicas",
        "checkImage",
        "ipAutodetectionMethod",
        "blockSize",
        "nodes",
        "node-name",
    ],
)
def test_checked_setting_renames_job(register_check: Registrar, change: dict[str, Any]) -> None:
    before = register_check(settings_with())
    after = register_check(settings_with(**change))

    job_before = before.mocks.of_type(JOB_TYPE)[0].inputs["metadata"]["name"]
    job_after = after.mocks.of_type(JOB_TYPE)[0].inputs["metadata"]["name"]
    assert job_before != job_after
    command_after = after.mocks.of_type(COMMAND_TYPE)[0].inputs
    assert command_after["triggers"] == [job_after]
    assert f"--job {job_after}" in command_after["create"]


def test_unrelated_setting_keeps_job() -> None:
    script = read_script()
    unchanged = build_objects(settings_with(), script).job_name

    assert build_objects(settings_with(sshUser="admin"), script).job_name == unchanged
    assert build_objects(settings_with(), script + "\n").job_name != unchanged, "a script change must re-run it"


def test_failed_check_fails_with_report(register_check: Registrar, node_with_kubectl: Any) -> None:
    mocks = node_with_kubectl("/1", FAILING_REPORT)

    with pytest.raises(CommandFailed) as failure:
        register_check(settings_with(), mocks)

    message = str(failure.value)
    assert message.startswith("Process exited with status 1")
    assert "FAIL path-mtu-other-node netcheck-x (pi-1, 10.244.1.9) -> pingtest-b (pi-2, 10.244.2.3)" in message
    assert "the network check failed (path-mtu-other-node)" in message


def test_passing_check_exports_summary(register_check: Registrar, node_with_kubectl: Any) -> None:
    mocks = node_with_kubectl("1/", PASSING_REPORT)

    run = register_check(settings_with(), mocks)

    assert run.summary == "1 passed, 0 failed, 1 skipped; the network check passed"


@pytest.mark.parametrize("replicas", [2, 3, 40, settings_module.MAX_PINGTEST_REPLICAS])
def test_time_budget_fits_replicas(register_check: Registrar, replicas: int) -> None:
    """Every pingtest pod unreachable must still fit in the Job's deadline, with time left to pull the image."""
    run = register_check(settings_with(pingtest={"enabled": True, "replicas": replicas}))

    job = run.mocks.of_type(JOB_TYPE)[0].inputs
    deadline = job["spec"]["activeDeadlineSeconds"]
    probe = netcheck.ATTEMPTS * netcheck.REPLY_TIMEOUT_SECONDS
    # Discovery, then per pod a retried ping, a retried DF ping and one single-attempt ping, then DNS and TCP.
    worst_case = (
        netcheck.DISCOVERY_TIMEOUT_SECONDS + replicas * (2 * probe + netcheck.REPLY_TIMEOUT_SECONDS) + 2 * probe
    )
    assert deadline - worst_case >= 300, f"{deadline} s leaves too little of itself for the image pull"
    arguments = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert worst_case <= int(arguments[arguments.index("--deadline") + 1]) < deadline
    command = run.mocks.of_type(COMMAND_TYPE)[0].inputs["create"]
    timeout = int(command.split("--timeout ")[1].split()[0])
    assert timeout > deadline


def test_worker_first_node_is_rejected() -> None:
    settings = settings_with()
    facts = {"architecture": "arm64", "adminConf": False, "kubectl": ""}

    with pytest.raises(netcheck.NetworkCheckError) as failure:
        netcheck.require_control_plane(settings.nodes[0], facts)

    message = str(failure.value)
    assert "calico:nodes[0] (pi-1, 192.0.2.11) lacks kubectl and /etc/kubernetes/admin.conf" in message
    assert "list a control-plane node" in message


def test_control_plane_facts_keep_await_command(register_check: Registrar) -> None:
    facts = {"architecture": "arm64", "adminConf": True, "kubectl": "/usr/bin/kubectl"}

    run = register_check(settings_with(), node_facts=facts)

    command = run.mocks.of_type(COMMAND_TYPE)[0].inputs
    job_name = run.mocks.of_type(JOB_TYPE)[0].inputs["metadata"]["name"]
    assert command["create"] == netcheck.await_command(job_name, netcheck.await_timeout_seconds(3))


def test_disabled_pingtest_registers_no_check(register_check: Registrar) -> None:
    run = register_check(settings_with(pingtest={"enabled": False}))

    assert run.mocks.of_type(JOB_TYPE) == []
    assert run.mocks.of_type(COMMAND_TYPE) == []
    assert run.summary == "not run: calico:pingtest.enabled is false"
