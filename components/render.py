"""Offline render: print the exact objects the program applies, with no cluster and no Pulumi CLI.

    python -m components.render --stack dev [--manifest FILE] [--output FILE]

Reads Pulumi.yaml's defaults and Pulumi.<stack>.yaml (from the current directory when it contains a
Pulumi.yaml, else from this checkout), validates them with the program's own rules, transforms the
manifest with the program's own code, and writes multi-document YAML: the Calico objects, then the
pingtest and the network check's objects. Exit status: 0 on success, 2 on bad configuration (including a manifest
that fails its checks), 1 on a failed download.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from components.manifest import ManifestDownloadError, load_checked_manifest
from components.netcheck import build_objects, read_script
from components.pingtest import pingtest_deployment
from components.settings import ConfigError, Settings, parse_settings
from components.stackconfig import PROJECT_DIR, apply_defaults, load_schema, read_stack_file
from components.transform import (
    ManifestError,
    TransformParams,
    dump_manifest,
    node_image_tag,
    parse_manifest,
    settings_hash,
    transform_manifest,
)

EXIT_BAD_CONFIG = 2
EXIT_DOWNLOAD_FAILED = 1


def _version_of_file(path: str) -> str:
    """Return the calico-node image tag of a local manifest, which the render then uses as calico:version."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            [f"--manifest {path!r}: cannot be read ({error}). Fix: pass an existing calico.yaml."]
        ) from error
    try:
        tag = node_image_tag(parse_manifest(text, path))
    except ManifestError as error:
        raise ConfigError([f"--manifest {path!r}: {error}"]) from error
    if tag is None:
        raise ConfigError(
            [f"--manifest {path!r}: no calico-node container image with a tag was found. Fix: pass a calico.yaml."]
        )
    return tag


def load_stack_settings(stack: str, manifest: str | None, project_dir: Path = PROJECT_DIR) -> Settings:
    """Validate a stack file as the program would; `manifest` replaces calico:manifest and calico:version."""
    schema = load_schema(project_dir)
    try:
        stack_values = read_stack_file(stack, project_dir)
    except FileNotFoundError as error:
        raise ConfigError(
            [f"stack {stack!r}: {error.filename} does not exist. Fix: pulumi stack init {stack}, or pass --stack."]
        ) from error
    values = dict(stack_values.values)
    if manifest is not None:
        values["manifest"] = manifest
        values["version"] = _version_of_file(manifest)
        values.pop("manifestSha256", None)
    return parse_settings(apply_defaults(schema, values), declared_keys=schema, secret_keys=stack_values.secret_keys)


def render(settings: Settings) -> tuple[list[dict[str, Any]], list[str]]:
    """Return the objects the program would apply for `settings`, and the notes it would log."""
    _, documents = load_checked_manifest(settings.manifest, settings.version)
    params = TransformParams.from_settings(settings)
    objects, notes = transform_manifest(documents, params)
    if settings.pingtest.enabled:
        objects.append(pingtest_deployment(settings.pingtest, settings_hash(params)))
        check = build_objects(settings, read_script())
        objects += [
            check.pingtest_service,
            check.service_account,
            check.role,
            check.role_binding,
            check.script,
            check.job,
        ]
    return objects, notes


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m components.render",
        description="Print the transformed Calico manifest, the pingtest and the network check's objects of a "
        "stack, offline.",
    )
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument(
        "--manifest",
        help="local calico.yaml to use in place of calico:manifest; "
        "calico:version is taken from its calico-node image tag",
    )
    parser.add_argument("--output", help="file to write (default: standard output)")
    arguments = parser.parse_args(argv)
    # Like the Pulumi CLI, work on the project in the current directory when there is one.
    project_dir = Path.cwd() if (Path.cwd() / "Pulumi.yaml").is_file() else PROJECT_DIR

    try:
        settings = load_stack_settings(arguments.stack, arguments.manifest, project_dir)
        objects, notes = render(settings)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except ManifestDownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_DOWNLOAD_FAILED

    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    text = dump_manifest(objects)
    if arguments.output:
        try:
            Path(arguments.output).write_text(text, encoding="utf-8")
        except OSError as error:
            print(f"error: --output {arguments.output!r}: cannot be written ({error}).", file=sys.stderr)
            return EXIT_BAD_CONFIG
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
