"""Tests for fedca.data.download against a real local HTTP server."""

from __future__ import annotations

import functools
import hashlib
import io
import socket
import threading
import zipfile
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from fedca.data.download import RemoteSource, fetch, sha256_of
from fedca.errors import FedcaError

MEMBER = "ml-100k/u.data"
RATINGS = b"196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"
RATINGS_SHA256 = hashlib.sha256(RATINGS).hexdigest()
WRONG_SHA256 = "0" * 64


class _Handler(SimpleHTTPRequestHandler):
    """Serves a directory, records request paths, and fakes misbehaving servers."""

    def do_GET(self) -> None:
        """Serve ``/short`` and ``/chunked`` cut short, ``/stall`` never answering, else files."""
        self.server.requests.append(self.path)
        if self.path == "/short":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"only ten b")
        elif self.path == "/chunked":
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"3e8\r\nonly ten b")
            self.close_connection = True
        elif self.path == "/stall":
            self.server.release.wait(timeout=10)
        else:
            super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@dataclass
class Server:
    """A running local HTTP server and the directory it serves."""

    root: Path
    httpd: ThreadingHTTPServer

    def url(self, name: str) -> str:
        """The URL of ``name`` under the served directory."""
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    @property
    def requests(self) -> list[str]:
        """Paths requested so far."""
        return self.httpd.requests


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """Serve ``tmp_path / "www"`` on 127.0.0.1 from a background thread."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    httpd.requests = []
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield Server(root, httpd)
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    """Destination of the fetched file, in a directory of its own (created by fetch)."""
    return tmp_path / "data" / "ml-100k" / "u.data"


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip archive holding ``members``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _publish(server: Server, name: str, data: bytes) -> str:
    """Put ``data`` under ``name`` on the server; return its URL."""
    (server.root / name).write_bytes(data)
    return server.url(name)


def _archive_url(server: Server) -> str:
    """Publish the standard test archive; return its URL."""
    return _publish(server, "ml-100k.zip", _zip_bytes({"ml-100k/README": b"readme\n", MEMBER: RATINGS}))


def _error_of(source: RemoteSource, dest: Path, **kwargs: object) -> str:
    """Run fetch, expecting a FedcaError; return its (single-line) message."""
    with pytest.raises(FedcaError) as info:
        fetch(source, dest, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def _assert_nothing_left(dest: Path) -> None:
    """The destination directory holds no file (dest included)."""
    assert list(dest.parent.iterdir()) == []


def _assert_only_dest(dest: Path, content: bytes) -> None:
    """The destination directory holds only ``dest``, with ``content``."""
    assert list(dest.parent.iterdir()) == [dest]
    assert dest.read_bytes() == content


def test_sha256_of_matches_hashlib(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(RATINGS)
    assert sha256_of(path) == RATINGS_SHA256


def test_good_archive_extracts_member_and_leaves_only_dest(server: Server, dest: Path) -> None:
    source = RemoteSource(_archive_url(server), member=MEMBER, sha256=RATINGS_SHA256)
    assert fetch(source, dest) == dest
    _assert_only_dest(dest, RATINGS)
    assert sha256_of(dest) == RATINGS_SHA256


def test_archive_md5_and_size_are_accepted_when_right(server: Server, dest: Path) -> None:
    archive = _zip_bytes({MEMBER: RATINGS})
    url = _publish(server, "a.zip", archive)
    source = RemoteSource(url, member=MEMBER, archive_md5=hashlib.md5(archive).hexdigest(), size=len(archive))
    fetch(source, dest, progress=True)
    _assert_only_dest(dest, RATINGS)


def test_plain_file_url_with_sha256_is_placed_as_is(server: Server, dest: Path) -> None:
    source = RemoteSource(_publish(server, "u.data", RATINGS), sha256=RATINGS_SHA256.upper())
    fetch(source, dest)
    _assert_only_dest(dest, RATINGS)


def test_present_file_with_right_checksum_is_not_downloaded_again(server: Server, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(RATINGS)
    source = RemoteSource(_archive_url(server), member=MEMBER, sha256=RATINGS_SHA256)
    assert fetch(source, dest) == dest
    assert server.requests == []
    _assert_only_dest(dest, RATINGS)


def test_present_file_without_known_checksum_is_trusted(server: Server, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"whatever\n")
    fetch(RemoteSource(_archive_url(server), member=MEMBER), dest)
    assert server.requests == []
    _assert_only_dest(dest, b"whatever\n")


def test_present_file_with_wrong_checksum_is_replaced(server: Server, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"stale\n")
    fetch(RemoteSource(_archive_url(server), member=MEMBER, sha256=RATINGS_SHA256), dest)
    assert server.requests == ["/ml-100k.zip"]
    _assert_only_dest(dest, RATINGS)


def test_truncated_archive_leaves_nothing_behind(server: Server, dest: Path) -> None:
    archive = _zip_bytes({MEMBER: RATINGS})
    url = _publish(server, "half.zip", archive[: len(archive) // 2])
    message = _error_of(RemoteSource(url, member=MEMBER, sha256=RATINGS_SHA256), dest)
    assert "zip" in message and "by hand" in message
    _assert_nothing_left(dest)


def test_connection_closed_early_is_reported_as_truncated(server: Server, dest: Path) -> None:
    message = _error_of(RemoteSource(server.url("short")), dest)
    assert "truncated" in message and str(dest) in message
    _assert_nothing_left(dest)


def test_chunked_response_cut_short_is_reported_as_truncated(server: Server, dest: Path) -> None:
    message = _error_of(RemoteSource(server.url("chunked")), dest)
    assert "truncated" in message
    _assert_nothing_left(dest)


def test_wrong_checksum_discards_download_and_keeps_old_dest(server: Server, dest: Path) -> None:
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"old\n")
    source = RemoteSource(_archive_url(server), member=MEMBER, sha256=WRONG_SHA256)
    message = _error_of(source, dest)
    assert "checksum" in message and RATINGS_SHA256 in message and "by hand" in message
    _assert_only_dest(dest, b"old\n")


def test_wrong_archive_md5_is_a_checksum_error(server: Server, dest: Path) -> None:
    message = _error_of(RemoteSource(_archive_url(server), member=MEMBER, archive_md5="0" * 32), dest)
    assert "checksum" in message and "md5" in message
    _assert_nothing_left(dest)


def test_wrong_size_is_an_error(server: Server, dest: Path) -> None:
    message = _error_of(RemoteSource(_archive_url(server), member=MEMBER, size=1), dest)
    assert "size mismatch" in message
    _assert_nothing_left(dest)


def test_http_404_names_status_and_manual_placement(server: Server, dest: Path) -> None:
    source = RemoteSource(server.url("missing.zip"), member=MEMBER, sha256=RATINGS_SHA256)
    message = _error_of(source, dest)
    assert "404" in message
    assert f"download it by hand and place {MEMBER} from the archive at {dest}" in message
    assert f"expected sha256 {RATINGS_SHA256}" in message
    _assert_nothing_left(dest)


def test_missing_member_is_named_in_error(server: Server, dest: Path) -> None:
    message = _error_of(RemoteSource(_archive_url(server), member="ml-100k/u.item"), dest)
    assert "ml-100k/u.item is not in the archive" in message and MEMBER in message
    _assert_nothing_left(dest)


def test_connection_refused_is_an_error(dest: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message = _error_of(RemoteSource(f"http://127.0.0.1:{port}/u.data"), dest)
    assert "failed" in message and "by hand" in message
    _assert_nothing_left(dest)


def test_stalled_server_times_out_cleanly(server: Server, dest: Path) -> None:
    message = _error_of(RemoteSource(server.url("stall")), dest, timeout=0.2)
    assert "timed out" in message
    _assert_nothing_left(dest)


def test_non_http_url_is_refused(tmp_path: Path, dest: Path) -> None:
    local = tmp_path / "u.data"
    local.write_bytes(RATINGS)
    message = _error_of(RemoteSource(local.as_uri()), dest)
    assert "only http and https" in message
    assert not dest.exists()


# --------------------------------------------------------------------------- download on first use


def _dataset(tmp_path: Path, url: str, *overrides: str):
    """The ml100k dataset config, served from ``url``, with its root in ``tmp_path``."""
    from fedca.config.compose import compose_run_config
    return compose_run_config(["dataset=ml100k", f"dataset.root={tmp_path / 'data'}", f"dataset.url={url}",
                               f"dataset.sha256={RATINGS_SHA256}", "dataset.archive_md5=null", *overrides]).dataset


def test_a_missing_dataset_file_is_downloaded_on_first_use(server: Server, tmp_path: Path, dest: Path) -> None:
    from fedca.data.sources import ensure_file
    url = _archive_url(server)
    assert ensure_file(_dataset(tmp_path, url)) == dest   # dataset.download is true by default
    _assert_only_dest(dest, RATINGS)
    assert server.requests == ["/ml-100k.zip"]
    ensure_file(_dataset(tmp_path, url))
    assert server.requests == ["/ml-100k.zip"]   # present now: no second download


def test_download_false_names_the_fetch_command_and_the_url(server: Server, tmp_path: Path, dest: Path) -> None:
    from fedca.data.sources import ensure_file
    url = _archive_url(server)
    with pytest.raises(FedcaError) as info:
        ensure_file(_dataset(tmp_path, url, "dataset.download=false"))
    message = str(info.value)
    assert "\n" not in message and str(dest) in message and url in message and "fedca data fetch ml100k" in message
    assert server.requests == [] and not dest.exists()


def test_offline_first_use_names_the_url_and_where_to_place_the_file(tmp_path: Path, dest: Path) -> None:
    from fedca.data.sources import ensure_file
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ml-100k.zip"
    with pytest.raises(FedcaError) as info:
        ensure_file(_dataset(tmp_path, url))
    message = str(info.value)
    assert "\n" not in message and url in message
    assert f"place {MEMBER} from the archive at {dest}" in message
    assert not dest.exists()


def _fetch_in_child(url: str, dest: Path, on_terminal: bool) -> str:
    """Run fetch(progress=True) in a child process whose stderr is a terminal or a pipe; its stderr."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios
    script = ("import sys; from pathlib import Path; from fedca.data.download import RemoteSource, fetch; "
              "fetch(RemoteSource(sys.argv[1]), Path(sys.argv[2]), progress=True)")
    command = [sys.executable, "-c", script, url, str(dest)]
    if not on_terminal:
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))   # a new pty is 0 columns wide
    try:
        subprocess.run(command, stdout=follower, stderr=follower, timeout=120, check=True)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:   # EIO: the terminal's other end is closed and everything was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_download_shows_a_byte_progress_bar_on_a_terminal_only(server: Server, tmp_path: Path) -> None:
    body = RATINGS * 4096
    kib, rest = divmod(len(body), 1024)   # whole KiB, so tqdm's unit scale (divisor 1024) shows it exactly
    assert rest == 0
    url = _publish(server, "u.data", body)
    shown = _fetch_in_child(url, tmp_path / "tty" / "u.data", on_terminal=True)
    assert "u.data: 100%" in shown and f"{kib}k/{kib}k" in shown and "B/s" in shown, shown
    assert _fetch_in_child(url, tmp_path / "pipe" / "u.data", on_terminal=False) == ""
    assert (tmp_path / "tty" / "u.data").read_bytes() == body
