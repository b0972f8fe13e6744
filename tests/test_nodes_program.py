"""NodeSetup under the Pulumi mocks: what it registers for each node, with which connection and triggers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pulumi
import pytest
from pulumi.runtime import settings as runtime_settings

from components import nodes, versions
from components.nodes import NodeSetup, NodeSetupArgs
from components.settings import Settings, parse_settings
from components.stackconfig import apply_defaults, load_schema
from tests.conftest import RecordingMocks, RecordingMonitor

SECRET_SIGNATURE_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIGNATURE = "1b47061264138c4ac30d75fd1eb44270"
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nnot-a-real-key\n-----END OPENSSH PRIVATE KEY-----\n"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGxhYi1ob3N0LWtleS1mb3ItdGVzdHMtb25seQ"
NODES = [
    {"name": "pi-1", "host": "192.0.2.11", "hostKey": HOST_KEY},
    {"name": "pi-2", "host": "192.0.2.12", "user": "pi", "port": 2222},
]


def make_settings(**values: Any) -> Settings:
    schema = load_schema()
    stack: dict[str, Any] = {"podCidr": "10.244.0.0/16", "encapsulation": "VXLAN", "nodes": NODES}
    stack.update(values)
    return parse_settings(apply_defaults(schema, stack), declared_keys=schema)


def preflight_stdout(architecture: str = "arm64", warnings: tuple[str, ...] = ()) -> Callable[[Any], str | None]:
    """Return the mock stdout function that gives every preflight these facts."""

    def answer(args: Any) -> str | None:
        if args.name.endswith("-preflight"):
            return json.dumps({"node": args.name, "architecture": architecture, "warnings": list(warnings)})
        return ""

    return answer


@dataclass
class Registered:
    mocks: RecordingMocks
    monitor: RecordingMonitor
    facts: dict[str, Any]

    def inputs(self, name: str) -> dict[str, Any]:
        return dict(self.mocks.named(name, "command:remote:Command").inputs)

    def connection(self, name: str) -> dict[str, Any]:
        connection = self.inputs(name)["connection"]
        if connection.get(SECRET_SIGNATURE_KEY) == SECRET_SIGNATURE:
            return dict(connection["value"])
        return dict(connection)


@pytest.fixture
def register(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Registered]]:
    """Provide a function that registers NodeSetup under the mocks; restore Pulumi's settings afterwards."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)

    def run(
        settings: Settings,
        private_key: str | None = PRIVATE_KEY,
        stdout: Callable[[Any], str | None] | None = None,
        preview: bool = False,
    ) -> Registered:
        mocks = RecordingMocks(command_stdout=stdout or preflight_stdout())
        monitor = RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(mocks, project="calico", stack="dev", preview=preview, monitor=monitor)
        facts: dict[str, Any] = {}

        @pulumi.runtime.test
        def build() -> pulumi.Output[None]:
            key = None if private_key is None else pulumi.Output.secret(private_key)
            setup = NodeSetup("nodes", NodeSetupArgs(settings=settings, ssh_private_key=key))
            assert len(setup.preflights) == len(settings.nodes)
            assert len(setup.installs) == len(settings.nodes)
            return setup.facts.apply(facts.update)

        build()
        return Registered(mocks, monitor, facts)

    yield run
    runtime_settings.reset_options()


def test_one_preflight_and_install_per_node(register: Callable[..., Registered]) -> None:
    registered = register(make_settings())

    commands = sorted(resource.name for resource in registered.mocks.of_type("command:remote:Command"))
    assert commands == ["nodes-pi-1-calicoctl", "nodes-pi-1-preflight", "nodes-pi-2-calicoctl", "nodes-pi-2-preflight"]
    for name in commands:
        assert registered.monitor.registrations[name].parent == "nodes"
    assert registered.monitor.registrations["nodes"].typ == nodes.NODE_SETUP_TYPE


def test_connection_settings(register: Callable[..., Registered]) -> None:
    registered = register(make_settings())

    first = registered.connection("nodes-pi-1-preflight")
    second = registered.connection("nodes-pi-2-calicoctl")
    assert (first["host"], first["port"], first["user"]) == ("192.0.2.11", 22, "root")
    assert (second["host"], second["port"], second["user"]) == ("192.0.2.12", 2222, "pi")
    assert first["hostKey"] == HOST_KEY
    assert "hostKey" not in second
    for connection in (first, second):
        assert connection["perDialTimeout"] == nodes.PER_DIAL_TIMEOUT_SECONDS
        assert connection["dialErrorLimit"] == nodes.DIAL_ERROR_LIMIT
        assert connection["privateKey"] == PRIVATE_KEY


def test_private_key_is_secret(register: Callable[..., Registered]) -> None:
    registered = register(make_settings())

    for name in ("nodes-pi-1-preflight", "nodes-pi-1-calicoctl"):
        connection = registered.inputs(name)["connection"]
        assert connection.get(SECRET_SIGNATURE_KEY) == SECRET_SIGNATURE, f"{name} sends its key in plain text"
        assert "PRIVATE KEY" not in registered.inputs(name)["stdin"]
        assert "PRIVATE KEY" not in registered.inputs(name)["create"]
    assert "PRIVATE KEY" not in registered.inputs("nodes-pi-1-calicoctl")["delete"]


def test_ssh_agent_without_key(register: Callable[..., Registered], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/user/1000/ssh-agent.socket")

    registered = register(make_settings(), private_key=None)

    connection = registered.connection("nodes-pi-1-preflight")
    assert "privateKey" not in connection
    # The agent socket stays out of the inputs: its path changes per login and would rerun every command.
    assert "agentSocketPath" not in connection


def test_no_key_and_no_agent_fails(register: Callable[..., Registered]) -> None:
    with pytest.raises(pulumi.RunError, match="calico:sshPrivateKey is empty and SSH_AUTH_SOCK is not set"):
        register(make_settings(), private_key=None)


def test_no_key_and_no_agent_previews(register: Callable[..., Registered]) -> None:
    registered = register(make_settings(), private_key=None, preview=True)

    assert len(registered.mocks.of_type("command:remote:Command")) == 4


def test_commands_and_scripts(register: Callable[..., Registered]) -> None:
    settings = make_settings()
    registered = register(settings)

    preflight = registered.inputs("nodes-pi-2-preflight")
    install = registered.inputs("nodes-pi-2-calicoctl")
    node = settings.nodes[1]
    assert preflight["create"] == nodes.PREFLIGHT_COMMAND
    assert preflight["stdin"] == nodes.preflight_script(settings, node)
    assert "delete" not in preflight
    assert install["create"] == nodes.INSTALL_COMMAND
    assert install["stdin"] == nodes.install_script(settings, node, "arm64")
    assert install["delete"] == nodes.remove_command(settings, node, "arm64")


def test_install_triggers(register: Callable[..., Registered]) -> None:
    registered = register(make_settings())

    assert registered.inputs("nodes-pi-1-calicoctl")["triggers"] == [
        "v3.31.7",
        "arm64",
        "",
        versions.CALICOCTL_SHA256["v3.31.7"]["arm64"],
        "/usr/local/bin",
    ]


def test_install_triggers_for_mirror(register: Callable[..., Registered]) -> None:
    url = "https://mirror.example/calicoctl/{version}/calicoctl-linux-{arch}"
    sha = "ab" * 32
    settings = make_settings(calicoctlUrl=url, calicoctlSha256={"amd64": sha}, calicoctlInstallDir="/opt/bin")

    registered = register(settings, stdout=preflight_stdout("amd64"))

    assert registered.inputs("nodes-pi-1-calicoctl")["triggers"] == ["v3.31.7", "amd64", url, sha, "/opt/bin"]
    assert (
        "https://mirror.example/calicoctl/v3.31.7/calicoctl-linux-amd64"
        in registered.inputs("nodes-pi-1-calicoctl")["stdin"]
    )


def test_install_triggers_for_release_sha256sums(register: Callable[..., Registered]) -> None:
    registered = register(make_settings(version="v3.32.1"))

    triggers = registered.inputs("nodes-pi-1-calicoctl")["triggers"]
    assert triggers[3] == nodes.RELEASE_SHA256SUMS
    assert versions.calicoctl_release_sha256sums_url("v3.32.1") in registered.inputs("nodes-pi-1-calicoctl")["stdin"]


def test_install_waits_for_own_preflight(register: Callable[..., Registered]) -> None:
    registered = register(make_settings())

    registrations = registered.monitor.registrations
    assert registrations["nodes-pi-1-calicoctl"].dependencies == {"nodes-pi-1-preflight"}
    assert registrations["nodes-pi-2-calicoctl"].dependencies == {"nodes-pi-2-preflight"}
    assert registrations["nodes-pi-1-preflight"].dependencies == set()
    assert registrations["nodes-pi-2-preflight"].dependencies == set()


def test_same_config_registers_same_inputs(register: Callable[..., Registered]) -> None:
    # Identical inputs are what makes the engine's diff empty, so a second `pulumi up` runs nothing.
    first = register(make_settings())
    second = register(make_settings())

    for name in ("nodes-pi-1-preflight", "nodes-pi-1-calicoctl", "nodes-pi-2-preflight", "nodes-pi-2-calicoctl"):
        assert first.inputs(name) == second.inputs(name), name


def test_unrelated_change_keeps_install_inputs(register: Callable[..., Registered]) -> None:
    before = register(make_settings(nodeMtu=1500))
    after = register(make_settings(nodeMtu=9000, podCidr="10.32.0.0/16"))

    assert before.inputs("nodes-pi-1-calicoctl") == after.inputs("nodes-pi-1-calicoctl")
    assert before.inputs("nodes-pi-1-preflight")["stdin"] != after.inputs("nodes-pi-1-preflight")["stdin"]


def test_install_dir_change_reruns_preflight(register: Callable[..., Registered]) -> None:
    # The preflight checks who owns the install directory, so a new directory must run it again.
    before = register(make_settings())
    after = register(make_settings(calicoctlInstallDir="/opt/bin"))

    assert "INSTALL_DIR=/usr/local/bin\n" in before.inputs("nodes-pi-1-preflight")["stdin"]
    assert "INSTALL_DIR=/opt/bin\n" in after.inputs("nodes-pi-1-preflight")["stdin"]


@pytest.mark.parametrize(
    ("change", "changed"),
    [
        ({"version": "v3.29.7"}, [0, 3]),  # a new release also brings its own pinned sha256
        ({"calicoctlInstallDir": "/opt/bin"}, [4]),
        ({"calicoctlSha256": {"arm64": "cd" * 32}}, [3]),
    ],
    ids=["version", "install-dir", "sha256"],
)
def test_trigger_changes(register: Callable[..., Registered], change: dict[str, Any], changed: list[int]) -> None:
    before = register(make_settings())
    after = register(make_settings(**change))

    old = before.inputs("nodes-pi-1-calicoctl")["triggers"]
    new = after.inputs("nodes-pi-1-calicoctl")["triggers"]
    assert [position for position in range(5) if old[position] != new[position]] == changed


def test_architecture_change_reinstalls(register: Callable[..., Registered]) -> None:
    arm = register(make_settings(), stdout=preflight_stdout("arm64"))
    amd = register(make_settings(), stdout=preflight_stdout("amd64"))

    assert arm.inputs("nodes-pi-1-calicoctl")["triggers"][1] == "arm64"
    assert amd.inputs("nodes-pi-1-calicoctl")["triggers"][1] == "amd64"


def test_facts_by_node(register: Callable[..., Registered]) -> None:
    registered = register(make_settings())

    assert sorted(registered.facts) == ["pi-1", "pi-2"]
    assert registered.facts["pi-1"]["architecture"] == "arm64"
    assert registered.facts["pi-2"]["node"] == "nodes-pi-2-preflight"


def test_preflight_warnings_logged(register: Callable[..., Registered], monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: logged.append(message))

    register(make_settings(), stdout=preflight_stdout(warnings=("pi has two UP interfaces",)))

    assert logged == ["pi has two UP interfaces", "pi has two UP interfaces"]


def test_facts_without_json_name_node() -> None:
    node = make_settings().nodes[1]

    with pytest.raises(nodes.NodeScriptError, match=r"preflight of node pi-2 \(192\.0\.2\.12\) printed no facts"):
        nodes.parse_facts(node, "Welcome to pi-2\nsh: 1: ip: not found")


def test_facts_skip_login_banner() -> None:
    node = make_settings().nodes[0]

    facts = nodes.parse_facts(node, 'Welcome\n{"architecture": "amd64"}')

    assert facts == {"architecture": "amd64"}


def test_facts_need_supported_architecture() -> None:
    node = make_settings().nodes[0]

    with pytest.raises(nodes.NodeScriptError, match=r"pi-1 .* reported no supported architecture"):
        nodes.parse_facts(node, '{"architecture": ""}')


def test_calicoctl_source_order() -> None:
    mirror = "https://mirror.example/{version}/calicoctl-linux-{arch}"
    configured = nodes.calicoctl_source(make_settings(calicoctlSha256={"arm64": "ef" * 32}), "arm64")
    pinned = nodes.calicoctl_source(make_settings(), "arm64")
    release = nodes.calicoctl_source(make_settings(version="v3.32.1"), "arm64")
    unknown = nodes.calicoctl_source(make_settings(version="v3.21.0"), "arm64")
    unknown_mirror = nodes.calicoctl_source(make_settings(version="v3.32.1", calicoctlUrl=mirror), "arm64")

    assert (configured.sha256, configured.checksum_source) == ("ef" * 32, "calico:calicoctlSha256.arm64")
    assert pinned.sha256 == versions.CALICOCTL_SHA256["v3.31.7"]["arm64"]
    assert pinned.url == "https://github.com/projectcalico/calico/releases/download/v3.31.7/calicoctl-linux-arm64"
    assert (release.sha256, release.sha256sums_url) == (None, versions.calicoctl_release_sha256sums_url("v3.32.1"))
    assert (unknown.sha256, unknown.sha256sums_url) == (None, None)
    assert unknown.url == "https://github.com/projectcalico/calicoctl/releases/download/v3.21.0/calicoctl-linux-arm64"
    assert (unknown_mirror.sha256, unknown_mirror.sha256sums_url) == (None, None)
    assert unknown_mirror.url == "https://mirror.example/v3.32.1/calicoctl-linux-arm64"


def test_checksum_architectures() -> None:
    assert nodes.checksum_architectures(make_settings(version="v3.32.1")) == "release"
    assert nodes.checksum_architectures(make_settings(version="v3.21.0")) == ""
    assert nodes.checksum_architectures(make_settings(version="v3.21.0", calicoctlSha256={"arm64": "ef" * 32})) == (
        "arm64"
    )
    mirror = "https://mirror.example/{version}/calicoctl-linux-{arch}"
    assert nodes.checksum_architectures(make_settings(version="v3.22.1", calicoctlUrl=mirror)) == "amd64 arm64 ppc64le"
