"""Parse, check and transform Calico's manifest install (`calico.yaml`): plain data in, plain data out.

The Pulumi program, the offline render and the tests share these functions. Nothing here does I/O or
imports Pulumi. The rules follow the two layouts upstream has shipped: helm v2 output up to v3.22 (empty
`# Source:` documents, PodDisruptionBudget in policy/v1beta1) and helm v3 output from v3.24 on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import yaml

from components.settings import Settings

SETTINGS_HASH_ANNOTATION = "calico-pulumi/settings-hash"
NODE_DAEMONSET = "calico-node"
NODE_CONTAINER = "calico-node"
CONFIG_MAP = "calico-config"
CNI_MTU_PLACEHOLDER = "__CNI_MTU__"

_VERSION_KEY = "calico:version"
_MANIFEST_KEY = "calico:manifest"
_MANIFEST_FIX = (
    f"set {_MANIFEST_KEY} to the unmodified calico.yaml of the Calico release (the manifest install), "
    f"or unset it to use the pinned download of {_VERSION_KEY}"
)

# libyaml parses the upstream files (200 to 350 KB) about ten times faster than the pure-Python loader
# (measured with PyYAML 6.0.3) and builds the same objects. Both are safe loaders.
_SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# install-cni substitutes placeholders such as __CNI_MTU__ written bare (without quotes) in the JSON text.
_BARE_PLACEHOLDER = re.compile(r"(:\s*)(__[A-Z0-9_]+__)(\s*[,}\]])")
_MTU_FIELD = re.compile(r'"mtu"\s*:\s*("[^"]*"|[^,}\s]+)')


class ManifestError(Exception):
    """A file that is not a usable Calico manifest. The message names the source and the fix."""


@dataclass(frozen=True)
class TransformParams:
    """The settings the transformation writes into the manifest."""

    pod_cidr: str
    """IPv4 pool CIDR, for example 10.244.0.0/16 (CALICO_IPV4POOL_CIDR)."""
    block_size: int
    """Prefix length of per-node blocks (CALICO_IPV4POOL_BLOCK_SIZE)."""
    mtu: int
    """Pod (veth) MTU in bytes, written to calico-config's veth_mtu."""
    ipip_mode: str
    """CALICO_IPV4POOL_IPIP: Always, CrossSubnet or Never."""
    vxlan_mode: str
    """CALICO_IPV4POOL_VXLAN: Always, CrossSubnet or Never."""
    ip_autodetection_method: str | None
    """IP_AUTODETECTION_METHOD, or None to keep upstream's default."""

    @classmethod
    def from_settings(cls, settings: Settings) -> TransformParams:
        """Build the parameters from validated stack settings."""
        encapsulation = settings.encapsulation_spec
        return cls(
            pod_cidr=str(settings.pod_cidr),
            block_size=settings.block_size,
            mtu=settings.mtu,
            ipip_mode=encapsulation.ipip_mode,
            vxlan_mode=encapsulation.vxlan_mode,
            ip_autodetection_method=settings.ip_autodetection_method,
        )


def settings_hash(params: TransformParams) -> str:
    """Return the first 16 hex digits of the sha256 of the parameters as canonical JSON."""
    canonical = json.dumps(asdict(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


# --- Parsing -------------------------------------------------------------------------------------------


def parse_manifest(text: str, source: str) -> list[dict[str, Any]]:
    """Parse a multi-document manifest into its Kubernetes objects, dropping empty documents.

    `source` (URL or path) appears in every error. Raises ManifestError when the text is not YAML, contains
    no object, or contains a document that is not a Kubernetes object.
    """
    try:
        documents = list(yaml.load_all(text, Loader=_SAFE_LOADER))
    except yaml.YAMLError as error:
        raise ManifestError(_describe_yaml_error(text, source, error)) from error

    objects: list[dict[str, Any]] = []
    for position, document in enumerate(documents, start=1):
        # helm v2 output (v3.21, v3.22) contains documents with only a "# Source:" comment.
        if document is None:
            continue
        problem = _object_problem(document)
        if problem is not None:
            hint = _html_hint(text)
            raise ManifestError(
                f"{source}: YAML document {position} is {problem}, not a Kubernetes object "
                f"(a mapping with apiVersion, kind and metadata.name).{hint} Fix: {_MANIFEST_FIX}."
            )
        objects.append(document)

    if not objects:
        raise ManifestError(
            f"{source}: contains no Kubernetes objects (the file is empty or contains only comments). "
            f"Fix: {_MANIFEST_FIX}."
        )
    return objects


def _describe_yaml_error(text: str, source: str, error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = ""
    if mark is not None:
        where = f" at line {mark.line + 1}, column {mark.column + 1}"
        lines = text.splitlines()
        if 0 <= mark.line < len(lines):
            where += f" (the line reads {lines[mark.line].strip()!r})"

    hint = _html_hint(text)
    if "{%" in text:
        hint = (
            " It contains '{%', so it looks like the Jekyll template that upstream kept in git before v3.24 "
            "(the raw GitHub URL of manifests/calico.yaml at v3.21.0 to v3.21.2 returns it), not a rendered "
            "manifest. Users of v3.21 to v3.23 downloaded the rendered file from the docs site's archive."
        )
    elif "{{" in text:
        hint = " It contains '{{', so it looks like an unrendered Helm chart template, not a rendered manifest."
    return f"{source} is not valid YAML: {problem}{where}.{hint} Fix: {_MANIFEST_FIX}."


def _html_hint(text: str) -> str:
    if text.lstrip()[:1] == "<":
        return " The text starts with '<', so it looks like an HTML page (an error or login page), not a manifest."
    return ""


def _object_problem(document: object) -> str | None:
    """Describe why `document` is not a Kubernetes object, or return None when it is one."""
    if isinstance(document, str):
        return f"a string ({_shorten(document)!r})"
    if not isinstance(document, Mapping):
        return f"a {_yaml_type_name(document)}"
    missing = [key for key in ("apiVersion", "kind") if not isinstance(document.get(key), str)]
    if missing:
        keys = ", ".join(str(key) for key in list(document)[:6]) or "none"
        return f"a mapping without {' and '.join(missing)} (its keys: {keys})"
    metadata = document.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        return f"a {document['kind']} without metadata.name"
    return None


def _yaml_type_name(value: object) -> str:
    if isinstance(value, list):
        return "list"
    if isinstance(value, bool):
        return f"boolean ({value})"
    if isinstance(value, int | float):
        return f"number ({value})"
    return type(value).__name__


def _shorten(text: str, limit: int = 60) -> str:
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    return first_line if len(first_line) <= limit else first_line[: limit - 3] + "..."


# --- Lookups -------------------------------------------------------------------------------------------


def _name(obj: Mapping[str, Any]) -> str | None:
    metadata = obj.get("metadata")
    if isinstance(metadata, Mapping):
        name = metadata.get("name")
        return name if isinstance(name, str) else None
    return None


def _find_object(docs: Sequence[Mapping[str, Any]], kind: str, name: str) -> Mapping[str, Any] | None:
    for obj in docs:
        if obj.get("kind") == kind and _name(obj) == name:
            return obj
    return None


def _pod_spec(daemonset: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = daemonset.get("spec")
    template = spec.get("template") if isinstance(spec, Mapping) else None
    pod_spec = template.get("spec") if isinstance(template, Mapping) else None
    return pod_spec if isinstance(pod_spec, Mapping) else {}


def _container_names(daemonset: Mapping[str, Any]) -> list[str]:
    containers = _pod_spec(daemonset).get("containers")
    if not isinstance(containers, list):
        return []
    return [str(c.get("name")) for c in containers if isinstance(c, Mapping)]


def _find_container(daemonset: Mapping[str, Any], name: str) -> Any:
    """Return the container called `name` (the same object, not a copy), or None."""
    containers = _pod_spec(daemonset).get("containers")
    if not isinstance(containers, list):
        return None
    return next((c for c in containers if isinstance(c, Mapping) and c.get("name") == name), None)


def image_tag(image: str) -> str | None:
    """Return the tag of an image reference, or None when it has none (a digest alone is no tag).

    A registry port ("registry.local:5000/calico/node") is not a tag: only a colon in the last path
    component starts one.
    """
    without_digest = image.split("@", 1)[0]
    last_component = without_digest.rsplit("/", 1)[-1]
    if ":" not in last_component:
        return None
    return last_component.rsplit(":", 1)[1] or None


def node_image_tag(docs: Sequence[Mapping[str, Any]]) -> str | None:
    """Return the tag of the calico-node container's image, or None when there is none to read."""
    daemonset = _find_object(docs, "DaemonSet", NODE_DAEMONSET)
    if daemonset is None:
        return None
    container = _find_container(daemonset, NODE_CONTAINER)
    image = container.get("image") if container is not None else None
    return image_tag(image) if isinstance(image, str) else None


# --- Checks --------------------------------------------------------------------------------------------


def check_manifest(docs: Sequence[Mapping[str, Any]], source: str, expected_version: str) -> list[str]:
    """Return every reason the parsed manifest cannot be used for `expected_version`, one message each.

    An empty list means the manifest has the objects and placeholders the transformation relies on.
    """
    problems: list[str] = []
    daemonset = _find_object(docs, "DaemonSet", NODE_DAEMONSET)
    config_map = _find_object(docs, "ConfigMap", CONFIG_MAP)
    if daemonset is None:
        problems.append(_missing_object_message(docs, source, "DaemonSet", NODE_DAEMONSET))
    if config_map is None:
        problems.append(_missing_object_message(docs, source, "ConfigMap", CONFIG_MAP))
    if daemonset is not None:
        problems.extend(_check_node_image(daemonset, source, expected_version))
    if config_map is not None:
        problems.extend(_check_config_map(config_map, source))
    return problems


def _summarize_objects(docs: Sequence[Mapping[str, Any]]) -> str:
    names_by_kind: dict[str, list[str]] = {}
    for obj in docs:
        names_by_kind.setdefault(str(obj.get("kind")), []).append(str(_name(obj)))
    parts = []
    for kind, names in names_by_kind.items():
        parts.append(f"{kind} {', '.join(names)}" if len(names) <= 3 else f"{len(names)} {kind} objects")
    return "; ".join(parts)


def _missing_object_message(docs: Sequence[Mapping[str, Any]], source: str, kind: str, name: str) -> str:
    hint = ""
    if _find_object(docs, "Deployment", "tigera-operator") is not None:
        hint = " This file belongs to the Tigera operator install, which this program does not use."
    return (
        f"{source}: no {kind} named {name} was found. Every calico.yaml of Calico's manifest install "
        f"contains it, and this program configures Calico through it. The file contains {len(docs)} objects: "
        f"{_summarize_objects(docs)}.{hint} Fix: {_MANIFEST_FIX}."
    )


def _check_node_image(daemonset: Mapping[str, Any], source: str, expected_version: str) -> list[str]:
    container = _find_container(daemonset, NODE_CONTAINER)
    if container is None:
        found = ", ".join(_container_names(daemonset)) or "none"
        return [
            f"{source}: DaemonSet {NODE_DAEMONSET} has no container named {NODE_CONTAINER} "
            f"(its containers: {found}). Fix: {_MANIFEST_FIX}."
        ]
    image = container.get("image")
    if not isinstance(image, str) or not image:
        return [
            f"{source}: container {NODE_CONTAINER} of DaemonSet {NODE_DAEMONSET} has no image. Fix: {_MANIFEST_FIX}."
        ]
    tag = image_tag(image)
    if tag is None:
        return [
            f"{source}: the {NODE_CONTAINER} image {image} has no tag, so its Calico release cannot be compared "
            f"with {_VERSION_KEY} = {expected_version}. Fix: use the image reference with its release tag "
            f"(for example calico/node:{expected_version}), or {_MANIFEST_FIX}."
        ]
    if tag != expected_version:
        return [
            f"{source}: the {NODE_CONTAINER} image is {image} (tag {tag}), but {_VERSION_KEY} is {expected_version}. "
            f"calicoctl {expected_version} would reject this cluster as a version mismatch. Fix: "
            f"pulumi config set {_VERSION_KEY} {tag}, or set {_MANIFEST_KEY} to the calico.yaml of "
            f"{expected_version}."
        ]
    return []


def _check_config_map(config_map: Mapping[str, Any], source: str) -> list[str]:
    problems: list[str] = []
    data = config_map.get("data")
    if not isinstance(data, Mapping):
        data = {}
    where = f"{source}: ConfigMap {CONFIG_MAP}"

    if "veth_mtu" not in data:
        problems.append(
            f"{where} has no veth_mtu key. Upstream's install-cni (CNI_MTU) and calico-node (FELIX_IPINIPMTU, "
            f"FELIX_VXLANMTU, FELIX_WIREGUARDMTU) read the pod MTU from it, so calico:mtu could not take effect. "
            f'Fix: add veth_mtu: "0" to its data, or {_MANIFEST_FIX}.'
        )

    cni_config = data.get("cni_network_config")
    if not isinstance(cni_config, str):
        problems.append(
            f"{where} has no cni_network_config, the CNI configuration template install-cni writes to every "
            f"node. Fix: {_MANIFEST_FIX}."
        )
        return problems

    for value in _calico_plugin_mtus(cni_config):
        if value == CNI_MTU_PLACEHOLDER:
            continue
        problems.append(
            f'{where}, key cni_network_config: the calico plugin has a literal "mtu": {value} where upstream '
            f'has "mtu": {CNI_MTU_PLACEHOLDER}. install-cni fills that placeholder from veth_mtu, so with a '
            f"literal value pod interfaces would keep an MTU of {value} whatever veth_mtu (calico:mtu) says. "
            f'Fix: restore "mtu": {CNI_MTU_PLACEHOLDER} in cni_network_config.'
        )
    return problems


def _calico_plugin_mtus(cni_config: str) -> list[str]:
    """Return the "mtu" values of the calico plugins in a CNI config template, as written in the JSON text.

    The template is not JSON until install-cni fills its bare placeholders, so those are quoted first.
    When the text still does not parse, every "mtu" field in it is returned instead.
    """
    quoted = _BARE_PLACEHOLDER.sub(r'\1"\2"\3', cni_config)
    try:
        config = json.loads(quoted)
    except json.JSONDecodeError:
        quoted_placeholder = f'"{CNI_MTU_PLACEHOLDER}"'
        return [CNI_MTU_PLACEHOLDER if found == quoted_placeholder else found for found in _MTU_FIELD.findall(quoted)]

    plugins: list[Any] = []
    if isinstance(config, Mapping):
        listed = config.get("plugins")
        plugins = listed if isinstance(listed, list) else [config]
    values = []
    for plugin in plugins:
        if isinstance(plugin, Mapping) and plugin.get("type") == "calico" and "mtu" in plugin:
            mtu = plugin["mtu"]
            values.append(mtu if mtu == CNI_MTU_PLACEHOLDER else json.dumps(mtu))
    return values


# --- Transformation ------------------------------------------------------------------------------------


def transform_object(obj: Mapping[str, Any], params: TransformParams) -> tuple[dict[str, Any], list[str]]:
    """Return a transformed deep copy of one manifest object and notes for the preview.

    calico-node gets the pool, encapsulation and autodetection env and the settings-hash annotation,
    calico-config gets veth_mtu, and a policy/v1beta1 PodDisruptionBudget becomes policy/v1. Every other
    object comes back equal to the input. The input is never modified.
    """
    result = {key: copy.deepcopy(value) for key, value in obj.items()}
    kind = result.get("kind")
    name = _name(result)
    if kind == "DaemonSet" and name == NODE_DAEMONSET:
        return result, _configure_node_daemonset(result, params)
    if kind == "ConfigMap" and name == CONFIG_MAP:
        return result, _configure_config_map(result, params)
    if kind == "PodDisruptionBudget" and result.get("apiVersion") == "policy/v1beta1":
        return result, _serve_as_policy_v1(result)
    return result, []


def transform_manifest(
    docs: Sequence[Mapping[str, Any]], params: TransformParams
) -> tuple[list[dict[str, Any]], list[str]]:
    """Transform every object in order and return the objects, as many as given, and all notes.

    Raises ManifestError when calico-node or calico-config is missing, because the settings would then
    silently not apply.
    """
    missing = [
        f"{kind} {name}"
        for kind, name in (("DaemonSet", NODE_DAEMONSET), ("ConfigMap", CONFIG_MAP))
        if _find_object(docs, kind, name) is None
    ]
    if missing:
        raise ManifestError(
            f"the manifest has no {' and no '.join(missing)}, so the pool, encapsulation and MTU settings "
            f"cannot be applied. Fix: {_MANIFEST_FIX}."
        )

    objects: list[dict[str, Any]] = []
    notes: list[str] = []
    for obj in docs:
        transformed, object_notes = transform_object(obj, params)
        objects.append(transformed)
        notes.extend(object_notes)
    return objects, notes


def _configure_node_daemonset(daemonset: dict[str, Any], params: TransformParams) -> list[str]:
    container = _find_container(daemonset, NODE_CONTAINER)
    if container is None:
        found = ", ".join(_container_names(daemonset)) or "none"
        raise ManifestError(
            f"DaemonSet {NODE_DAEMONSET} has no container named {NODE_CONTAINER} (its containers: {found}). "
            f"Fix: {_MANIFEST_FIX}."
        )
    env = container.setdefault("env", [])
    if not isinstance(env, list):
        raise ManifestError(
            f"container {NODE_CONTAINER} of DaemonSet {NODE_DAEMONSET} has an invalid env: a "
            f"{type(env).__name__} where Kubernetes expects a list. Fix: {_MANIFEST_FIX}."
        )

    # Upstream ships CALICO_IPV4POOL_CIDR only as a comment, so the pool variables are added when absent.
    pool_env = [
        ("CALICO_IPV4POOL_CIDR", params.pod_cidr),
        ("CALICO_IPV4POOL_BLOCK_SIZE", str(params.block_size)),
        ("CALICO_IPV4POOL_IPIP", params.ipip_mode),
        ("CALICO_IPV4POOL_VXLAN", params.vxlan_mode),
    ]
    notes: list[str] = []
    if params.ip_autodetection_method is not None:
        pool_env.append(("IP_AUTODETECTION_METHOD", params.ip_autodetection_method))
    else:
        existing = next((e for e in env if isinstance(e, Mapping) and e.get("name") == "IP_AUTODETECTION_METHOD"), None)
        if existing is not None:
            notes.append(
                f"DaemonSet {NODE_DAEMONSET}: the manifest sets IP_AUTODETECTION_METHOD "
                f"({existing.get('value', 'from valueFrom')}). calico:ipAutodetectionMethod is empty, so it is kept."
            )
    for name, value in pool_env:
        notes.extend(_set_env(env, name, value))

    # calico-node reads veth_mtu through configMapKeyRef, and a ConfigMap change does not restart pods.
    # Changing the pod template through this hash makes any settings change roll calico-node.
    template = daemonset["spec"]["template"]
    metadata = template.get("metadata")
    if not isinstance(metadata, dict):
        metadata = template["metadata"] = {}
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = metadata["annotations"] = {}
    annotations[SETTINGS_HASH_ANNOTATION] = settings_hash(params)
    return notes


def _set_env(env: list[Any], name: str, value: str) -> list[str]:
    """Set env var `name` to a plain value in place, or append it when absent, and return notes."""
    positions = [i for i, entry in enumerate(env) if isinstance(entry, Mapping) and entry.get("name") == name]
    if not positions:
        env.append({"name": name, "value": value})
        return []

    notes = []
    first = positions[0]
    if "valueFrom" in env[first]:
        notes.append(f"DaemonSet {NODE_DAEMONSET}: {name} was read through valueFrom. It is now the value {value!r}.")
    env[first] = {"name": name, "value": value}
    # With duplicate names the last entry wins in the container, so later duplicates would undo the setting.
    for position in reversed(positions[1:]):
        del env[position]
    if len(positions) > 1:
        notes.append(f"DaemonSet {NODE_DAEMONSET}: removed {len(positions) - 1} duplicate {name} entries.")
    return notes


def _configure_config_map(config_map: dict[str, Any], params: TransformParams) -> list[str]:
    data = config_map.get("data")
    if not isinstance(data, dict):
        data = config_map["data"] = {}
    # ConfigMap data values must be strings. cni_network_config keeps its __CNI_MTU__ placeholder because
    # install-cni fills it from veth_mtu on each node.
    data["veth_mtu"] = str(params.mtu)
    return []


def _serve_as_policy_v1(pdb: dict[str, Any]) -> list[str]:
    name = _name(pdb)
    pdb["apiVersion"] = "policy/v1"
    notes = [
        f"PodDisruptionBudget {name}: served as policy/v1 instead of the manifest's policy/v1beta1, which "
        "Kubernetes 1.25 removed. Every policy/v1beta1 spec field exists unchanged in policy/v1."
    ]
    spec = pdb.get("spec")
    # An empty selector selects no pod in policy/v1beta1 but every pod of the namespace in policy/v1,
    # whereas a missing selector selects none in both.
    if isinstance(spec, dict) and spec.get("selector") == {}:
        del spec["selector"]
        notes.append(
            f"PodDisruptionBudget {name}: dropped its empty selector, which would select every pod of the "
            "namespace in policy/v1 but selected none in policy/v1beta1."
        )
    return notes


# --- Output --------------------------------------------------------------------------------------------


class _ManifestDumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        # Anchors and aliases would make the rendered manifest hard to read and diff.
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line text (cni_network_config) reads best as a literal block. The emitter falls back to a
    # quoted scalar when a block cannot hold the text exactly, such as lines with trailing spaces.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def dump_manifest(docs: Sequence[Mapping[str, Any]]) -> str:
    """Serialize objects as multi-document YAML, the same text for the same input."""
    return yaml.dump_all(
        [dict(obj) for obj in docs],
        Dumper=_ManifestDumper,
        explicit_start=True,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1_000_000,
    )
