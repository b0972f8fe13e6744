"""Manifest download: timeout, checksum, cache by digest, against HTTP servers the tests start on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from components import manifest as manifest_module
from components.manifest import ManifestDownloadError, load_manifest
from components.settings import ConfigError, ManifestSource

BODY = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: calico-config\n"
BODY_SHA256 = hashlib.sha256(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    requests_seen: ClassVar[list[str]] = []
    stall_seconds = 0.0

    def do_GET(self) -> None:
        type(self).requests_seen.append(self.path)
        if self.path == "/stall":
            time.sleep(type(self).stall_seconds)
        if self.path == "/trickle":
            # Headers at once, then one byte at a time, each within the read timeout.
            self.send_response(200)
            self.end_headers()
            try:
                for byte in BODY * 20:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if self.path == "/missing":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    _Handler.requests_seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_download_verified_and_cached(server: str, tmp_path: Path) -> None:
    source = ManifestSource(f"{server}/calico.yaml", BODY_SHA256, is_url=True)
    first = load_manifest(source, tmp_path)
    assert first.sha256 == BODY_SHA256
    assert first.path == tmp_path / f"{BODY_SHA256}.yaml"
    assert first.path.read_bytes() == BODY
    second = load_manifest(source, tmp_path)
    assert second.text == first.text
    assert _Handler.requests_seen == ["/calico.yaml"], "the second load must come from the cache"


def test_cache_used_without_network(tmp_path: Path) -> None:
    (tmp_path / f"{BODY_SHA256}.yaml").write_bytes(BODY)
    source = ManifestSource(f"https://127.0.0.1:{_closed_port()}/calico.yaml", BODY_SHA256, is_url=True)
    assert load_manifest(source, tmp_path).text == BODY.decode()


def test_damaged_cache_refetched(server: str, tmp_path: Path) -> None:
    (tmp_path / f"{BODY_SHA256}.yaml").write_bytes(b"tampered")
    source = ManifestSource(f"{server}/calico.yaml", BODY_SHA256, is_url=True)
    assert load_manifest(source, tmp_path).text == BODY.decode()
    assert _Handler.requests_seen == ["/calico.yaml"]


def test_checksum_mismatch_rejected(server: str, tmp_path: Path) -> None:
    source = ManifestSource(f"{server}/calico.yaml", "0" * 64, is_url=True)
    with pytest.raises(ConfigError) as raised:
        load_manifest(source, tmp_path)
    message = str(raised.value)
    assert BODY_SHA256 in message, "the message shows the sha256 found"
    assert "0" * 64 in message, "the message shows the sha256 expected"
    assert "calico:manifestSha256" in message
    assert not list(tmp_path.iterdir()), "nothing unverified is cached"


def test_http_error_names_url(server: str, tmp_path: Path) -> None:
    source = ManifestSource(f"{server}/missing", BODY_SHA256, is_url=True)
    with pytest.raises(ManifestDownloadError) as raised:
        load_manifest(source, tmp_path)
    assert f"{server}/missing" in str(raised.value)
    assert "HTTP 404" in str(raised.value)


def test_unreachable_url_fails_fast(tmp_path: Path) -> None:
    url = f"https://127.0.0.1:{_closed_port()}/calico.yaml"
    started = time.monotonic()
    with pytest.raises(ManifestDownloadError) as raised:
        load_manifest(ManifestSource(url, BODY_SHA256, is_url=True), tmp_path)
    assert time.monotonic() - started < manifest_module.CONNECT_TIMEOUT
    message = str(raised.value)
    assert url in message
    assert "calico:manifest" in message, "the message names the key to set"


def test_stalled_server_times_out(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "READ_TIMEOUT", 0.5)
    _Handler.stall_seconds = 3.0
    started = time.monotonic()
    with pytest.raises(ManifestDownloadError) as raised:
        load_manifest(ManifestSource(f"{server}/stall", BODY_SHA256, is_url=True), tmp_path)
    elapsed = time.monotonic() - started
    assert elapsed < 2.5, f"the download waited {elapsed:.1f} s despite a 0.5 s read timeout"
    assert "timed out" in str(raised.value)


def test_trickling_server_hits_total_timeout(server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "READ_TIMEOUT", 0.5)
    monkeypatch.setattr(manifest_module, "TOTAL_TIMEOUT", 1.0)
    started = time.monotonic()
    with pytest.raises(ManifestDownloadError) as raised:
        load_manifest(ManifestSource(f"{server}/trickle", BODY_SHA256, is_url=True), tmp_path)
    elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"the download ran {elapsed:.1f} s despite a 1 s total timeout"
    assert "in total" in str(raised.value)


def test_local_file_checked_against_given_sha(tmp_path: Path) -> None:
    path = tmp_path / "calico.yaml"
    path.write_bytes(BODY)
    assert load_manifest(ManifestSource(str(path), BODY_SHA256, is_url=False)).sha256 == BODY_SHA256
    with pytest.raises(ConfigError):
        load_manifest(ManifestSource(str(path), "1" * 64, is_url=False))


def test_local_file_without_sha(tmp_path: Path) -> None:
    path = tmp_path / "calico.yaml"
    path.write_bytes(BODY)
    loaded = load_manifest(ManifestSource(str(path), None, is_url=False))
    assert loaded.sha256 == BODY_SHA256
    assert loaded.path == path.resolve()
