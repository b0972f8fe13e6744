"""Every recorded bug-report case has a test that runs it; a new case without one fails here."""

from __future__ import annotations

import importlib

import pytest

from tests.conftest import SHARED_MISSING_REASON, load_shared_cases

# Case id -> the tests that exercise the behaviour the case owes ("module::function").
CASE_TESTS: dict[str, list[str]] = {
    "mtu-vxlan-equal-to-nic": ["test_settings::test_shared_config_case"],
    "jumbo-frames-ipip": ["test_settings::test_shared_config_case", "test_transform::test_jumbo_frames"],
    "pod-cidr-inside-service-cidr": [
        "test_settings::test_shared_config_case",
        "test_render::test_render_pod_cidr_in_service_cidr",
    ],
    "pod-cidr-contains-node-lan": ["test_settings::test_shared_config_case"],
    "pool-smaller-than-block": ["test_settings::test_shared_config_case"],
    "cidr-with-host-bits": ["test_settings::test_shared_config_case"],
    "literal-mtu-in-cni-config": [
        "test_transform::test_check_literal_mtu_real",
        "test_render::test_render_literal_mtu_rejected",
    ],
    "mtu-change-must-roll-calico-node": ["test_program::test_mtu_change_rolls_calico_node_and_pingtest"],
    "manifest-url-unreachable": [
        "test_manifest::test_unreachable_url_fails_fast",
        "test_manifest::test_stalled_server_times_out",
        "test_manifest::test_trickling_server_hits_total_timeout",
        "test_render::test_render_unreachable_manifest_url",
    ],
    "armv7-node": ["test_node_script::test_preflight_armv7_fails"],
    "sudo-needs-password": ["test_node_script::test_preflight_sudo_password_fails_fast"],
    "second-up-changes-nothing": ["test_node_script::test_install_two_nodes_then_rerun"],
    "node-mtu-smaller-than-config": ["test_node_script::test_preflight_node_mtu_smaller_than_config"],
    "vxlan-module-missing": ["test_node_script::test_preflight_vxlan_module_missing"],
    "path-mtu-too-large": ["test_netcheck_script::test_pod_mtu_1500_over_vxlan_fails_path_mtu"],
}

CASES = load_shared_cases()


@pytest.mark.skipif(not CASES, reason=SHARED_MISSING_REASON)
def test_every_case_mapped() -> None:
    ids = {case["id"] for case in CASES}
    assert sorted(ids - set(CASE_TESTS)) == [], "a recorded case has no test in CASE_TESTS"
    assert sorted(set(CASE_TESTS) - ids) == [], "CASE_TESTS names a case that is no longer recorded"


@pytest.mark.parametrize("case_id", sorted(CASE_TESTS))
def test_case_tests_exist(case_id: str) -> None:
    for reference in CASE_TESTS[case_id]:
        module_name, function_name = reference.split("::")
        module = importlib.import_module(f"tests.{module_name}")
        assert callable(getattr(module, function_name, None)), f"{case_id}: {reference} does not exist"
