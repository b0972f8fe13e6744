"""Stack settings: the typed, validated form of every `calico:<key>`.

`parse_settings` checks all keys at once and raises `ConfigError` listing every problem, each naming
the key, the bad value and the fix. Nothing here talks to Pulumi, the network or a node, so the
Pulumi program, the offline render and the tests share it.
"""

from __future__ import annotations

import difflib
import ipaddress
import posixpath
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components import versions

KEY_PREFIX = "calico:"

# Pod MTUs below the IPv4 minimum reassembly size break too much to be useful.
MIN_POD_MTU = 576
MAX_MTU = 65535
# The check probes every pingtest pod, about 14 s per unreachable pod, and its Job deadline grows with
# this count, so 100 pods already allow a Job of about half an hour.
MAX_PINGTEST_REPLICAS = 100
MIN_BLOCK_SIZE = 20
MAX_BLOCK_SIZE = 32


@dataclass(frozen=True)
class Encapsulation:
    """The calico-node pool settings and node requirements of one `calico:encapsulation` value."""

    overhead: int
    """Bytes each overlay packet adds over IPv4; the pod MTU is at most nodeMtu minus this."""
    ipip_mode: str
    """Value of CALICO_IPV4POOL_IPIP."""
    vxlan_mode: str
    """Value of CALICO_IPV4POOL_VXLAN."""
    kernel_module: str | None
    """Kernel module the nodes need for this overlay, or None."""


ENCAPSULATIONS: dict[str, Encapsulation] = {
    "IPIP": Encapsulation(20, "Always", "Never", "ipip"),
    "IPIPCrossSubnet": Encapsulation(20, "CrossSubnet", "Never", "ipip"),
    "VXLAN": Encapsulation(50, "Never", "Always", "vxlan"),
    "VXLANCrossSubnet": Encapsulation(50, "Never", "CrossSubnet", "vxlan"),
    "None": Encapsulation(0, "Never", "Never", None),
}

# The forms calico-node accepts in IP_AUTODETECTION_METHOD (Calico's "IP autodetection methods").
AUTODETECTION_FORMS = (
    "first-found",
    "kubernetes-internal-ip",
    "can-reach=<address or host name>",
    "interface=<regex>",
    "skip-interface=<regex>",
    "cidr=<cidr>[,<cidr>...]",
)

_NODE_FIELDS = ("name", "host", "user", "port", "hostKey")
_PINGTEST_FIELDS = ("enabled", "replicas", "image", "checkImage")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$")
_POSIX_USER = re.compile(r"^[a-z_][a-z0-9_-]*[$]?$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")


class ConfigError(Exception):
    """Invalid stack configuration; `problems` contains one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = len(problems)
        header = f"the stack configuration has {count} problem{'s' if count != 1 else ''}:"
        super().__init__("\n".join([header, *(f"  - {p}" for p in problems)]))


@dataclass(frozen=True)
class Node:
    """One Kubernetes node the program reaches over SSH."""

    name: str
    """Kubernetes node name."""
    host: str
    """Address or host name used for SSH."""
    user: str
    """SSH user; root, or a user with passwordless sudo."""
    port: int
    """SSH port."""
    host_key: str | None
    """Pinned SSH host public key ("ssh-ed25519 AAAA..."), or None to accept the node's key."""


@dataclass(frozen=True)
class Pingtest:
    """The pingtest Deployment and the network check that uses it."""

    enabled: bool
    """Whether the pingtest and the network check are deployed."""
    replicas: int
    """Number of busybox pods, spread one per node."""
    image: str
    """Image of the pingtest pods (busybox)."""
    check_image: str
    """Image of the network check; its ping must be iputils ping (for don't-fragment pings)."""


@dataclass(frozen=True)
class ManifestSource:
    """The source of the Calico manifest and its expected digest."""

    location: str
    """Local path or https URL."""
    sha256: str | None
    """Expected sha256, or None for a local file the user gave without one."""
    is_url: bool
    """True when `location` is a URL to download."""


@dataclass(frozen=True)
class Settings:
    """All `calico:<key>` values, validated."""

    version: str
    """Calico release, for example v3.31.7."""
    manifest: ManifestSource
    """The calico.yaml to apply."""
    pod_cidr: ipaddress.IPv4Network
    """The first IP pool (kubeadm's podSubnet)."""
    service_cidr: ipaddress.IPv4Network
    """The cluster's Service network."""
    block_size: int
    """Prefix length of per-node blocks."""
    encapsulation: str
    """A key of ENCAPSULATIONS."""
    node_mtu: int
    """The nodes' NIC MTU in bytes."""
    mtu: int
    """Pod (veth) MTU in bytes, derived from node_mtu when calico:mtu is 0."""
    ip_autodetection_method: str | None
    """IP_AUTODETECTION_METHOD for calico-node, or None for upstream's default."""
    nodes: tuple[Node, ...]
    """The cluster's nodes."""
    ssh_private_key_set: bool
    """Whether calico:sshPrivateKey is set; otherwise the SSH agent is used."""
    calicoctl_install_dir: str
    """Directory on each node that receives calicoctl."""
    calicoctl_url: str | None
    """Download URL template with {version} and {arch}, or None for upstream."""
    calicoctl_sha256: dict[str, str]
    """Expected calicoctl sha256 per architecture, from calico:calicoctlSha256."""
    pingtest: Pingtest
    """The pingtest and network check."""

    @property
    def encapsulation_spec(self) -> Encapsulation:
        """The ENCAPSULATIONS entry of `encapsulation`."""
        return ENCAPSULATIONS[self.encapsulation]


def _set_command(key: str, value: object) -> str:
    return f"pulumi config set {KEY_PREFIX}{key} {value}"


def _key(key: str) -> str:
    return f"{KEY_PREFIX}{key}"


class _Collector:
    """Gathers problems so that every one is reported, not only the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, key: str, value: object, message: str, fix: str) -> None:
        self.problems.append(f"{_key(key)} = {value!r}: {message} Fix: {fix}")


def _as_int(problems: _Collector, key: str, value: Any) -> int | None:
    if isinstance(value, bool):
        problems.add(key, value, "must be an integer.", _set_command(key, "<integer>"))
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip()):
        return int(value.strip())
    problems.add(key, value, "must be an integer.", _set_command(key, "<integer>"))
    return None


def _as_str(problems: _Collector, key: str, value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    problems.add(key, value, "must be a string.", _set_command(key, "<value>"))
    return None


def _as_bool(problems: _Collector, key: str, value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    problems.add(key, value, "must be true or false.", f"pulumi config set --path {_key(key)} true")
    return None


def _parse_cidr(
    problems: _Collector, key: str, value: Any, example: str
) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    text = _as_str(problems, key, value)
    if text is None:
        return None
    if not text:
        problems.add(key, text, "is required and empty.", _set_command(key, example))
        return None
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as error:
        if "host bits set" in str(error):
            network = ipaddress.ip_network(text, strict=False)
            problems.add(
                key,
                text,
                f"has host bits set; the network that contains it is {network}.",
                _set_command(key, network),
            )
        else:
            problems.add(key, text, "is not a CIDR (address/prefix length).", _set_command(key, example))
        return None


def _check_unknown_keys(problems: _Collector, values: Mapping[str, Any], declared: Collection[str]) -> None:
    for key in values:
        if key in declared:
            continue
        by_lowercase = {name.lower(): name for name in declared}
        close = difflib.get_close_matches(key.lower(), list(by_lowercase), n=1)
        close = [by_lowercase[name] for name in close]
        if close:
            fix = f"rename it: pulumi config rm {_key(key)} && pulumi config set {_key(close[0])} <value>"
            message = f"is not a setting of this program; did you mean {_key(close[0])}?"
        else:
            fix = f"pulumi config rm {_key(key)}"
            message = "is not a setting of this program (see the README's settings table)."
        problems.add(key, values[key], message, fix)


def _parse_manifest_source(
    problems: _Collector, version: str | None, manifest: str | None, manifest_sha256: str | None
) -> ManifestSource | None:
    if manifest_sha256:
        manifest_sha256 = manifest_sha256.lower()
        if not _SHA256.fullmatch(manifest_sha256):
            problems.add(
                "manifestSha256",
                manifest_sha256,
                "must be 64 hexadecimal digits (the output of sha256sum).",
                _set_command("manifestSha256", "$(sha256sum calico.yaml | cut -d' ' -f1)"),
            )
            return None
    pin = versions.MANIFESTS.get(version) if version else None
    if not manifest:
        if version is None:
            return None
        if pin is None:
            pinned = ", ".join(versions.MANIFESTS)
            problems.add(
                "version",
                version,
                f"has no pinned manifest (pinned releases: {pinned}), and calico:manifest is not set.",
                f"choose a pinned release, or set {_key('manifest')} to the release's calico.yaml "
                f"(a local path, or an https URL together with {_key('manifestSha256')}).",
            )
            return None
        return ManifestSource(pin.url, manifest_sha256 or pin.sha256, is_url=True)
    if manifest.startswith("http://"):
        problems.add(
            "manifest",
            manifest,
            "is a plain-HTTP URL; the manifest must come over https.",
            _set_command("manifest", "https://" + manifest.removeprefix("http://")),
        )
        return None
    if manifest.startswith("https://"):
        pinned_sha = next((p.sha256 for p in versions.MANIFESTS.values() if p.url == manifest), None)
        sha = manifest_sha256 or pinned_sha
        if sha is None:
            problems.add(
                "manifest",
                manifest,
                "is a URL the project does not pin, so its download cannot be verified.",
                _set_command("manifestSha256", "<sha256 of that file>"),
            )
            return None
        return ManifestSource(manifest, sha, is_url=True)
    if "://" in manifest:
        problems.add(
            "manifest",
            manifest,
            "must be a local path or an https URL.",
            _set_command("manifest", "./calico.yaml"),
        )
        return None
    if not Path(manifest).is_file():
        problems.add(
            "manifest",
            manifest,
            f"no such file (looked in {Path(manifest).resolve()}).",
            f"{_set_command('manifest', '<path of an existing calico.yaml>')}, or unset it: "
            f"pulumi config rm {_key('manifest')}",
        )
        return None
    return ManifestSource(manifest, manifest_sha256, is_url=False)


def _parse_nodes(problems: _Collector, raw_nodes: Any, ssh_user: str | None) -> tuple[Node, ...]:
    example = (
        "pulumi config set --path 'calico:nodes[0].name' node-1 && "
        "pulumi config set --path 'calico:nodes[0].host' 192.0.2.11"
    )
    if not isinstance(raw_nodes, list):
        problems.add("nodes", raw_nodes, "must be a list of {name, host, user, port, hostKey}.", example)
        return ()
    if not raw_nodes:
        problems.add("nodes", raw_nodes, "is empty; list every node of the cluster.", example)
        return ()
    indexed: list[tuple[int, Node]] = []
    for index, entry in enumerate(raw_nodes):
        key = f"nodes[{index}]"
        if not isinstance(entry, Mapping):
            problems.add(key, entry, "must be an object {name, host, user, port, hostKey}.", example)
            continue
        for field in entry:
            if field not in _NODE_FIELDS:
                close = difflib.get_close_matches(str(field), _NODE_FIELDS, n=1)
                hint = f"; did you mean {close[0]}?" if close else f"; allowed: {', '.join(_NODE_FIELDS)}."
                problems.add(
                    f"{key}.{field}",
                    entry[field],
                    f"is not a node field{hint}",
                    f"pulumi config rm --path '{_key(key)}.{field}'",
                )
        name = entry.get("name")
        if not isinstance(name, str) or not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 253:
            problems.add(
                f"{key}.name",
                name,
                "must be the node's Kubernetes name (lowercase letters, digits, '-' and '.').",
                f"pulumi config set --path '{_key(key)}.name' <name from kubectl get nodes>",
            )
            name = None
        host = entry.get("host")
        if not isinstance(host, str) or not host.strip():
            problems.add(
                f"{key}.host",
                host,
                "is required: the node's address for SSH.",
                f"pulumi config set --path '{_key(key)}.host' 192.0.2.11",
            )
            host = None
        else:
            host = host.strip()
            host_problem = _host_problem(host)
            if host_problem:
                problems.add(
                    f"{key}.host", host, host_problem, f"pulumi config set --path '{_key(key)}.host' 192.0.2.11"
                )
                host = None
        user = entry.get("user", ssh_user)
        if "user" not in entry and ssh_user is None:
            pass  # calico:sshUser is invalid and already reported
        elif not isinstance(user, str) or not _POSIX_USER.fullmatch(user):
            problems.add(
                f"{key}.user", user, "is not a valid user name.", f"pulumi config set --path '{_key(key)}.user' pi"
            )
            user = None
        port = entry.get("port", 22)
        port_number = _as_int(problems, f"{key}.port", port)
        if port_number is not None and not 1 <= port_number <= 65535:
            problems.add(
                f"{key}.port", port, "must be between 1 and 65535.", f"pulumi config set --path '{_key(key)}.port' 22"
            )
            port_number = None
        host_key = entry.get("hostKey")
        if host_key is not None and (
            not isinstance(host_key, str) or len(host_key.split()) < 2 or "\n" in host_key.strip()
        ):
            problems.add(
                f"{key}.hostKey",
                host_key,
                "must be a public host key line such as 'ssh-ed25519 AAAA...'.",
                f"pulumi config set --path '{_key(key)}.hostKey' \"$(ssh-keyscan -t ed25519 <host> | cut -d' ' -f2-)\"",
            )
            host_key = None
        if name and host and user and port_number is not None:
            indexed.append((index, Node(name, host, user, port_number, host_key.strip() if host_key else None)))

    _check_duplicates(problems, indexed)
    return tuple(node for _, node in indexed)


def _host_problem(host: str) -> str | None:
    """Return why `host` cannot be a node's SSH address, or None when it can."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if address.is_unspecified or address.is_multicast or address == ipaddress.ip_address("255.255.255.255"):
            return "is not the address of a single host (unspecified, multicast or broadcast)."
        return None
    if not _HOSTNAME.fullmatch(host):
        return "is neither an IP address nor a host name."
    # Resolvers read "192.0.2.011", "12345" or "0x7f.1" as (other) IPv4 addresses, which would
    # dodge the address checks here, so such names are rejected.
    if all(re.fullmatch(r"[0-9]+|0[xX][0-9a-fA-F]*", label) for label in host.split(".")):
        return "looks like an IPv4 address but is not one in dotted-decimal form."
    return None


def _canonical_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().rstrip(".")


def _special_network(network: ipaddress.IPv4Network) -> str | None:
    """Name the special-purpose range `network` overlaps (loopback, link-local, ...), or None."""
    checks = (
        ("loopback", ipaddress.ip_network("127.0.0.0/8")),
        ("link-local", ipaddress.ip_network("169.254.0.0/16")),
        ("multicast", ipaddress.ip_network("224.0.0.0/4")),
        ("reserved", ipaddress.ip_network("240.0.0.0/4")),
        ("'this network'", ipaddress.ip_network("0.0.0.0/8")),
    )
    for label, special in checks:
        if network.overlaps(special):
            return label
    return None


def _check_duplicates(problems: _Collector, indexed: list[tuple[int, Node]]) -> None:
    seen_names: dict[str, int] = {}
    seen_hosts: dict[tuple[str, int], int] = {}
    for index, node in indexed:
        if node.name in seen_names:
            problems.add(
                f"nodes[{index}].name",
                node.name,
                f"is also the name of nodes[{seen_names[node.name]}]; node names must be unique.",
                f"remove the duplicate: pulumi config rm --path 'calico:nodes[{index}]'",
            )
        seen_names.setdefault(node.name, index)
        endpoint = (_canonical_host(node.host), node.port)
        if endpoint in seen_hosts:
            problems.add(
                f"nodes[{index}].host",
                node.host,
                f"is also the host of nodes[{seen_hosts[endpoint]}]; each node needs its own address.",
                f"pulumi config set --path 'calico:nodes[{index}].host' <address of {node.name}>",
            )
        seen_hosts.setdefault(endpoint, index)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _parse_pingtest(problems: _Collector, raw: Any) -> Pingtest | None:
    if not isinstance(raw, Mapping):
        problems.add(
            "pingtest",
            raw,
            "must be an object {enabled, replicas, image, checkImage}.",
            "pulumi config set --path calico:pingtest.enabled true",
        )
        return None
    for field in raw:
        if field not in _PINGTEST_FIELDS:
            close = difflib.get_close_matches(str(field), _PINGTEST_FIELDS, n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; allowed: {', '.join(_PINGTEST_FIELDS)}."
            problems.add(
                f"pingtest.{field}",
                raw[field],
                f"is not a pingtest field{hint}",
                f"pulumi config rm --path calico:pingtest.{field}",
            )
    missing = [field for field in _PINGTEST_FIELDS if field not in raw]
    if missing:
        problems.add(
            "pingtest",
            dict(raw),
            f"lacks {', '.join(missing)}.",
            f"pulumi config set --path calico:pingtest.{missing[0]} <value>",
        )
        return None
    enabled = _as_bool(problems, "pingtest.enabled", raw["enabled"])
    replicas = _as_int(problems, "pingtest.replicas", raw["replicas"])
    if replicas is not None and replicas < 1:
        problems.add(
            "pingtest.replicas",
            replicas,
            "must be at least 1 (to turn the pingtest off, set enabled).",
            "pulumi config set --path calico:pingtest.enabled false",
        )
        replicas = None
    elif replicas is not None and replicas > MAX_PINGTEST_REPLICAS:
        problems.add(
            "pingtest.replicas",
            replicas,
            f"is more than {MAX_PINGTEST_REPLICAS}; the check probes every pod, so its run time grows with the count.",
            "pulumi config set --path calico:pingtest.replicas <number of nodes>",
        )
        replicas = None
    images: list[str | None] = []
    for field in ("image", "checkImage"):
        image = raw[field]
        if (
            not isinstance(image, str)
            or not _IMAGE.fullmatch(image)
            or not re.search(r":[A-Za-z0-9_][A-Za-z0-9._-]*$|@sha256:[0-9a-f]{64}$", image.rsplit("/", 1)[-1])
        ):
            problems.add(
                f"pingtest.{field}",
                image,
                "must be an image reference with a tag or digest.",
                f"pulumi config set --path calico:pingtest.{field} docker.io/library/busybox:1.36.1",
            )
            images.append(None)
        else:
            images.append(image)
    if enabled is None or replicas is None or images[0] is None or images[1] is None:
        return None
    return Pingtest(enabled, replicas, images[0], images[1])


def _check_autodetection(problems: _Collector, method: str) -> None:
    key = "ipAutodetectionMethod"
    fix = _set_command(key, "kubernetes-internal-ip")
    if method in ("first-found", "kubernetes-internal-ip"):
        return
    name, separator, argument = method.partition("=")
    if not separator or not argument:
        problems.add(
            key, method, f"is not a method calico-node knows; use one of: {', '.join(AUTODETECTION_FORMS)}.", fix
        )
        return
    if name == "cidr":
        for part in argument.split(","):
            try:
                network = ipaddress.ip_network(part.strip(), strict=False)
            except ValueError:
                problems.add(key, method, f"{part!r} is not a CIDR.", _set_command(key, "cidr=192.0.2.0/24"))
                continue
            if network.version != 4:
                problems.add(
                    key,
                    method,
                    f"{part!r} is IPv6; this setting picks the node's IPv4 address.",
                    _set_command(key, "cidr=192.0.2.0/24"),
                )
        return
    if name in ("interface", "skip-interface"):
        try:
            re.compile(argument)
        except re.error as error:
            problems.add(
                key, method, f"the regular expression is invalid ({error}).", _set_command(key, "interface=eth0")
            )
            return
        # calico-node matches with Go's RE2, which has no lookaround and no backreferences.
        if re.search(r"\(\?<?[=!]|\\[1-9]", argument):
            problems.add(
                key,
                method,
                "uses lookaround or a backreference, which calico-node's Go regular expressions (RE2) do not support.",
                _set_command(key, "skip-interface=eth0"),
            )
        return
    if name == "can-reach":
        if not _is_address(argument) and not _HOSTNAME.fullmatch(argument):
            problems.add(
                key, method, "can-reach needs an IP address or a host name.", _set_command(key, "can-reach=192.0.2.1")
            )
        return
    problems.add(key, method, f"is not a method calico-node knows; use one of: {', '.join(AUTODETECTION_FORMS)}.", fix)


# Virtual or system folders no binary belongs in.
_FORBIDDEN_INSTALL_DIRS = ("/proc", "/sys", "/dev", "/run", "/boot", "/etc")


def _install_dir_problem(path: str) -> str | None:
    """Return why `path` cannot be calico:calicoctlInstallDir, or None when it can."""
    if not _SAFE_PATH.fullmatch(path) or path == "/":
        return "must be an absolute directory made of letters, digits, '.', '_', '-' and '/'."
    # One spelling per directory: the node records the installed path, and a second spelling of the
    # same directory would make a later removal delete the binary a new install just put there.
    if posixpath.normpath(path) != path or path.startswith("//"):
        return f"must be written in normal form ({posixpath.normpath(path)}: no '//', '.', '..' or trailing '/')."
    if any(path == top or path.startswith(top + "/") for top in _FORBIDDEN_INSTALL_DIRS):
        return "is a system or virtual folder; use a directory on PATH such as /usr/local/bin."
    return None


def _check_calicoctl(problems: _Collector, url: str | None, sha256: Any) -> dict[str, str]:
    # Whether a checksum exists for each node's architecture is only known once the nodes report
    # their architecture, so the node preflight checks that, not this function.
    checksums: dict[str, str] = {}
    if not isinstance(sha256, Mapping):
        problems.add(
            "calicoctlSha256",
            sha256,
            "must be an object {<arch>: <sha256>}.",
            "pulumi config set --path calico:calicoctlSha256.arm64 <sha256>",
        )
    else:
        for arch, value in sha256.items():
            if arch not in versions.ARCHITECTURES:
                problems.add(
                    f"calicoctlSha256.{arch}",
                    value,
                    f"is not an architecture calicoctl is published for ({', '.join(versions.ARCHITECTURES)}).",
                    f"pulumi config rm --path calico:calicoctlSha256.{arch}",
                )
            elif not isinstance(value, str) or not _SHA256.fullmatch(value.lower()):
                problems.add(
                    f"calicoctlSha256.{arch}",
                    value,
                    "must be 64 hexadecimal digits.",
                    f"pulumi config set --path calico:calicoctlSha256.{arch} <sha256>",
                )
            else:
                checksums[str(arch)] = value.lower()
    if url:
        if not url.startswith(("https://", "http://")):
            problems.add(
                "calicoctlUrl",
                url,
                "must be an http(s) URL template.",
                _set_command("calicoctlUrl", "https://mirror.example/calicoctl/{version}/calicoctl-linux-{arch}"),
            )
        elif "{arch}" not in url:
            problems.add(
                "calicoctlUrl",
                url,
                "lacks the {arch} placeholder, so every architecture would get the same binary.",
                _set_command("calicoctlUrl", "https://mirror.example/calicoctl/{version}/calicoctl-linux-{arch}"),
            )
        else:
            leftover = url.replace("{version}", "").replace("{arch}", "")
            if "{" in leftover or "}" in leftover or any(c in url for c in " '\"\\`$;|&<>#\n\t\r"):
                problems.add(
                    "calicoctlUrl",
                    url,
                    "may contain only the {version} and {arch} placeholders and no spaces, quotes or shell characters.",
                    _set_command("calicoctlUrl", "https://mirror.example/calicoctl/{version}/calicoctl-linux-{arch}"),
                )
    return checksums


def parse_settings(
    values: Mapping[str, Any],
    *,
    declared_keys: Collection[str],
    secret_keys: Collection[str] = (),
) -> Settings:
    """Validate every setting and return them typed.

    `values` maps short key names (without `calico:`) to values with the declared defaults applied,
    `declared_keys` lists the keys of Pulumi.yaml, and `secret_keys` the keys stored encrypted.
    Raises ConfigError listing every problem found.
    """
    problems = _Collector()
    _check_unknown_keys(problems, values, declared_keys)

    def get(key: str) -> Any:
        return values.get(key)

    version = _as_str(problems, "version", get("version"))
    if version is not None and versions.parse_release(version) is None:
        suggestion = f"v{version}" if versions.parse_release(f"v{version}") else "v3.31.7"
        problems.add("version", version, "must be a release name such as v3.31.7.", _set_command("version", suggestion))
        version = None

    manifest = _as_str(problems, "manifest", get("manifest") or "")
    manifest_sha256 = _as_str(problems, "manifestSha256", get("manifestSha256") or "")
    manifest_source = None
    if version is not None and manifest is not None and manifest_sha256 is not None:
        manifest_source = _parse_manifest_source(problems, version, manifest, manifest_sha256)

    pod_example = "10.244.0.0/16"
    raw_pod_cidr = get("podCidr")
    pod_cidr = None
    if raw_pod_cidr is None:
        problems.add(
            "podCidr",
            None,
            "is required: the cluster's pod network (kubeadm's networking.podSubnet).",
            _set_command("podCidr", pod_example),
        )
    else:
        parsed = _parse_cidr(problems, "podCidr", raw_pod_cidr, pod_example)
        if isinstance(parsed, ipaddress.IPv6Network):
            problems.add(
                "podCidr",
                str(parsed),
                "is IPv6; this program configures an IPv4 pool only.",
                _set_command("podCidr", pod_example),
            )
        elif parsed is not None and _special_network(parsed):
            problems.add(
                "podCidr",
                str(parsed),
                f"is a {_special_network(parsed)} range, which cannot carry pod traffic.",
                _set_command("podCidr", pod_example),
            )
        elif parsed is not None:
            pod_cidr = parsed
    service_cidr = _parse_cidr(problems, "serviceCidr", get("serviceCidr"), "10.96.0.0/12")
    if isinstance(service_cidr, ipaddress.IPv6Network):
        problems.add(
            "serviceCidr",
            str(service_cidr),
            "is IPv6; the pool this program configures is IPv4, so give the cluster's IPv4 Service network.",
            _set_command("serviceCidr", "10.96.0.0/12"),
        )
        service_cidr = None

    if pod_cidr is not None and service_cidr is not None and pod_cidr.overlaps(service_cidr):
        relation = (
            "lies inside"
            if pod_cidr.subnet_of(service_cidr)
            else "contains"
            if service_cidr.subnet_of(pod_cidr)
            else "overlaps"
        )
        problems.add(
            "podCidr",
            str(pod_cidr),
            f"{relation} the Service network calico:serviceCidr = {service_cidr}, so pod and Service "
            "addresses would collide. `kubeadm config print init-defaults | grep Subnet` prints the "
            "Service subnet, not the pod subnet; use the --pod-network-cidr given to kubeadm init "
            "(networking.podSubnet in `kubectl -n kube-system get configmap kubeadm-config -o yaml`).",
            _set_command(
                "podCidr",
                pod_example if not ipaddress.ip_network(pod_example).overlaps(service_cidr) else "<your podSubnet>",
            ),
        )

    block_size = _as_int(problems, "blockSize", get("blockSize"))
    if block_size is not None and not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        problems.add(
            "blockSize",
            block_size,
            f"must be between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE} (a prefix length; 26 = 64 addresses).",
            _set_command("blockSize", 26),
        )
        block_size = None
    if pod_cidr is not None and block_size is not None and pod_cidr.prefixlen > block_size:
        problems.add(
            "podCidr",
            str(pod_cidr),
            f"is smaller than one block of calico:blockSize = {block_size} (a /{block_size}); the pool must "
            "hold at least one block per node.",
            f"use a larger pool, or {_set_command('blockSize', pod_cidr.prefixlen)}",
        )

    encapsulation = _as_str(problems, "encapsulation", get("encapsulation"))
    if encapsulation is not None and encapsulation not in ENCAPSULATIONS:
        close = [name for name in ENCAPSULATIONS if name.lower() == encapsulation.lower()]
        problems.add(
            "encapsulation",
            encapsulation,
            f"is not one of {', '.join(ENCAPSULATIONS)} (case matters).",
            _set_command("encapsulation", close[0] if close else "IPIP"),
        )
        encapsulation = None

    node_mtu = _as_int(problems, "nodeMtu", get("nodeMtu"))
    mtu_setting = _as_int(problems, "mtu", get("mtu"))
    mtu = None
    if node_mtu is not None and not MIN_POD_MTU <= node_mtu <= MAX_MTU:
        problems.add(
            "nodeMtu",
            node_mtu,
            f"must be between {MIN_POD_MTU} and {MAX_MTU} bytes (`ip link show` on a node prints it).",
            _set_command("nodeMtu", 1500),
        )
        node_mtu = None
    if node_mtu is not None and mtu_setting is not None and encapsulation is not None:
        overhead = ENCAPSULATIONS[encapsulation].overhead
        largest = node_mtu - overhead
        if mtu_setting == 0:
            mtu = largest
            if mtu < MIN_POD_MTU:
                problems.add(
                    "nodeMtu",
                    node_mtu,
                    f"leaves a pod MTU of {mtu} after {encapsulation}'s {overhead} bytes, below {MIN_POD_MTU}.",
                    _set_command("nodeMtu", 1500),
                )
                mtu = None
        elif mtu_setting < MIN_POD_MTU:
            problems.add(
                "mtu",
                mtu_setting,
                f"is below the minimum pod MTU of {MIN_POD_MTU} bytes.",
                f"{_set_command('mtu', largest)} (or 0 to derive it from calico:nodeMtu)",
            )
        elif mtu_setting > largest:
            problems.add(
                "mtu",
                mtu_setting,
                f"is larger than {encapsulation} leaves of calico:nodeMtu = {node_mtu}: {encapsulation} adds "
                f"{overhead} bytes, so the maximum is {largest}. Larger packets between nodes would be dropped.",
                f"{_set_command('mtu', largest)} (or 0 to derive it from calico:nodeMtu)",
            )
        else:
            mtu = mtu_setting

    autodetection = _as_str(problems, "ipAutodetectionMethod", get("ipAutodetectionMethod") or "")
    if autodetection:
        _check_autodetection(problems, autodetection)

    ssh_user = _as_str(problems, "sshUser", get("sshUser"))
    if ssh_user is not None and not _POSIX_USER.fullmatch(ssh_user):
        problems.add("sshUser", ssh_user, "is not a valid user name.", _set_command("sshUser", "root"))
        ssh_user = None
    nodes = _parse_nodes(problems, get("nodes"), ssh_user)
    node_addresses = [(node, ipaddress.ip_address(node.host)) for node in nodes if _is_address(node.host)]
    if pod_cidr is not None:
        for node, address in node_addresses:
            if address in pod_cidr:
                problems.add(
                    "podCidr",
                    str(pod_cidr),
                    f"contains the address of node {node.name} ({node.host}); pod routes would capture "
                    "traffic to the nodes' own network.",
                    "choose a pod network that is not in use on the LAN, for example "
                    f"{_set_command('podCidr', '10.244.0.0/16')} (and the same --pod-network-cidr for kubeadm)",
                )
                break
    if service_cidr is not None:
        for node, address in node_addresses:
            if address in service_cidr:
                problems.add(
                    "serviceCidr",
                    str(service_cidr),
                    f"contains the address of node {node.name} ({node.host}); kube-proxy would capture "
                    "traffic to that node.",
                    f"check calico:nodes' hosts and {_set_command('serviceCidr', '<the cluster serviceSubnet>')}",
                )
                break
    if pod_cidr is not None and block_size is not None and pod_cidr.prefixlen <= block_size and nodes:
        blocks = 2 ** (block_size - pod_cidr.prefixlen)
        if blocks < len(nodes):
            problems.add(
                "podCidr",
                str(pod_cidr),
                f"holds {blocks} block(s) of calico:blockSize = {block_size}, fewer than the {len(nodes)} nodes "
                "in calico:nodes, so some nodes would have no block of their own and borrow addresses from "
                "other nodes' blocks.",
                f"use a larger pool, or a larger calico:blockSize (smaller blocks), for example "
                f"{_set_command('blockSize', min(MAX_BLOCK_SIZE, block_size + (len(nodes) - 1).bit_length()))}",
            )

    ssh_key = get("sshPrivateKey") or ""
    if ssh_key and "sshPrivateKey" not in secret_keys:
        problems.add(
            "sshPrivateKey",
            "<hidden>",
            "is stored in plain text in the stack file; an SSH key must be a secret.",
            f"pulumi config rm {_key('sshPrivateKey')} && pulumi config set --secret {_key('sshPrivateKey')} "
            "< ~/.ssh/id_ed25519 (and rotate the key if the file was shared)",
        )

    install_dir = _as_str(problems, "calicoctlInstallDir", get("calicoctlInstallDir"))
    if install_dir is not None:
        install_problem = _install_dir_problem(install_dir)
        if install_problem:
            problems.add(
                "calicoctlInstallDir",
                install_dir,
                install_problem,
                _set_command("calicoctlInstallDir", "/usr/local/bin"),
            )
            install_dir = None

    calicoctl_url = _as_str(problems, "calicoctlUrl", get("calicoctlUrl") or "")
    calicoctl_sha256 = _check_calicoctl(problems, calicoctl_url, get("calicoctlSha256") or {})
    pingtest = _parse_pingtest(problems, get("pingtest"))
    if pingtest is not None and pingtest.enabled and pingtest.replicas < 2 <= len(nodes):
        problems.add(
            "pingtest.replicas",
            pingtest.replicas,
            f"gives one pingtest pod for {len(nodes)} nodes, so the network check could not test traffic "
            "between nodes and would fail.",
            f"pulumi config set --path calico:pingtest.replicas {min(len(nodes), MAX_PINGTEST_REPLICAS)}",
        )

    if problems.problems:
        raise ConfigError(problems.problems)
    # Every value below is set whenever no problem was reported; the asserts tell the type checker so.
    assert version is not None
    assert manifest_source is not None
    assert pod_cidr is not None
    assert service_cidr is not None
    assert block_size is not None
    assert encapsulation is not None
    assert node_mtu is not None
    assert mtu is not None
    assert install_dir is not None
    assert pingtest is not None
    return Settings(
        version=version,
        manifest=manifest_source,
        pod_cidr=pod_cidr,
        service_cidr=service_cidr,
        block_size=block_size,
        encapsulation=encapsulation,
        node_mtu=node_mtu,
        mtu=mtu,
        ip_autodetection_method=autodetection or None,
        nodes=nodes,
        ssh_private_key_set=bool(ssh_key),
        calicoctl_install_dir=install_dir,
        calicoctl_url=calicoctl_url or None,
        calicoctl_sha256=calicoctl_sha256,
        pingtest=pingtest,
    )
