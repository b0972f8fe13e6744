"""Fetch the Calico manifest: read a local file or download a URL, verify its sha256, cache it by digest.

The program downloads the manifest itself instead of handing the URL to ConfigFile, because
ConfigFile's fetch has no timeout and no checksum. A verified download is kept under its sha256, so
the next preview needs no network.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

from components.settings import ConfigError, ManifestSource
from components.transform import ManifestError, check_manifest, parse_manifest

# Seconds to wait for the TCP connection, and then between bytes of the response.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
# The read timeout bounds each wait for bytes, so a server that trickles them needs an overall limit.
TOTAL_TIMEOUT = 120.0
# The largest upstream calico.yaml is about 0.55 MB (v3.30); anything far larger is not a manifest.
MAX_MANIFEST_BYTES = 20 * 1024 * 1024
CACHE_ENV = "CALICO_MANIFEST_CACHE"


class ManifestDownloadError(Exception):
    """The manifest could not be downloaded (network, HTTP status, timeout)."""


@dataclass(frozen=True)
class LoadedManifest:
    """A manifest's text, verified against the expected sha256 when one is known."""

    text: str
    """The manifest, decoded as UTF-8."""
    sha256: str
    """sha256 of the file's bytes."""
    path: Path
    """Local file holding exactly these bytes (the user's file or the cache entry)."""
    source: str
    """The URL or path it came from, for messages."""


def default_cache_dir() -> Path:
    """Return the cache folder: $CALICO_MANIFEST_CACHE, else $XDG_CACHE_HOME/calico-pulumi, else ~/.cache."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "calico-pulumi"


def _mismatch(source: ManifestSource, actual: str) -> ConfigError:
    key = "calico:manifestSha256" if source.sha256 else "calico:version"
    return ConfigError(
        [
            f"calico:manifest = {source.location!r}: its sha256 is {actual}, but {source.sha256} was expected "
            f"(from {key} or the project's pin). The file changed upstream or in transit, or is another release. "
            "Fix: check the file; if you trust it, pulumi config set calico:manifestSha256 " + actual
        ]
    )


def _decode(data: bytes, location: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            [
                f"calico:manifest = {location!r}: not UTF-8 text ({error}), so not a Calico manifest. "
                "Fix: point calico:manifest at a calico.yaml file."
            ]
        ) from error


def _download(url: str) -> bytes:
    hint = (
        "Fix: check that this machine can reach that host, or download the file elsewhere and run "
        "pulumi config set calico:manifest ./calico.yaml (a local file needs no network; the offline "
        "render also takes --manifest ./calico.yaml)."
    )
    deadline = time.monotonic() + TOTAL_TIMEOUT
    try:
        with requests.get(url, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT), stream=True) as response:
            response.raise_for_status()
            chunks: list[bytes] = []
            size = 0
            while True:
                # read1 returns whatever one socket read brings, so the deadline is checked at
                # least once per read timeout even when the server sends a byte at a time.
                chunk = response.raw.read1(65536, decode_content=True)
                if not chunk:
                    break
                if time.monotonic() > deadline:
                    raise ManifestDownloadError(
                        f"downloading {url} timed out: it took longer than {TOTAL_TIMEOUT:g} s in total "
                        f"({size} bytes received). {hint}"
                    )
                size += len(chunk)
                if size > MAX_MANIFEST_BYTES:
                    raise ManifestDownloadError(
                        f"downloading {url} failed: the response exceeds {MAX_MANIFEST_BYTES} bytes, far more "
                        f"than any calico.yaml. {hint}"
                    )
                chunks.append(chunk)
    except (requests.Timeout, urllib3.exceptions.ReadTimeoutError) as error:
        raise ManifestDownloadError(
            f"downloading {url} timed out (connect {CONNECT_TIMEOUT:g} s, read {READ_TIMEOUT:g} s): {error}. {hint}"
        ) from error
    except requests.HTTPError as error:
        raise ManifestDownloadError(f"downloading {url} failed: HTTP {error.response.status_code}. {hint}") from error
    except (requests.RequestException, urllib3.exceptions.HTTPError) as error:
        raise ManifestDownloadError(f"downloading {url} failed: {_root_cause(error)}. {hint}") from error
    return b"".join(chunks)


def _root_cause(error: BaseException) -> str:
    """Return the innermost cause's message: requests wraps a DNS or TCP failure in several layers."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__  # type: ignore[assignment]
    # urllib3 nests the reason inside its own message; its args carry the plain text.
    reason = getattr(error, "reason", None)
    return str(reason or error)


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_manifest(source: ManifestSource, cache_dir: Path | None = None) -> LoadedManifest:
    """Return the verified manifest of `source`, downloading it only when the cache lacks it.

    Raises ConfigError when the bytes do not match the expected sha256 or are not text, and
    ManifestDownloadError when a download fails.
    """
    if not source.is_url:
        path = Path(source.location)
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if source.sha256 and digest != source.sha256:
            raise _mismatch(source, digest)
        return LoadedManifest(_decode(data, source.location), digest, path.resolve(), source.location)

    # A URL always has an expected digest (settings validation requires a pin or calico:manifestSha256).
    assert source.sha256 is not None
    cache = (cache_dir or default_cache_dir()) / f"{source.sha256}.yaml"
    if cache.is_file():
        data = cache.read_bytes()
        if hashlib.sha256(data).hexdigest() == source.sha256:
            return LoadedManifest(_decode(data, source.location), source.sha256, cache, source.location)
        cache.unlink()  # a damaged cache entry is fetched again rather than trusted

    data = _download(source.location)
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise _mismatch(source, digest)
    text = _decode(data, source.location)
    _write_atomically(cache, data)
    return LoadedManifest(text, digest, cache, source.location)


def load_checked_manifest(
    source: ManifestSource, version: str, cache_dir: Path | None = None
) -> tuple[LoadedManifest, list[dict[str, Any]]]:
    """Load the manifest and parse it, raising ConfigError when it is not a usable manifest of `version`."""
    loaded = load_manifest(source, cache_dir)
    try:
        documents = parse_manifest(loaded.text, loaded.source)
    except ManifestError as error:
        raise ConfigError([f"calico:manifest: {error}"]) from error
    problems = check_manifest(documents, loaded.source, version)
    if problems:
        raise ConfigError(problems)
    return loaded, documents
