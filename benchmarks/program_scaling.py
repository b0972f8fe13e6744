"""Time the program under Pulumi's test runtime for 3, 50 and 200 nodes, against a bare ConfigFile.

    python benchmarks/program_scaling.py [--manifest FILE] [--repeat N]

Each measurement runs in a fresh Python process, so its peak resident memory (ru_maxrss) is its own.
The baseline registers the same manifest with a bare pulumi_kubernetes ConfigFile and nothing else;
"program" is components.program.run with the same manifest and N nodes. Both use the same mocks.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = REPO.parent / "shared" / "calico-manifests" / "v3.32.1" / "calico.yaml"
NODE_COUNTS = (3, 50, 200)


def _nodes(count: int) -> list[dict[str, Any]]:
    # 192.0.2.0/24 is a documentation range; 200 nodes fit in it.
    return [{"name": f"node-{index}", "host": f"192.0.2.{index + 1}"} for index in range(count)]


def _worker(mode: str, node_count: int, manifest: str) -> None:
    sys.path.insert(0, str(REPO))
    import pulumi
    import pulumi_kubernetes as k8s

    from components.transform import node_image_tag, parse_manifest
    from tests.conftest import RecordingMocks, RecordingMonitor, run_program

    version = node_image_tag(parse_manifest(Path(manifest).read_text(encoding="utf-8"), manifest))
    started = time.perf_counter()
    if mode == "baseline":
        # The same mocks and monitor as run_program, so both sides pay the same test-harness cost.
        mocks = RecordingMocks()
        monitor = RecordingMonitor(mocks)
        pulumi.runtime.set_mocks(mocks, project="calico", stack="bench", preview=False, monitor=monitor)

        @pulumi.runtime.test
        def register() -> None:
            k8s.yaml.ConfigFile("calico", file=manifest)

        register()
        count = len(mocks.resources)
    else:
        values = {
            "version": version,
            "manifest": manifest,
            "podCidr": "10.244.0.0/16",
            "encapsulation": "VXLAN",
            "nodes": _nodes(node_count),
            "calicoctlSha256": {"amd64": "0" * 64, "arm64": "0" * 64},
            "sshPrivateKey": "not a real key: the mocks never dial",
        }
        run = run_program(values, secret_keys=("sshPrivateKey",))
        count = len(run.mocks.resources)
    elapsed = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": elapsed, "peak_kib": peak_kib, "resources": count}))


def _measure(mode: str, node_count: int, manifest: str, repeat: int) -> dict[str, float]:
    samples = []
    for _ in range(repeat):
        output = subprocess.run(
            [sys.executable, __file__, "--worker", mode, str(node_count), manifest],
            capture_output=True,
            text=True,
            check=True,
            cwd=REPO,
        ).stdout
        samples.append(json.loads(output.strip().splitlines()[-1]))
    return {
        "seconds": statistics.median(sample["seconds"] for sample in samples),
        "peak_mib": max(sample["peak_kib"] for sample in samples) / 1024,
        "resources": samples[0]["resources"],
    }


def main() -> int:
    """Print one line per configuration: median wall time, peak memory, resources registered."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="calico.yaml to register")
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration; the median time is shown")
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "NODES", "MANIFEST"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        mode, nodes, manifest = arguments.worker
        _worker(mode, int(nodes), manifest)
        return 0

    if not Path(arguments.manifest).is_file():
        print(f"error: {arguments.manifest} does not exist; pass --manifest with a calico.yaml", file=sys.stderr)
        return 2
    baseline = _measure("baseline", 0, arguments.manifest, arguments.repeat)
    print(f"manifest: {arguments.manifest}; median of {arguments.repeat} runs, each in a fresh process")
    print(f"{'configuration':<24}{'seconds':>9}{'peak MiB':>10}{'resources':>11}{'vs baseline':>13}")
    print(f"{'bare ConfigFile':<24}{baseline['seconds']:>9.2f}{baseline['peak_mib']:>10.0f}{baseline['resources']:>11}")
    for count in NODE_COUNTS:
        result = _measure("program", count, arguments.manifest, arguments.repeat)
        overhead = (result["seconds"] / baseline["seconds"] - 1) * 100
        print(
            f"{f'program, {count} nodes':<24}{result['seconds']:>9.2f}{result['peak_mib']:>10.0f}"
            f"{result['resources']:>11}{overhead:>+12.0f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
