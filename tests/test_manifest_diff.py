"""The manifest-diff job's script, run on temporary git repositories that hold a copy of this project."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import run_git

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "ci" / "manifest-diff.py"
FIXTURE_MANIFEST = REPO / "tests" / "fixtures" / "manifest-helm3.yaml"
UPSTREAM_MANIFEST = REPO.parent / "shared" / "calico-manifests" / "v3.31.7" / "calico.yaml"

STACK_FILE = """\
# Lab cluster on a 1500-byte LAN.
config:
  calico:podCidr: 10.244.0.0/16
  calico:encapsulation: VXLAN
  calico:nodeMtu: 1500
  calico:mtu: {mtu}
  calico:nodes:
    - name: node-1
      host: 192.0.2.11
"""

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("manifest_diff", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["manifest_diff"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@dataclass
class DiffResult:
    returncode: int
    stdout: str
    stderr: str
    summary: str


class ProjectRepo:
    """A git repository with this project's program, Pulumi.yaml and one stack file, `lab`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.copytree(REPO / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy2(REPO / "Pulumi.yaml", root / "Pulumi.yaml")
        self.git("init", "--quiet")

    def git(self, *args: str) -> str:
        return run_git(self.root, *args)

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def commit(self, message: str) -> None:
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)

    def diff(self, *args: str, manifest: Path = FIXTURE_MANIFEST) -> DiffResult:
        summary = self.root.parent / "summary.md"
        summary.unlink(missing_ok=True)
        # On GitHub Actions the tests themselves run with GITHUB_STEP_SUMMARY set; keep it out of the script.
        environment = {key: value for key, value in os.environ.items() if key != "GITHUB_STEP_SUMMARY"}
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "--manifest", str(manifest), "--summary", str(summary), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
            check=False,
        )
        text = summary.read_text(encoding="utf-8") if summary.exists() else ""
        return DiffResult(result.returncode, result.stdout, result.stderr, text)


@pytest.fixture
def project(tmp_path: Path) -> Callable[[], ProjectRepo]:
    def make() -> ProjectRepo:
        return ProjectRepo(tmp_path / "repo")

    return make


def manifests() -> list[object]:
    upstream = pytest.param(
        UPSTREAM_MANIFEST,
        id="upstream-v3.31.7",
        marks=pytest.mark.skipif(
            not UPSTREAM_MANIFEST.is_file(), reason=f"upstream Calico manifest not found at {UPSTREAM_MANIFEST}"
        ),
    )
    return [pytest.param(FIXTURE_MANIFEST, id="fixture"), upstream]


@needs_git
@pytest.mark.parametrize("manifest", manifests())
def test_mtu_change_names_veth_mtu_and_annotation(project: Callable[[], ProjectRepo], manifest: Path) -> None:
    repo = project()
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1400))
    repo.commit("base")
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1450))
    repo.commit("head")

    result = repo.diff("--base", "HEAD~1", "--head", "HEAD", manifest=manifest)

    assert result.returncode == 0, result.stderr
    assert "-  veth_mtu: '1400'" in result.stdout
    assert "+  veth_mtu: '1450'" in result.stdout
    assert re.search(r"^-\s+calico-pulumi/settings-hash: \w+$", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^\+\s+calico-pulumi/settings-hash: \w+$", result.stdout, re.MULTILINE), result.stdout
    assert "`ConfigMap kube-system/calico-config`" in result.summary
    assert "`DaemonSet kube-system/calico-node`" in result.summary
    assert "+  veth_mtu: '1450'" in result.summary


@needs_git
def test_annotation_change_is_in_pod_template(project: Callable[[], ProjectRepo]) -> None:
    repo = project()
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1400))
    repo.commit("base")
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1450))

    result = repo.diff("--base", "HEAD")

    # The hunk that changes the annotation must sit inside calico-node's pod template, which the
    # render writes as `template:` then `metadata:` with the `k8s-app: calico-node` label.
    hunks = re.split(r"(?m)^@@", result.stdout)
    annotation_hunks = [hunk for hunk in hunks if "+        calico-pulumi/settings-hash:" in hunk]
    assert annotation_hunks, result.stdout
    assert any("k8s-app: calico-node" in hunk for hunk in annotation_hunks), result.stdout


@needs_git
def test_working_tree_is_default_head(project: Callable[[], ProjectRepo]) -> None:
    repo = project()
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1400))
    repo.commit("base")
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1420))  # left uncommitted

    result = repo.diff("--base", "HEAD")

    assert result.returncode == 0, result.stderr
    assert "+  veth_mtu: '1420'" in result.stdout
    assert "working tree" in result.summary


@needs_git
def test_comment_only_change_is_no_change(project: Callable[[], ProjectRepo]) -> None:
    repo = project()
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1400))
    repo.commit("base")
    repo.write("Pulumi.lab.yaml", "# Reworded comment.\n" + STACK_FILE.format(mtu=1400))
    repo.commit("head")

    result = repo.diff("--base", "HEAD~1", "--head", "HEAD")

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "| `lab` | no change |" in result.summary


@needs_git
def test_program_default_change_uses_each_revision(project: Callable[[], ProjectRepo]) -> None:
    repo = project()
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1400))
    repo.commit("base")
    project_file = (repo.root / "Pulumi.yaml").read_text(encoding="utf-8")
    assert "docker.io/library/busybox:1.36.1" in project_file
    repo.write("Pulumi.yaml", project_file.replace("busybox:1.36.1", "busybox:1.37.0"))
    repo.commit("head")

    result = repo.diff("--base", "HEAD~1", "--head", "HEAD")

    assert result.returncode == 0, result.stderr
    assert "-        image: docker.io/library/busybox:1.36.1" in result.stdout
    assert "+        image: docker.io/library/busybox:1.37.0" in result.stdout
    assert "`Deployment default/pingtest`" in result.summary


@needs_git
def test_new_and_removed_stacks(project: Callable[[], ProjectRepo]) -> None:
    repo = project()
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1400))
    repo.commit("base")
    (repo.root / "Pulumi.lab.yaml").unlink()
    repo.write("Pulumi.edge.yaml", STACK_FILE.format(mtu=1450))
    repo.commit("head")

    result = repo.diff("--base", "HEAD~1", "--head", "HEAD")

    assert result.returncode == 0, result.stderr
    assert re.search(r"\| `edge` \| new stack: \d+ objects \|", result.summary), result.summary
    assert "| `lab` | stack removed |" in result.summary
    assert "+++ head/edge.yaml" in result.stdout


@needs_git
def test_stack_option_limits_comparison(project: Callable[[], ProjectRepo]) -> None:
    repo = project()
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1400))
    repo.write("Pulumi.edge.yaml", STACK_FILE.format(mtu=1400))
    repo.commit("base")
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1450))
    repo.write("Pulumi.edge.yaml", STACK_FILE.format(mtu=1450))

    result = repo.diff("--base", "HEAD", "--stack", "edge")

    assert result.returncode == 0, result.stderr
    assert "| `edge` |" in result.summary
    assert "`lab`" not in result.summary


@needs_git
def test_head_render_failure_exits_1(project: Callable[[], ProjectRepo]) -> None:
    repo = project()
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1400))
    repo.commit("base")
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=100))

    result = repo.diff("--base", "HEAD")

    assert result.returncode == 1
    assert "**render failed at head**" in result.summary
    assert "calico:mtu" in result.summary
    assert "calico:mtu" in result.stderr


@needs_git
def test_base_without_render_is_reported(project: Callable[[], ProjectRepo]) -> None:
    repo = project()
    render_module = (repo.root / "components" / "render.py").read_text(encoding="utf-8")
    (repo.root / "components" / "render.py").unlink()
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1400))
    repo.commit("base predates the offline render")
    repo.write("components/render.py", render_module)
    repo.commit("head adds it")

    result = repo.diff("--base", "HEAD~1", "--head", "HEAD")

    assert result.returncode == 0, result.stderr
    assert re.search(r"\| `lab` \| render failed at base; \d+ objects at head \|", result.summary), result.summary
    assert "No module named components.render" in result.summary


@needs_git
def test_unknown_base_exits_2(project: Callable[[], ProjectRepo]) -> None:
    repo = project()
    repo.write("Pulumi.lab.yaml", STACK_FILE.format(mtu=1400))
    repo.commit("base")

    result = repo.diff("--base", "no-such-branch")

    assert result.returncode == 2
    assert "'no-such-branch' is not a commit" in result.stderr
    assert "fetch-depth" in result.stderr


def test_missing_manifest_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--base", "HEAD", "--manifest", str(tmp_path / "absent.yaml")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert "is not a file" in result.stderr


def test_summary_truncates_to_budget() -> None:
    script = load_script()
    diff_lines = ["--- base/lab.yaml\n", "+++ head/lab.yaml\n"] + [f"+line {number}\n" for number in range(1000)]
    rendering = script.Rendering(present=True, text="x")
    report = script.StackReport("lab", rendering, rendering, diff=diff_lines, changed=["ConfigMap kube-system/x"])

    summary = script.summary_markdown([report], "abc", "def", None, budget=200)

    assert "+line 0\n" in summary
    assert "+line 999" not in summary
    assert "The summary shows" in summary
    assert f"of {len(diff_lines)} lines" in summary


def test_fence_outlasts_backticks() -> None:
    script = load_script()

    block = script.fenced("a ``` b ```` c", "diff")

    assert block.startswith("`````diff\n")
    assert block.endswith("\n`````\n")
