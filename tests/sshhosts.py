"""Real SSH hosts for the node-script tests: one OpenSSH server per network namespace, and an HTTP mirror.

Layout: a "lan" namespace contains a bridge with the test's own address (LAN_ADDRESS) and the mirror, and
every node namespace hangs off that bridge with a veth pair, its own address and its own sshd. The ssh
client runs in the lan namespace too, so nothing here touches the machine's own network.

Each sshd runs in the mount namespace `ip netns exec` gives it, where the harness mounts the node's own
directories over /usr/local/bin, /etc/calico, /etc/kubernetes and /etc/cni/net.d, a tmpfs holding only
the node's kernel modules over /sys/module (and an empty one over /lib/modules), and, for a node that
fakes its machine, a `uname` that reports it. Tests read and write a node's files through `Node.path`.

Everything needs root, OpenSSH's sshd and sudo. `Lab.close` removes every namespace, user, sudoers file,
temporary directory and process the lab created, also after a failed start. It leaves the host paths that
labs share: /run/sshd and the empty mountpoints of NODE_DIRECTORIES. Another lab running at the same time
may depend on them, and removing a mountpoint would detach that lab's mounts.

Run as `python -m tests.sshhosts serve ROOT ADDRESS LOG` this module is the mirror process itself.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SSHD = "/usr/sbin/sshd"
# Documentation addresses (RFC 5737); they exist only inside the lab's namespaces.
LAN_PREFIX = "198.51.100"
LAN_ADDRESS = f"{LAN_PREFIX}.1"
COMMAND_TIMEOUT = 30
# Paths private to each node: node path -> directory name under the node's root.
NODE_DIRECTORIES = {
    "/usr/local/bin": "usr-local-bin",
    "/etc/calico": "etc-calico",
    "/etc/kubernetes": "etc-kubernetes",
    "/etc/cni/net.d": "etc-cni-net.d",
}


# The lab's users: one with passwordless sudo and one whose sudo requires a password.
_USER_SUFFIXES = {"sudo": "s", "password": "p"}
_SUDO_RULES = {"sudo": "NOPASSWD: ALL", "password": "ALL"}


def _user_name(token: str, login: str) -> str:
    return "root" if login == "root" else f"calab{token}{_USER_SUFFIXES[login]}"


class LabError(RuntimeError):
    """Building the lab failed; the message carries the failing command's output."""


def missing_requirements() -> str | None:
    """Return why the SSH lab cannot run on this machine, or None when it can."""
    if os.geteuid() != 0:
        return "the SSH lab creates network namespaces and users, which needs root"
    for tool in ("ip", "ssh", "ssh-keygen", "sudo", "useradd", "userdel", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install openssh-client sudo iproute2 passwd mount)"
    if not Path(SSHD).is_file():
        return f"{SSHD} is not installed (apt-get install openssh-server)"
    return None


def run(*command: str, input_text: str | None = None, timeout: float = COMMAND_TIMEOUT) -> str:
    """Run a command and return its stdout; raise LabError with its output when it fails."""
    result = subprocess.run(command, input=input_text, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise LabError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


@dataclass(frozen=True)
class NodeSpec:
    """One node of the lab."""

    name: str
    """Node name, as in calico:nodes[].name."""
    login: str = "root"
    """root, "sudo" (a user with passwordless sudo) or "password" (a user whose sudo requires a password)."""
    modules: tuple[str, ...] = ("vxlan",)
    """Kernel modules the node shows as loaded in /sys/module."""
    machine: str | None = None
    """What `uname -m` prints on the node, or None for the real machine."""
    control_plane: bool = False
    """Whether the node has /etc/kubernetes/admin.conf."""
    cni_files: tuple[str, ...] = ()
    """Files the node has in /etc/cni/net.d."""
    extra_address: str | None = None
    """CIDR of a second UP interface, eth1, or None for eth0 only."""
    reachable: bool = True
    """False: the node's replies to the lab are dropped (a blackhole route), so dials time out."""


@dataclass
class Node:
    """A running lab node."""

    spec: NodeSpec
    address: str
    user: str
    root: Path
    """The node's private directory on this machine."""
    namespace: str
    host_key: str
    """The sshd's public host key, "ssh-ed25519 AAAA..."."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def path(self, node_path: str) -> Path:
        """Return where the node's file `node_path` is on this machine."""
        for prefix, directory in NODE_DIRECTORIES.items():
            if node_path == prefix or node_path.startswith(prefix + "/"):
                return self.root / directory / node_path[len(prefix) :].lstrip("/")
        raise ValueError(f"{node_path} is not one of the node's own directories {list(NODE_DIRECTORIES)}")

    def reset(self) -> None:
        """Empty the node's own directories, keeping admin.conf and the CNI files of its spec."""
        for directory in NODE_DIRECTORIES.values():
            for entry in (self.root / directory).iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        if self.spec.control_plane:
            self.path("/etc/kubernetes/admin.conf").write_text("# test stand-in for kubeadm's admin.conf\n")
            self.path("/etc/kubernetes/admin.conf").chmod(0o600)
        for name in self.spec.cni_files:
            self.path(f"/etc/cni/net.d/{name}").write_text("{}\n")


@dataclass
class Mirror:
    """The lab's HTTP mirror: files under `root`, served at `url`, every request appended to `log`."""

    root: Path
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def put(self, relative_path: str, content: bytes) -> str:
        """Serve `content` at `relative_path`; return its sha256."""
        target = self.root / relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return hashlib.sha256(content).hexdigest()

    def requests(self) -> list[str]:
        """Return the requests served so far, as "GET /path 200" lines."""
        return self.log.read_text().splitlines() if self.log.exists() else []


@dataclass
class Result:
    """What one SSH command returned."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@dataclass
class Lab:
    """Namespaces, users, sshd servers and the mirror of one test session."""

    root: Path
    token: str
    client_key: Path
    known_hosts: Path
    lan_namespace: str
    nodes: dict[str, Node] = field(default_factory=dict)
    mirror: Mirror | None = None
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def ssh(self, node: Node, command: str, stdin: str = "", timeout: float = 120, connect_timeout: int = 10) -> Result:
        """Run `command` on `node` over SSH with `stdin`, as the node's user, with the pinned host key."""
        argv = [
            "ip", "netns", "exec", self.lan_namespace,
            "ssh", "-F", "/dev/null", "-i", str(self.client_key),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "LogLevel=ERROR",
            "-o", f"ConnectTimeout={connect_timeout}", "-o", "ConnectionAttempts=1",
            f"{node.user}@{node.address}", command,
        ]  # fmt: skip
        started = time.monotonic()
        completed = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
        return Result(completed.returncode, completed.stdout, completed.stderr, time.monotonic() - started)

    def command_directory(self, name: str, hidden: Collection[str] = (), links: Mapping[str, str] | None = None) -> str:
        """Create a directory for PATH with this machine's commands minus `hidden`, plus `links`; return it.

        A test runs a script with `env PATH=<directory> sh` to see it on a node that lacks a tool, or that
        has another build of one: `links` maps a command name to the program it runs. /usr/local is left
        out, because every node mounts its own /usr/local/bin.
        """
        directory = self.root / "commands" / name
        directory.mkdir(parents=True)
        for command, program in (links or {}).items():
            (directory / command).symlink_to(program)
        for source in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
            if not Path(source).is_dir():
                continue
            for entry in Path(source).iterdir():
                link = directory / entry.name
                if entry.name not in hidden and not link.is_symlink():
                    link.symlink_to(entry)
        return str(directory)

    def close(self) -> None:
        """Undo everything, newest first; one failing step does not stop the others."""
        errors: list[str] = []
        while self._cleanups:
            step = self._cleanups.pop()
            try:
                step()
            except Exception as error:  # every later step must still run
                errors.append(str(error))
        if errors:
            raise LabError("cleaning up the SSH lab failed:\n" + "\n".join(errors))

    def _on_close(self, step: Callable[[], None]) -> None:
        self._cleanups.append(step)


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _add_user(lab: Lab, name: str, home: Path) -> None:
    # '*' is no valid password hash: password login is impossible, yet the account is not locked, which
    # sshd without PAM would refuse even for key logins.
    run("useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", "--password", "*", name)
    lab._on_close(lambda: run("userdel", "--force", name))


def _add_sudoers(lab: Lab, user: str, rule: str) -> None:
    path = Path(f"/etc/sudoers.d/calico-lab-{lab.token}-{user}")
    path.write_text(f"{user} ALL=(ALL) {rule}\n")
    path.chmod(0o440)
    lab._on_close(lambda: path.unlink(missing_ok=True))
    run("visudo", "-c", "-f", str(path))


def _start_node(lab: Lab, spec: NodeSpec, index: int, authorized_keys: Path) -> Node:
    namespace = f"calico-lab-{lab.token}-{index}"
    address = f"{LAN_PREFIX}.{10 + index}"
    root = lab.root / "nodes" / spec.name
    for directory in NODE_DIRECTORIES.values():
        (root / directory).mkdir(parents=True)

    run("ip", "netns", "add", namespace)
    lab._on_close(lambda: run("ip", "netns", "delete", namespace))
    run("ip", "-n", lab.lan_namespace, "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0",
        "netns", namespace)  # fmt: skip
    run("ip", "-n", lab.lan_namespace, "link", "set", f"v{index}", "master", "br0", "up")
    run("ip", "-n", namespace, "link", "set", "lo", "up")
    run("ip", "-n", namespace, "link", "set", "eth0", "mtu", "1500", "up")
    run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
    if spec.extra_address:
        run("ip", "-n", namespace, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1-peer")
        run("ip", "-n", namespace, "addr", "add", spec.extra_address, "dev", "eth1")
        run("ip", "-n", namespace, "link", "set", "eth1-peer", "up")
        run("ip", "-n", namespace, "link", "set", "eth1", "up")
    if not spec.reachable:
        run("ip", "-n", namespace, "route", "add", "blackhole", f"{LAN_ADDRESS}/32")

    host_key = root / "ssh_host_ed25519_key"
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(host_key))
    public_host_key = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
    with lab.known_hosts.open("a") as known_hosts:
        known_hosts.write(f"{address} {public_host_key}\n")

    config = root / "sshd_config"
    config.write_text(
        f"ListenAddress {address}\n"
        "Port 22\n"
        f"HostKey {host_key}\n"
        f"PidFile {root / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized_keys}/%u\n"
        "StrictModes no\n"
        "UsePAM no\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\n"
        "LogLevel ERROR\n"
    )

    mounts = [f"mount --bind {root / directory} {path}" for path, directory in NODE_DIRECTORIES.items()]
    mounts.append("mount -t tmpfs -o size=1m calico-lab-modules /sys/module")
    mounts += [f"mkdir /sys/module/{module}" for module in spec.modules]
    if Path("/lib/modules").is_dir():
        mounts.append("mount -t tmpfs -o size=1m calico-lab-modules /lib/modules")
    if spec.machine:
        real_uname = shutil.which("uname") or "/usr/bin/uname"
        shutil.copy(real_uname, root / "uname.real")
        fake = root / "uname"
        fake.write_text(
            "#!/bin/sh\n"
            f"# uname of the lab node {spec.name}: reports machine {spec.machine}.\n"
            f'if [ "$#" -eq 1 ] && [ "$1" = -m ]; then echo {spec.machine}; exit 0; fi\n'
            f'exec {root / "uname.real"} "$@"\n'
        )
        fake.chmod(0o755)
        mounts.append(f"mount --bind {fake} {Path(real_uname).resolve()}")
    startup = " && ".join([*mounts, f"exec {SSHD} -D -e -f {config}"])

    user = _user_name(lab.token, spec.login)
    node = Node(spec, address, user, root, namespace, public_host_key)
    node.reset()
    log = (root / "sshd.log").open("wb")
    node.process = subprocess.Popen(
        ["ip", "netns", "exec", namespace, "sh", "-c", startup], stdout=log, stderr=subprocess.STDOUT
    )
    process = node.process
    lab._on_close(lambda: (_stop(process), log.close()))
    return node


def _wait_until_ready(lab: Lab, node: Node) -> None:
    deadline = time.monotonic() + 15
    while True:
        result = lab.ssh(node, "true", timeout=10, connect_timeout=2)
        if result.returncode == 0:
            return
        if node.process is not None and node.process.poll() is not None:
            raise LabError(f"sshd of {node.name} exited: {(node.root / 'sshd.log').read_text()}")
        if time.monotonic() > deadline:
            raise LabError(f"sshd of {node.name} did not accept a login within 15 s: {result.output}")
        time.sleep(0.2)


def _start_mirror(lab: Lab) -> Mirror:
    root = lab.root / "mirror"
    root.mkdir()
    log = lab.root / "mirror.log"
    process = subprocess.Popen(
        ["ip", "netns", "exec", lab.lan_namespace, sys.executable, "-m", "tests.sshhosts", "serve",
         str(root), LAN_ADDRESS, str(log)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    lab._on_close(lambda: _stop(process))
    assert process.stdout is not None
    port_line = process.stdout.readline().decode().strip()
    if not port_line.isdigit():
        stderr = process.stderr.read().decode() if process.stderr and process.poll() is not None else ""
        raise LabError(f"the mirror did not start: {port_line!r} {stderr}")
    return Mirror(root, f"http://{LAN_ADDRESS}:{port_line}", log, process)


def start_lab(specs: Sequence[NodeSpec]) -> Lab:
    """Start the lan namespace, the mirror and one sshd per spec; the caller must call `close`."""
    root = Path(tempfile.mkdtemp(prefix="calico-lab-"))
    # Node users must reach files here (their home, the fake uname), and mkdtemp makes it private.
    root.chmod(0o755)
    token = secrets.token_hex(3)
    lab = Lab(root, token, root / "client_key", root / "known_hosts", f"calico-lab-{token}-lan")
    lab._on_close(lambda: shutil.rmtree(root, ignore_errors=True))
    try:
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "calico-lab", "-f", str(lab.client_key))
        lab.known_hosts.touch()
        authorized_keys = root / "authorized_keys"
        authorized_keys.mkdir()
        public_key = Path(f"{lab.client_key}.pub").read_text()

        # sshd refuses a login without its privilege separation directory. Neither it nor the mountpoints are
        # removed at close, because the sshd servers of another lab may be using them.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for path in NODE_DIRECTORIES:
            Path(path).mkdir(parents=True, exist_ok=True)

        (authorized_keys / "root").write_text(public_key)
        for login in sorted({spec.login for spec in specs} - {"root"}):
            user = _user_name(token, login)
            (authorized_keys / user).write_text(public_key)
            _add_user(lab, user, root / "home" / user)
            _add_sudoers(lab, user, _SUDO_RULES[login])

        run("ip", "netns", "add", lab.lan_namespace)
        lab._on_close(lambda: run("ip", "netns", "delete", lab.lan_namespace))
        run("ip", "-n", lab.lan_namespace, "link", "set", "lo", "up")
        run("ip", "-n", lab.lan_namespace, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", lab.lan_namespace, "addr", "add", f"{LAN_ADDRESS}/24", "dev", "br0")
        run("ip", "-n", lab.lan_namespace, "link", "set", "br0", "up")

        for index, spec in enumerate(specs, start=1):
            lab.nodes[spec.name] = _start_node(lab, spec, index, authorized_keys)
        for node in lab.nodes.values():
            if node.spec.reachable:
                _wait_until_ready(lab, node)
        lab.mirror = _start_mirror(lab)
    except BaseException:
        lab.close()
        raise
    return lab


class _LoggingHandler(http.server.SimpleHTTPRequestHandler):
    log_path: Path

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        with self.log_path.open("a") as log:
            log.write(f"{self.command} {self.path} {code}\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(root: str, address: str, log: str) -> None:
    """Serve `root` over HTTP on `address`, print the port, and log each request to `log`."""
    _LoggingHandler.log_path = Path(log)

    def handler(*args: Any) -> _LoggingHandler:
        return _LoggingHandler(*args, directory=root)

    server = http.server.ThreadingHTTPServer((address, 0), handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("usage: python -m tests.sshhosts serve ROOT ADDRESS LOG")
