"""Tests of components.transform on small fixtures and on every real upstream calico.yaml."""

from __future__ import annotations

import copy
import dataclasses
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.settings import ENCAPSULATIONS, parse_settings
from components.stackconfig import apply_defaults, load_schema
from components.transform import (
    CNI_MTU_PLACEHOLDER,
    SETTINGS_HASH_ANNOTATION,
    ManifestError,
    TransformParams,
    check_manifest,
    dump_manifest,
    image_tag,
    node_image_tag,
    parse_manifest,
    settings_hash,
    transform_manifest,
    transform_object,
)

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_MANIFESTS = Path(__file__).resolve().parents[2] / "shared" / "calico-manifests"
SHARED_ABSENT_REASON = f"{SHARED_MANIFESTS} is absent, so there are no real upstream manifests to test"

# The env entries and the annotation the transformation owns on calico-node.
MANAGED_ENV = {
    "CALICO_IPV4POOL_CIDR",
    "CALICO_IPV4POOL_BLOCK_SIZE",
    "CALICO_IPV4POOL_IPIP",
    "CALICO_IPV4POOL_VXLAN",
    "IP_AUTODETECTION_METHOD",
}

# Values that differ from upstream's defaults (no CIDR, block size 26, veth_mtu "0"), so a transformation
# that does nothing fails.
PARAMS = TransformParams(
    pod_cidr="10.244.0.0/16",
    block_size=24,
    mtu=1450,
    ipip_mode="Never",
    vxlan_mode="Always",
    ip_autodetection_method=None,
)

_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.removeprefix("v").split("."))


@dataclass(frozen=True)
class ManifestCase:
    """One manifest under test and the release its images carry."""

    path: Path
    version: str

    @property
    def serves_pdb_v1beta1(self) -> bool:
        """Whether the manifest ships its PodDisruptionBudget as policy/v1beta1 (releases before v3.24)."""
        return _release(self.version) < (3, 24)


FIXTURE_CASES = [
    pytest.param(ManifestCase(FIXTURES / "manifest-helm2.yaml", "v3.22.1"), id="fixture-helm2"),
    pytest.param(ManifestCase(FIXTURES / "manifest-helm3.yaml", "v3.31.7"), id="fixture-helm3"),
]
REAL_VERSIONS = sorted((path.parent.name for path in SHARED_MANIFESTS.glob("v*/calico.yaml")), key=_release)
if REAL_VERSIONS:
    REAL_CASES = [
        pytest.param(ManifestCase(SHARED_MANIFESTS / version / "calico.yaml", version), id=version)
        for version in REAL_VERSIONS
    ]
else:
    REAL_CASES = [pytest.param(None, id="real-manifests", marks=pytest.mark.skip(reason=SHARED_ABSENT_REASON))]
ALL_CASES = FIXTURE_CASES + REAL_CASES


@functools.cache
def _parsed(path: Path) -> list[dict[str, Any]]:
    return parse_manifest(path.read_text(encoding="utf-8"), str(path))


def load(case: ManifestCase) -> list[dict[str, Any]]:
    """Return a private copy of the case's parsed objects, so a test may change it freely."""
    return copy.deepcopy(_parsed(case.path))


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [obj for obj in docs if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def node_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = find(docs, "DaemonSet", "calico-node")["spec"]["template"]["spec"]["containers"]
    matches: list[dict[str, Any]] = [c for c in containers if c["name"] == "calico-node"]
    assert len(matches) == 1, "DaemonSet calico-node: expected one container named calico-node"
    return matches[0]


def env_entries(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in node_container(docs).get("env", [])}


def env_names(docs: list[dict[str, Any]]) -> list[str]:
    return [entry["name"] for entry in node_container(docs).get("env", [])]


def pod_annotations(docs: list[dict[str, Any]]) -> dict[str, str]:
    metadata = find(docs, "DaemonSet", "calico-node")["spec"]["template"].get("metadata", {})
    return dict(metadata.get("annotations") or {})


def object_id(obj: dict[str, Any]) -> str:
    return f"{obj['kind']} {obj['metadata']['name']}"


def without_managed_fields(daemonset: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of calico-node's DaemonSet without the env entries and the annotation the program sets."""
    result = copy.deepcopy(daemonset)
    for container in result["spec"]["template"]["spec"]["containers"]:
        if container["name"] == "calico-node":
            container["env"] = [entry for entry in container["env"] if entry["name"] not in MANAGED_ENV]
    metadata = result["spec"]["template"].setdefault("metadata", {})
    annotations = metadata.get("annotations") or {}
    annotations.pop(SETTINGS_HASH_ANNOTATION, None)
    if annotations:
        metadata["annotations"] = annotations
    else:
        metadata.pop("annotations", None)
    return result


# --- Transformation on fixtures and real manifests -----------------------------------------------------


@pytest.mark.parametrize("encapsulation", list(ENCAPSULATIONS))
@pytest.mark.parametrize("case", ALL_CASES)
def test_pool_env(case: ManifestCase, encapsulation: str) -> None:
    spec = ENCAPSULATIONS[encapsulation]
    params = dataclasses.replace(PARAMS, ipip_mode=spec.ipip_mode, vxlan_mode=spec.vxlan_mode)
    docs = transform_manifest(load(case), params)[0]
    env = env_entries(docs)
    names = env_names(docs)

    for name in ("CALICO_IPV4POOL_CIDR", "CALICO_IPV4POOL_BLOCK_SIZE", "CALICO_IPV4POOL_IPIP", "CALICO_IPV4POOL_VXLAN"):
        assert names.count(name) == 1, f"calico-node env {name} appears {names.count(name)} times in {case.path}"
    assert env["CALICO_IPV4POOL_CIDR"] == {"name": "CALICO_IPV4POOL_CIDR", "value": "10.244.0.0/16"}, case.path
    assert env["CALICO_IPV4POOL_BLOCK_SIZE"] == {"name": "CALICO_IPV4POOL_BLOCK_SIZE", "value": "24"}, case.path
    assert env["CALICO_IPV4POOL_IPIP"] == {"name": "CALICO_IPV4POOL_IPIP", "value": spec.ipip_mode}, case.path
    assert env["CALICO_IPV4POOL_VXLAN"] == {"name": "CALICO_IPV4POOL_VXLAN", "value": spec.vxlan_mode}, case.path


@pytest.mark.parametrize("case", ALL_CASES)
def test_encapsulation_env_keeps_position(case: ManifestCase) -> None:
    before = env_names(load(case))
    after = env_names(transform_manifest(load(case), PARAMS)[0])

    for name in ("CALICO_IPV4POOL_IPIP", "CALICO_IPV4POOL_VXLAN"):
        assert after.index(name) == before.index(name), f"calico-node env {name} moved in {case.path}"
    assert after[: len(before)] == before, f"calico-node env order changed in {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_veth_mtu(case: ManifestCase) -> None:
    data = find(transform_manifest(load(case), PARAMS)[0], "ConfigMap", "calico-config")["data"]

    assert data["veth_mtu"] == "1450", f"ConfigMap calico-config veth_mtu in {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_autodetection_absent_by_default(case: ManifestCase) -> None:
    env = env_entries(transform_manifest(load(case), PARAMS)[0])

    assert "IP_AUTODETECTION_METHOD" not in env, f"calico-node env in {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_autodetection_set_when_given(case: ManifestCase) -> None:
    params = dataclasses.replace(PARAMS, ip_autodetection_method="interface=eth0")
    env = env_entries(transform_manifest(load(case), params)[0])

    expected = {"name": "IP_AUTODETECTION_METHOD", "value": "interface=eth0"}
    assert env.get("IP_AUTODETECTION_METHOD") == expected, f"calico-node env in {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_hash_annotation_present(case: ManifestCase) -> None:
    annotations = pod_annotations(transform_manifest(load(case), PARAMS)[0])

    assert annotations.get(SETTINGS_HASH_ANNOTATION) == settings_hash(PARAMS), (
        f"calico-node pod template in {case.path}"
    )


@pytest.mark.parametrize("case", ALL_CASES)
def test_hash_changes_with_mtu_only(case: ManifestCase) -> None:
    first = transform_manifest(load(case), PARAMS)[0]
    second = transform_manifest(load(case), dataclasses.replace(PARAMS, mtu=1400))[0]
    first_daemonset = find(first, "DaemonSet", "calico-node")
    second_daemonset = find(second, "DaemonSet", "calico-node")

    assert pod_annotations(first) != pod_annotations(second), f"calico-node pod template in {case.path}"
    assert without_managed_fields(first_daemonset) == without_managed_fields(second_daemonset), (
        f"DaemonSet calico-node differs beyond its annotation in {case.path}"
    )


@pytest.mark.parametrize("case", ALL_CASES)
def test_daemonset_changes_only_managed_fields(case: ManifestCase) -> None:
    before = find(load(case), "DaemonSet", "calico-node")
    after = find(transform_manifest(load(case), PARAMS)[0], "DaemonSet", "calico-node")

    assert without_managed_fields(after) == without_managed_fields(before), f"DaemonSet calico-node in {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_init_containers_untouched(case: ManifestCase) -> None:
    before = find(load(case), "DaemonSet", "calico-node")["spec"]["template"]["spec"]["initContainers"]
    after = find(transform_manifest(load(case), PARAMS)[0], "DaemonSet", "calico-node")
    after_init = after["spec"]["template"]["spec"]["initContainers"]

    assert after_init == before, f"DaemonSet calico-node initContainers in {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_config_map_changes_only_veth_mtu(case: ManifestCase) -> None:
    before = find(load(case), "ConfigMap", "calico-config")
    after = find(transform_manifest(load(case), PARAMS)[0], "ConfigMap", "calico-config")

    assert after["data"]["cni_network_config"] == before["data"]["cni_network_config"], (
        f"ConfigMap calico-config cni_network_config in {case.path}"
    )
    after["data"].pop("veth_mtu")
    before["data"].pop("veth_mtu")
    assert after == before, f"ConfigMap calico-config beyond veth_mtu in {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_other_objects_unchanged(case: ManifestCase) -> None:
    before = load(case)
    after = transform_manifest(load(case), PARAMS)[0]
    changed = {"DaemonSet calico-node", "ConfigMap calico-config"}
    if case.serves_pdb_v1beta1:
        changed.add("PodDisruptionBudget calico-kube-controllers")

    for original, transformed in zip(before, after, strict=True):
        if object_id(original) not in changed:
            assert transformed == original, f"{object_id(original)} changed in {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_object_count_and_order(case: ManifestCase) -> None:
    before = load(case)
    after = transform_manifest(load(case), PARAMS)[0]

    assert len(after) == len(before), f"object count of {case.path}"
    assert [object_id(obj) for obj in after] == [object_id(obj) for obj in before], f"object order of {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_input_not_mutated(case: ManifestCase) -> None:
    docs = load(case)
    snapshot = copy.deepcopy(docs)
    transform_manifest(docs, dataclasses.replace(PARAMS, ip_autodetection_method="kubernetes-internal-ip"))

    for original, current in zip(snapshot, docs, strict=True):
        assert current == original, f"{object_id(original)} of {case.path} was modified in place"


@pytest.mark.parametrize("case", ALL_CASES)
def test_pdb_served_as_policy_v1(case: ManifestCase) -> None:
    before = find(load(case), "PodDisruptionBudget", "calico-kube-controllers")
    after_docs, notes = transform_manifest(load(case), PARAMS)
    after = find(after_docs, "PodDisruptionBudget", "calico-kube-controllers")

    assert after["apiVersion"] == "policy/v1", f"PodDisruptionBudget calico-kube-controllers in {case.path}"
    assert after["spec"] == before["spec"], f"PodDisruptionBudget calico-kube-controllers spec in {case.path}"
    if case.serves_pdb_v1beta1:
        assert len(notes) == 1, f"notes for {case.path}: {notes}"
        assert "policy/v1beta1" in notes[0], notes[0]
        assert "1.25" in notes[0], notes[0]
    else:
        assert notes == [], f"notes for {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_real_manifest_passes_check(case: ManifestCase) -> None:
    problems = check_manifest(load(case), str(case.path), case.version)

    assert problems == [], f"check_manifest on {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_node_image_tag_of_manifest(case: ManifestCase) -> None:
    assert node_image_tag(load(case)) == case.version, f"calico-node image tag in {case.path}"


@pytest.mark.parametrize("case", ALL_CASES)
def test_dump_round_trip(case: ManifestCase) -> None:
    objects = transform_manifest(load(case), PARAMS)[0]
    text = dump_manifest(objects)
    reloaded = list(yaml.load_all(text, Loader=_LOADER))

    assert reloaded == objects, f"dump_manifest of {case.path} does not load back equal"
    assert dump_manifest(objects) == text, f"dump_manifest of {case.path} is not deterministic"
    assert text.count("\n---\n") + text.startswith("---\n") == len(objects), f"separators in {case.path}"
    assert re.search(r"(?m)^  veth_mtu: (['\"])1450\1$", text), f"veth_mtu is not a quoted string in {case.path}"
    assert f'"mtu": {CNI_MTU_PLACEHOLDER},' in text, f"cni_network_config is not a literal block in {case.path}"


# --- Transformation edge cases -------------------------------------------------------------------------


def _helm3_daemonset() -> dict[str, Any]:
    return find(load(ManifestCase(FIXTURES / "manifest-helm3.yaml", "v3.31.7")), "DaemonSet", "calico-node")


def test_value_from_replaced_by_value() -> None:
    daemonset = _helm3_daemonset()
    container = node_container([daemonset])
    ipip = next(entry for entry in container["env"] if entry["name"] == "CALICO_IPV4POOL_IPIP")
    del ipip["value"]
    ipip["valueFrom"] = {"configMapKeyRef": {"name": "calico-config", "key": "ipip_mode"}}

    result, notes = transform_object(daemonset, PARAMS)

    entry = env_entries([result])["CALICO_IPV4POOL_IPIP"]
    assert entry == {"name": "CALICO_IPV4POOL_IPIP", "value": "Never"}, "calico-node env CALICO_IPV4POOL_IPIP"
    assert any("valueFrom" in note for note in notes), f"notes: {notes}"


def test_duplicate_env_entries_collapsed() -> None:
    daemonset = _helm3_daemonset()
    container = node_container([daemonset])
    container["env"].append({"name": "CALICO_IPV4POOL_CIDR", "value": "192.168.0.0/16"})
    container["env"].append({"name": "CALICO_IPV4POOL_CIDR", "value": "172.16.0.0/16"})

    result, notes = transform_object(daemonset, PARAMS)

    cidrs = [entry for entry in node_container([result])["env"] if entry["name"] == "CALICO_IPV4POOL_CIDR"]
    assert cidrs == [{"name": "CALICO_IPV4POOL_CIDR", "value": "10.244.0.0/16"}], "calico-node env CIDR entries"
    assert any("duplicate" in note for note in notes), f"notes: {notes}"


def test_manifest_autodetection_kept_when_unset() -> None:
    daemonset = _helm3_daemonset()
    node_container([daemonset])["env"].append({"name": "IP_AUTODETECTION_METHOD", "value": "interface=eth1"})

    result, notes = transform_object(daemonset, PARAMS)

    entry = env_entries([result])["IP_AUTODETECTION_METHOD"]
    assert entry == {"name": "IP_AUTODETECTION_METHOD", "value": "interface=eth1"}, "calico-node env"
    assert any("interface=eth1" in note for note in notes), f"notes: {notes}"


def test_existing_annotations_kept() -> None:
    daemonset = _helm3_daemonset()
    daemonset["spec"]["template"]["metadata"]["annotations"] = {"example.com/owner": "network-team"}

    result, _ = transform_object(daemonset, PARAMS)

    annotations = pod_annotations([result])
    assert annotations.get("example.com/owner") == "network-team", "calico-node pod template annotations"
    assert annotations.get(SETTINGS_HASH_ANNOTATION) == settings_hash(PARAMS), "calico-node pod template annotations"


def test_daemonset_without_node_container() -> None:
    daemonset = _helm3_daemonset()
    node_container([daemonset])["name"] = "node"

    with pytest.raises(ManifestError, match="no container named calico-node"):
        transform_object(daemonset, PARAMS)


def test_pdb_empty_selector_dropped() -> None:
    pdb = {
        "apiVersion": "policy/v1beta1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "example", "namespace": "kube-system"},
        "spec": {"maxUnavailable": 1, "selector": {}},
    }

    result, notes = transform_object(pdb, PARAMS)

    assert result["apiVersion"] == "policy/v1", "PodDisruptionBudget example"
    assert "selector" not in result["spec"], "PodDisruptionBudget example keeps an empty selector"
    assert len(notes) == 2, f"notes: {notes}"


@pytest.mark.parametrize("missing", ["DaemonSet", "ConfigMap"])
def test_transform_manifest_requires_objects(missing: str) -> None:
    docs = [obj for obj in load(ManifestCase(FIXTURES / "manifest-helm3.yaml", "v3.31.7")) if obj["kind"] != missing]

    with pytest.raises(ManifestError, match=f"no {missing}"):
        transform_manifest(docs, PARAMS)


def test_settings_hash_format() -> None:
    value = settings_hash(PARAMS)

    assert re.fullmatch(r"[0-9a-f]{16}", value), value
    assert settings_hash(dataclasses.replace(PARAMS)) == value, "settings_hash of equal params"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pod_cidr", "10.245.0.0/16"),
        ("block_size", 26),
        ("mtu", 1440),
        ("ipip_mode", "CrossSubnet"),
        ("vxlan_mode", "Never"),
        ("ip_autodetection_method", "kubernetes-internal-ip"),
    ],
)
def test_settings_hash_covers_field(field: str, value: Any) -> None:
    changed = dataclasses.replace(PARAMS, **{field: value})

    assert settings_hash(changed) != settings_hash(PARAMS), f"settings_hash ignores {field}"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("quay.io/calico/node:v3.31.7", "v3.31.7"),
        ("docker.io/calico/node:v3.21.0", "v3.21.0"),
        ("calico/node:v3.27.5", "v3.27.5"),
        ("registry.local:5000/calico/node:v3.29.7", "v3.29.7"),
        ("registry.local:5000/calico/node", None),
        ("quay.io/calico/node:v3.31.7@sha256:" + "0" * 64, "v3.31.7"),
        ("quay.io/calico/node@sha256:" + "0" * 64, None),
        ("calico/node", None),
    ],
)
def test_image_tag(image: str, expected: str | None) -> None:
    assert image_tag(image) == expected, image


# --- Settings to parameters ----------------------------------------------------------------------------


def _settings(**values: Any) -> Any:
    schema = load_schema()
    nodes = [{"name": "pi-1", "host": "192.0.2.11"}]
    merged = apply_defaults(schema, {"podCidr": "10.244.0.0/16", "nodes": nodes, **values})
    return parse_settings(merged, declared_keys=schema.keys())


def test_jumbo_frames() -> None:
    params = TransformParams.from_settings(_settings(encapsulation="IPIP", nodeMtu=9000))
    docs = transform_manifest(load(ManifestCase(FIXTURES / "manifest-helm3.yaml", "v3.31.7")), params)[0]

    assert params.mtu == 8980, "pod MTU for IPIP on a 9000-byte network"
    assert find(docs, "ConfigMap", "calico-config")["data"]["veth_mtu"] == "8980", "ConfigMap calico-config veth_mtu"


@pytest.mark.parametrize("encapsulation", list(ENCAPSULATIONS))
def test_params_from_settings(encapsulation: str) -> None:
    settings = _settings(encapsulation=encapsulation, blockSize=27, ipAutodetectionMethod="cidr=192.0.2.0/24")

    params = TransformParams.from_settings(settings)

    expected = TransformParams(
        pod_cidr="10.244.0.0/16",
        block_size=27,
        mtu=1500 - ENCAPSULATIONS[encapsulation].overhead,
        ipip_mode=ENCAPSULATIONS[encapsulation].ipip_mode,
        vxlan_mode=ENCAPSULATIONS[encapsulation].vxlan_mode,
        ip_autodetection_method="cidr=192.0.2.0/24",
    )
    assert params == expected, f"TransformParams for {encapsulation}"


def test_params_autodetection_unset() -> None:
    params = TransformParams.from_settings(_settings())

    assert params.ip_autodetection_method is None, "TransformParams.ip_autodetection_method"


# --- Parsing errors ------------------------------------------------------------------------------------

SOURCE = "https://example.test/calico.yaml"


def _jekyll_template() -> str:
    return (FIXTURES / "manifest-jekyll-template.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        pytest.param(_jekyll_template(), ["not valid YAML", "line 4", "{%", "Jekyll", "before v3.24"], id="jekyll"),
        pytest.param(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n",
            ["not valid YAML", "Helm chart template"],
            id="helm-template",
        ),
        pytest.param(
            "<!DOCTYPE html>\n<html><body>Not Found</body></html>\n",
            ["document 1 is a string", "HTML page"],
            id="html-page",
        ),
        pytest.param("- name: calico-node\n- name: calico-config\n", ["document 1 is a list"], id="list"),
        pytest.param("name: calico-config\ndata: {}\n", ["without apiVersion and kind", "name, data"], id="no-kind"),
        pytest.param(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", ["ConfigMap without metadata.name"], id="no-name"
        ),
        pytest.param("", ["no Kubernetes objects"], id="empty"),
        pytest.param(
            "---\n# Source: calico/templates/calico-typha.yaml\n---\n", ["no Kubernetes objects"], id="comments"
        ),
    ],
)
def test_parse_rejects(text: str, words: list[str]) -> None:
    with pytest.raises(ManifestError) as raised:
        parse_manifest(text, SOURCE)

    message = str(raised.value)
    for word in [SOURCE, "calico:manifest", *words]:
        assert word in message, f"{word!r} missing from: {message}"


def test_parse_drops_empty_documents() -> None:
    text = (FIXTURES / "manifest-helm2.yaml").read_text(encoding="utf-8")
    raw = list(yaml.load_all(text, Loader=_LOADER))

    docs = parse_manifest(text, "manifest-helm2.yaml")

    assert None in raw, "the helm v2 fixture should contain empty documents"
    assert docs == [doc for doc in raw if doc is not None], "parse_manifest of the helm v2 fixture"


# --- Manifest checks -----------------------------------------------------------------------------------


def _helm3() -> list[dict[str, Any]]:
    return load(ManifestCase(FIXTURES / "manifest-helm3.yaml", "v3.31.7"))


def _without(kind: str) -> Callable[[], list[dict[str, Any]]]:
    return lambda: [obj for obj in _helm3() if obj["kind"] != kind]


def _operator_install() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tigera-operator"}},
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "tigera-operator", "namespace": "tigera-operator"},
        },
    ]


def _with_node_image(image: str) -> Callable[[], list[dict[str, Any]]]:
    def build() -> list[dict[str, Any]]:
        docs = _helm3()
        node_container(docs)["image"] = image
        return docs

    return build


def _with_node_container_renamed() -> list[dict[str, Any]]:
    docs = _helm3()
    node_container(docs)["name"] = "calico-node-renamed"
    return docs


def _literal_mtu_fixture() -> list[dict[str, Any]]:
    return _parsed(FIXTURES / "manifest-literal-mtu.yaml")


def _with_cni_config(text: str) -> Callable[[], list[dict[str, Any]]]:
    def build() -> list[dict[str, Any]]:
        docs = _helm3()
        find(docs, "ConfigMap", "calico-config")["data"]["cni_network_config"] = text
        return docs

    return build


def _without_config_key(key: str) -> Callable[[], list[dict[str, Any]]]:
    def build() -> list[dict[str, Any]]:
        docs = _helm3()
        del find(docs, "ConfigMap", "calico-config")["data"][key]
        return docs

    return build


LITERAL_MTU_WORDS = [
    "ConfigMap calico-config",
    "cni_network_config",
    '"mtu": 1500',
    "pod interfaces would keep an MTU of 1500 whatever veth_mtu",
    'restore "mtu": __CNI_MTU__',
]


@pytest.mark.parametrize(
    ("build", "version", "words"),
    [
        pytest.param(
            _without("DaemonSet"),
            "v3.31.7",
            [
                "no DaemonSet named calico-node",
                "ConfigMap calico-config",
                "PodDisruptionBudget calico-kube-controllers",
            ],
            id="no-calico-node",
        ),
        pytest.param(
            _without("ConfigMap"),
            "v3.31.7",
            ["no ConfigMap named calico-config", "DaemonSet calico-node", "ServiceAccount calico-node"],
            id="no-calico-config",
        ),
        pytest.param(
            _with_node_image("quay.io/calico/node:v3.31.7"),
            "v3.31.0",
            ["v3.31.7", "calico:version is v3.31.0", "version mismatch", "pulumi config set calico:version v3.31.7"],
            id="tag-mismatch",
        ),
        pytest.param(
            _with_node_image("quay.io/calico/node@sha256:" + "0" * 64),
            "v3.31.7",
            ["has no tag", "calico:version = v3.31.7"],
            id="digest-only",
        ),
        pytest.param(
            _with_node_container_renamed,
            "v3.31.7",
            ["no container named calico-node", "calico-node-renamed"],
            id="container-renamed",
        ),
        pytest.param(_literal_mtu_fixture, "v3.31.7", LITERAL_MTU_WORDS, id="literal-mtu-fixture"),
        pytest.param(
            _with_cni_config('{"plugins": [{"type": "calico", "mtu": 1500, "ipam": {"type": "calico-ipam"}'),
            "v3.31.7",
            LITERAL_MTU_WORDS,
            id="literal-mtu-invalid-json",
        ),
        pytest.param(
            _without_config_key("veth_mtu"),
            "v3.31.7",
            ["ConfigMap calico-config has no veth_mtu", "calico:mtu"],
            id="no-veth-mtu",
        ),
        pytest.param(
            _without_config_key("cni_network_config"),
            "v3.31.7",
            ["ConfigMap calico-config has no cni_network_config"],
            id="no-cni-config",
        ),
    ],
)
def test_check_reports(build: Callable[[], list[dict[str, Any]]], version: str, words: list[str]) -> None:
    problems = check_manifest(build(), SOURCE, version)

    assert len(problems) == 1, f"expected one problem, got: {problems}"
    for word in [SOURCE, *words]:
        assert word in problems[0], f"{word!r} missing from: {problems[0]}"


def test_check_names_operator_install() -> None:
    problems = check_manifest(_operator_install(), SOURCE, "v3.31.7")

    assert len(problems) == 2, f"expected calico-node and calico-config missing, got: {problems}"
    assert "Tigera operator install" in problems[0], problems[0]
    assert "Deployment tigera-operator" in problems[0], problems[0]


@pytest.mark.parametrize("case", REAL_CASES)
def test_check_literal_mtu_real(case: ManifestCase) -> None:
    text = case.path.read_text(encoding="utf-8")
    assert text.count(CNI_MTU_PLACEHOLDER) == 1, f"{case.path} should contain one {CNI_MTU_PLACEHOLDER}"
    docs = parse_manifest(text.replace(CNI_MTU_PLACEHOLDER, "1500"), str(case.path))

    problems = check_manifest(docs, str(case.path), case.version)

    assert len(problems) == 1, f"expected one problem for {case.path}, got: {problems}"
    for word in [str(case.path), *LITERAL_MTU_WORDS]:
        assert word in problems[0], f"{word!r} missing from: {problems[0]}"
