#!/usr/bin/env python3
"""Render every stack at two revisions with the offline render and diff the results.

    python ci/manifest-diff.py --base REV [--head REV] [--stack NAME]... [--manifest FILE] [--summary FILE]

Each revision is rendered by its own code (`python -m components.render`), so the diff shows what merging
changes in the cluster, whether the change is in a stack file or in the program. The base revision is
exported with `git archive` into a temporary folder; the head is the working tree unless --head names a
revision. The unified diff goes to standard output and a Markdown report (changed objects, then the
diff) is appended to --summary, which defaults to $GITHUB_STEP_SUMMARY.

Exit status: 0 when every stack renders at the head (changed or not), 1 when a stack fails to render at
the head, 2 on bad usage (not a git repository, unknown revision, unreadable --manifest).
"""

from __future__ import annotations

import argparse
import difflib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXIT_OK = 0
EXIT_HEAD_RENDER_FAILED = 1
EXIT_USAGE = 2

# Pulumi allows letters, digits, '-', '_' and '.' in a stack name. Pulumi.yaml itself does not match.
STACK_FILE = re.compile(r"^Pulumi\.([A-Za-z0-9_.-]+)\.yaml$")

# GitHub rejects a step summary over 1 MiB (1,048,576 bytes) and then shows none of it. The diffs in the
# summary therefore share a smaller budget, and the job log always has the full diff.
SUMMARY_DIFF_BUDGET = 900_000

RENDER_TIMEOUT_SECONDS = 600


class UsageError(Exception):
    """A problem with the arguments or the repository that no render can fix."""


@dataclass(frozen=True)
class Revision:
    """One side of the comparison: a folder holding a whole project tree."""

    label: str
    """`base`, or `head`."""
    description: str
    """Short commit id, or `working tree`."""
    tree: Path
    """Folder that contains Pulumi.yaml and components/."""


@dataclass(frozen=True)
class Rendering:
    """Result of rendering one stack at one revision."""

    present: bool
    """False when the revision has no Pulumi.<stack>.yaml."""
    text: str = ""
    """Rendered multi-document YAML, empty when absent or failed."""
    error: str = ""
    """Standard error of a failed render, empty on success."""

    @property
    def failed(self) -> bool:
        return self.present and bool(self.error)


@dataclass
class StackReport:
    """Comparison of one stack's renderings."""

    stack: str
    base: Rendering
    head: Rendering
    diff: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def run_git(repo: Path, *args: str) -> bytes:
    """Run git in `repo` and return its standard output, or raise UsageError with git's message on failure."""
    result = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise UsageError(f"git {' '.join(args)} failed: {message}")
    return result.stdout


def resolve_commit(repo: Path, revision: str) -> str:
    """Return the full commit id of `revision`, or raise UsageError naming it."""
    try:
        return run_git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}").decode().strip()
    except UsageError:
        raise UsageError(
            f"revision {revision!r} is not a commit in {repo}. Fix: fetch it first "
            "(in GitHub Actions, actions/checkout with fetch-depth: 2 or more)."
        ) from None


def export_revision(repo: Path, commit: str, destination: Path) -> None:
    """Write the files of `commit` into `destination` with git archive (no worktree, no checkout)."""
    archive = run_git(repo, "archive", "--format=tar", commit)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")


def stacks_in(tree: Path) -> set[str]:
    """Return the stack names of the Pulumi.<stack>.yaml files at the top of `tree`."""
    names = set()
    for path in tree.iterdir():
        match = STACK_FILE.match(path.name)
        if match and path.is_file():
            names.add(match.group(1))
    return names


def render_stack(revision: Revision, stack: str, manifest: Path | None, output_dir: Path) -> Rendering:
    """Render `stack` with the code of `revision`. A missing stack file is reported as absent, not failed."""
    if not (revision.tree / f"Pulumi.{stack}.yaml").is_file():
        return Rendering(present=False)

    output = output_dir / f"{revision.label}-{stack}.yaml"
    command = [sys.executable, "-m", "components.render", "--stack", stack, "--output", str(output)]
    if manifest is not None:
        command += ["--manifest", str(manifest)]
    print(f"rendering stack {stack} at {revision.label} ({revision.description})", file=sys.stderr)
    try:
        result = subprocess.run(
            command, cwd=revision.tree, capture_output=True, text=True, timeout=RENDER_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        return Rendering(present=True, error=f"the render timed out after {RENDER_TIMEOUT_SECONDS} s")

    if result.returncode != 0:
        error = result.stderr.strip() or f"the render exited with status {result.returncode} and printed nothing"
        print(f"render of stack {stack} at {revision.label} failed:\n{error}", file=sys.stderr)
        return Rendering(present=True, error=error)
    if result.stderr.strip():
        print(result.stderr.strip(), file=sys.stderr)  # the render's notes belong in the job log
    return Rendering(present=True, text=output.read_text(encoding="utf-8"))


def object_key(document: dict[str, Any]) -> str:
    """Return `Kind namespace/name` (or `Kind name` for a cluster-scoped object)."""
    metadata = document.get("metadata") or {}
    name = metadata.get("name", "?")
    namespace = metadata.get("namespace")
    kind = document.get("kind", "?")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def objects_by_key(text: str) -> dict[str, Any]:
    """Parse a rendering into its objects by `object_key`, skipping empty documents."""
    if not text:
        return {}
    return {object_key(document): document for document in yaml.safe_load_all(text) if isinstance(document, dict)}


def compare(stack: str, base: Rendering, head: Rendering, base_description: str, head_description: str) -> StackReport:
    """Diff two renderings of one stack, as text lines and as added, removed and changed objects."""
    report = StackReport(stack, base, head)
    report.diff = list(
        difflib.unified_diff(
            base.text.splitlines(keepends=True),
            head.text.splitlines(keepends=True),
            fromfile=f"base/{stack}.yaml",
            tofile=f"head/{stack}.yaml",
            fromfiledate=base_description,
            tofiledate=head_description,
        )
    )
    base_objects = objects_by_key(base.text)
    head_objects = objects_by_key(head.text)
    report.added = [key for key in head_objects if key not in base_objects]
    report.removed = [key for key in base_objects if key not in head_objects]
    report.changed = [key for key in head_objects if key in base_objects and head_objects[key] != base_objects[key]]
    return report


def outcome(report: StackReport) -> str:
    """Return the one-line result of a stack for the summary table."""
    if report.head.failed:
        return "**render failed at head**"
    if not report.head.present and not report.base.present:
        return "no stack file at either revision"
    if not report.head.present:
        return "stack removed"
    if not report.base.present:
        return f"new stack: {len(report.added)} objects"
    if report.base.failed:
        return f"render failed at base; {len(report.added)} objects at head"
    if not report.diff:
        return "no change"
    parts = []
    for label, keys in (("changed", report.changed), ("added", report.added), ("removed", report.removed)):
        if keys:
            parts.append(f"{label}: " + ", ".join(f"`{key}`" for key in keys))
    return "; ".join(parts) if parts else "formatting only"


def fenced(text: str, language: str = "") -> str:
    """Return `text` in a Markdown code fence longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{language}\n{text.rstrip(chr(10))}\n{fence}\n"


def truncate_lines(lines: Sequence[str], budget: int) -> tuple[str, int]:
    """Return the longest whole-line prefix of `lines` within `budget` bytes, and how many lines it holds."""
    kept: list[str] = []
    used = 0
    for line in lines:
        size = len(line.encode("utf-8"))
        if used + size > budget:
            break
        kept.append(line)
        used += size
    return "".join(kept), len(kept)


def summary_markdown(
    reports: Sequence[StackReport],
    base_description: str,
    head_description: str,
    manifest: Path | None,
    budget: int = SUMMARY_DIFF_BUDGET,
) -> str:
    """Build the job-summary report: a table of stacks, then each stack's changes, errors and diff."""
    out = [f"## Calico manifest diff: base `{base_description}` → head `{head_description}`\n\n"]
    if manifest is not None:
        out.append(
            f"Both revisions were rendered from `{manifest.name}` (`--manifest`), so a change of "
            "`calico:version` does not show here.\n\n"
        )
    if not reports:
        out.append("No stack file (`Pulumi.<stack>.yaml`) at either revision.\n")
        return "".join(out)

    out.append("| stack | result |\n|---|---|\n")
    for report in reports:
        out.append(f"| `{report.stack}` | {outcome(report)} |\n")
    out.append("\n")

    remaining = budget
    for report in reports:
        if not report.diff and not report.base.failed and not report.head.failed:
            continue
        out.append(f"### Stack `{report.stack}`\n\n")
        for label, rendering in (("base", report.base), ("head", report.head)):
            if rendering.failed:
                out.append(f"The render failed at {label}:\n\n{fenced(rendering.error)}\n")
        if not report.diff:
            continue
        text, kept = truncate_lines(report.diff, remaining)
        remaining -= len(text.encode("utf-8"))
        out.append(f"<details open><summary>diff, {len(report.diff)} lines</summary>\n\n")
        if text:
            out.append(fenced(text, "diff"))
        if kept < len(report.diff):
            out.append(
                f"\nThe summary shows {kept} of {len(report.diff)} lines to stay under GitHub's 1 MiB limit; "
                "the job log has the whole diff.\n"
            )
        out.append("\n</details>\n\n")
    return "".join(out)


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ci/manifest-diff.py",
        description="Diff the rendered Calico manifest and pingtest of every stack between two revisions.",
    )
    parser.add_argument("--base", required=True, help="base revision, for example HEAD^1 or origin/main")
    parser.add_argument("--head", help="head revision (default: the working tree, uncommitted changes included)")
    parser.add_argument(
        "--stack", action="append", dest="stacks", metavar="NAME", help="stack to compare (repeatable; default: all)"
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        help="local calico.yaml for both renders, so that nothing is downloaded; "
        "calico:version then comes from the file",
    )
    parser.add_argument(
        "--summary",
        type=Path,
        default=Path(os.environ["GITHUB_STEP_SUMMARY"]) if os.environ.get("GITHUB_STEP_SUMMARY") else None,
        help="Markdown file to append the report to (default: $GITHUB_STEP_SUMMARY when set)",
    )
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="folder inside the git repository (default: .)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit status."""
    arguments = parse_arguments(argv)
    try:
        return run(arguments)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


def run(arguments: argparse.Namespace) -> int:
    repo = Path(run_git(arguments.repo, "rev-parse", "--show-toplevel").decode().strip())
    manifest: Path | None = arguments.manifest.resolve() if arguments.manifest else None
    if manifest is not None and not manifest.is_file():
        raise UsageError(f"--manifest {str(arguments.manifest)!r} is not a file. Fix: pass the path of a calico.yaml.")

    base_commit = resolve_commit(repo, arguments.base)
    head_commit = resolve_commit(repo, arguments.head) if arguments.head else None

    with tempfile.TemporaryDirectory(prefix="manifest-diff-") as scratch:
        scratch_dir = Path(scratch)
        base = Revision("base", base_commit[:12], scratch_dir / "base")
        export_revision(repo, base_commit, base.tree)
        if head_commit is None:
            head = Revision("head", "working tree", repo)
        else:
            head = Revision("head", head_commit[:12], scratch_dir / "head")
            export_revision(repo, head_commit, head.tree)

        stacks = sorted(arguments.stacks or stacks_in(base.tree) | stacks_in(head.tree))
        reports = []
        for stack in stacks:
            base_rendering = render_stack(base, stack, manifest, scratch_dir)
            head_rendering = render_stack(head, stack, manifest, scratch_dir)
            reports.append(compare(stack, base_rendering, head_rendering, base.description, head.description))

    for report in reports:
        sys.stdout.writelines(report.diff)
    summary = summary_markdown(reports, base.description, head.description, manifest)
    if arguments.summary is not None:
        with open(arguments.summary, "a", encoding="utf-8") as file:
            file.write(summary)

    changed = sum(1 for report in reports if report.diff)
    failed = [report.stack for report in reports if report.head.failed]
    print(
        f"stacks compared: {len(reports)}, changed: {changed}, failed to render at head: {len(failed)}",
        file=sys.stderr,
    )
    return EXIT_HEAD_RENDER_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
