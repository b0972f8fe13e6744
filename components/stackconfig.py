"""Read the declared keys of Pulumi.yaml and the values of a stack file without the Pulumi CLI.

The Pulumi CLI applies Pulumi.yaml's defaults before the program runs. The offline render and the
tests have no CLI, so they apply the same defaults here, from the same declarations.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from components.settings import KEY_PREFIX, ConfigError

PROJECT_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class KeyDeclaration:
    """One key of Pulumi.yaml's `config:` block."""

    type: str | None
    """string, integer, boolean, array, or None for an untyped (object) key."""
    default: Any
    """Declared default; meaningful only when `has_default`."""
    has_default: bool
    """False for a required key."""
    description: str
    """Help text."""


def load_schema(project_dir: Path = PROJECT_DIR) -> dict[str, KeyDeclaration]:
    """Return Pulumi.yaml's config declarations by short key name."""
    return dict(_load_schema(project_dir.resolve()))


@functools.cache
def _load_schema(project_dir: Path) -> dict[str, KeyDeclaration]:
    # Pulumi.yaml does not change while a program or a test session runs, and several callers need it.
    with open(project_dir / "Pulumi.yaml", encoding="utf-8") as file:
        project = yaml.safe_load(file)
    schema: dict[str, KeyDeclaration] = {}
    for key, declaration in (project.get("config") or {}).items():
        schema[key] = KeyDeclaration(
            type=declaration.get("type"),
            default=declaration.get("default"),
            has_default="default" in declaration,
            description=" ".join(str(declaration.get("description", "")).split()),
        )
    return schema


@dataclass(frozen=True)
class StackValues:
    """The `calico:` values of one stack file."""

    values: dict[str, Any]
    """Short key name to value; encrypted values are replaced by a placeholder string."""
    secret_keys: frozenset[str]
    """Short names of the keys stored encrypted (`secure:`)."""
    path: Path
    """The stack file read."""


SECRET_PLACEHOLDER = "[secret]"


def read_stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> StackValues:
    """Read Pulumi.<stack>.yaml.

    Raises FileNotFoundError naming the file when it is missing, and ConfigError when it is not a
    stack file (not UTF-8, not YAML, or without a `config:` mapping).
    """
    path = project_dir / f"Pulumi.{stack}.yaml"
    fix = "Fix: the file must be YAML with a `config:` mapping, as `pulumi config set` writes it."
    try:
        with open(path, encoding="utf-8") as file:
            document = yaml.safe_load(file) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError([f"{path}: cannot be read as YAML ({error}). {fix}"]) from error
    if not isinstance(document, Mapping):
        raise ConfigError([f"{path}: contains a {type(document).__name__}, not a mapping. {fix}"])
    config = document.get("config") or {}
    if not isinstance(config, Mapping):
        raise ConfigError([f"{path}: `config:` is a {type(config).__name__}, not a mapping. {fix}"])
    values: dict[str, Any] = {}
    secret_keys: set[str] = set()
    for full_key, value in config.items():
        if not str(full_key).startswith(KEY_PREFIX):
            continue  # other namespaces (kubernetes:context, ...) belong to their providers
        key = str(full_key).removeprefix(KEY_PREFIX)
        if isinstance(value, Mapping) and set(value) == {"secure"}:
            secret_keys.add(key)
            value = SECRET_PLACEHOLDER
        values[key] = value
    return StackValues(values, frozenset(secret_keys), path)


def apply_defaults(schema: Mapping[str, KeyDeclaration], values: Mapping[str, Any]) -> dict[str, Any]:
    """Return `values` completed with the declared defaults, as the Pulumi CLI does.

    For untyped object keys (pingtest) a partial object set by the user is completed field by field
    from the declared default, so `pulumi config set --path calico:pingtest.replicas 2` keeps the
    other fields.
    """
    merged: dict[str, Any] = {}
    for key, declaration in schema.items():
        if key in values:
            value = values[key]
            if declaration.type is None and isinstance(value, str):
                # `pulumi config set calico:nodes '<json>'` stores a JSON string, which the program's
                # get_object parses, so the render parses it too.
                # A string that is not JSON stays a string, so validation names the key and the value.
                with contextlib.suppress(ValueError):
                    value = json.loads(value)
            if declaration.type is None and isinstance(declaration.default, Mapping) and isinstance(value, Mapping):
                value = {**copy.deepcopy(dict(declaration.default)), **value}
            merged[key] = value
        elif declaration.has_default:
            merged[key] = copy.deepcopy(declaration.default)
    for key, value in values.items():
        merged.setdefault(key, value)  # undeclared keys are kept so that validation names them
    return merged
