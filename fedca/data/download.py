"""Fetch dataset files over HTTP(S), verify them, and place them atomically.

``fetch`` downloads a file (or a zip archive holding it) into a temporary file next to
its destination, checks length and checksums, extracts the wanted member if there is
one, and only then moves the result into place with ``os.replace``. Whatever fails, no
temporary or partial file is left behind and an existing destination is not touched.
Every failure is a one-line :class:`~fedca.errors.FedcaError` that says what went wrong
and how to place the file by hand on a machine without network access.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import secrets
import shutil
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

from tqdm import tqdm

from fedca.errors import FedcaError

CHUNK_SIZE = 1 << 20
USER_AGENT = "fedca-download"
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class RemoteSource:
    """Where a dataset file comes from."""

    url: str
    member: str | None = None
    sha256: str | None = None
    archive_md5: str | None = None
    size: int | None = None


def sha256_of(path: Path) -> str:
    """Return the hex sha256 digest of the file at ``path``, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(source: RemoteSource, dest: Path, *, timeout: float = 60.0, progress: bool = False) -> Path:
    """Download ``source`` and place the file at ``dest`` atomically; return ``dest``.

    An existing ``dest`` is kept without network access when ``source.sha256`` is unknown
    or matches it; otherwise it is downloaded again. ``timeout`` (seconds) applies to
    connecting and to each read; ``progress`` shows a tqdm byte bar on stderr when it is a
    terminal (tqdm's own check), none otherwise.
    """
    dest = Path(dest)
    if _is_present(dest, source.sha256):
        return dest
    _check_scheme(source, dest)
    _make_parent(source, dest)
    with _temp_path(dest, ".download") as download, _temp_path(dest, ".extract") as extracted:
        _download(source, dest, download, timeout=timeout, progress=progress)
        final = download if source.member is None else _extract(source, dest, download, extracted)
        _verify_sha256(source, dest, final)
        _install(source, dest, final)
    return dest


def _is_present(dest: Path, sha256: str | None) -> bool:
    """Whether ``dest`` is a file that can be trusted as it is."""
    return dest.is_file() and (sha256 is None or _same_hex(sha256_of(dest), sha256))


def _same_hex(actual: str, expected: str) -> bool:
    """Compare two hex digests, ignoring case and surrounding whitespace."""
    return actual.strip().lower() == expected.strip().lower()


def _hint(source: RemoteSource, dest: Path) -> str:
    """The manual-placement advice that ends every error message."""
    if source.member is not None:
        name = f"{source.member} from the archive"
    else:
        name = PurePosixPath(urlparse(source.url).path).name or dest.name
    hint = f"if this machine is offline, download it by hand and place {name} at {dest}"
    if source.sha256 is not None:
        hint += f" (expected sha256 {source.sha256})"
    return hint


def _fail(source: RemoteSource, dest: Path, problem: str) -> FedcaError:
    """Build the error for ``problem``, followed by the manual-placement hint."""
    return FedcaError(f"{problem}; {_hint(source, dest)}")


def _check_scheme(source: RemoteSource, dest: Path) -> None:
    """Refuse URLs that are not http or https."""
    scheme = urlparse(source.url).scheme.lower()
    if scheme not in ("http", "https"):
        raise _fail(source, dest, f"cannot download {source.url!r}: only http and https URLs are supported")


def _make_parent(source: RemoteSource, dest: Path) -> None:
    """Create the destination's directory."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _fail(source, dest, f"cannot create directory {dest.parent} for {source.url}: {err}") from err


@contextmanager
def _temp_path(dest: Path, suffix: str) -> Iterator[Path]:
    """Yield an unused hidden path next to ``dest``; remove whatever is there on exit."""
    path = dest.parent / f".{dest.name}.{secrets.token_hex(6)}{suffix}"
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _download(source: RemoteSource, dest: Path, target: Path, *, timeout: float, progress: bool) -> None:
    """Stream ``source.url`` into ``target`` and check its length, size and md5."""
    request = Request(source.url, headers={"User-Agent": USER_AGENT})
    try:
        with urlopen(request, timeout=timeout) as response, open(target, "xb") as out:
            expected = _content_length(response)
            received, md5 = _stream(response, out, expected, desc=dest.name, progress=progress)
    except HTTPError as err:
        err.close()
        raise _fail(source, dest, f"download of {source.url} failed: HTTP {err.code} {err.reason}") from err
    except http.client.IncompleteRead as err:
        raise _truncated(source, dest, "the connection closed mid-transfer") from err
    except (URLError, OSError, http.client.HTTPException) as err:
        raise _fail(source, dest, f"download of {source.url} failed: {_reason(err, timeout)}") from err
    _verify_download(source, dest, received, expected, md5)


def _content_length(response: http.client.HTTPResponse) -> int | None:
    """The Content-Length the server announced, or None if absent or malformed."""
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _stream(
    response: BinaryIO, out: BinaryIO, total: int | None, *, desc: str, progress: bool
) -> tuple[int, str]:
    """Copy ``response`` to ``out`` in chunks; return the byte count and md5 hex digest."""
    md5 = hashlib.md5(usedforsecurity=False)
    received = 0
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
               disable=None if progress else True)
    with bar:
        for chunk in iter(lambda: response.read(CHUNK_SIZE), b""):
            out.write(chunk)
            md5.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received, md5.hexdigest()


def _reason(err: Exception, timeout: float) -> str:
    """A short description of a network failure."""
    cause = err.reason if isinstance(err, URLError) else err
    if isinstance(cause, TimeoutError):
        return f"timed out after {timeout:g} s"
    return str(cause) or type(cause).__name__


def _truncated(source: RemoteSource, dest: Path, detail: str) -> FedcaError:
    """The error for a download that ended early; ``detail`` says how."""
    problem = f"download of {source.url} was truncated: {detail}; the partial download was discarded"
    return _fail(source, dest, problem)


def _verify_download(
    source: RemoteSource, dest: Path, received: int, expected: int | None, md5: str
) -> None:
    """Check the downloaded bytes against Content-Length, ``size`` and ``archive_md5``."""
    if expected is not None and received < expected:
        raise _truncated(source, dest, f"got {received} of {expected} bytes")
    if source.size is not None and received != source.size:
        problem = (
            f"size mismatch for {source.url}: expected {source.size} bytes, got {received}; "
            "the download was discarded"
        )
        raise _fail(source, dest, problem)
    if source.archive_md5 is not None and not _same_hex(md5, source.archive_md5):
        problem = (
            f"checksum mismatch for {source.url}: expected md5 {source.archive_md5}, got {md5}; "
            "the download was discarded"
        )
        raise _fail(source, dest, problem)


def _extract(source: RemoteSource, dest: Path, archive: Path, target: Path) -> Path:
    """Copy ``source.member`` out of the zip at ``archive`` into ``target``; return ``target``."""
    assert source.member is not None
    try:
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            if source.member not in names:
                raise _missing_member(source, dest, names)
            with zf.open(source.member) as src, open(target, "xb") as out:
                shutil.copyfileobj(src, out, CHUNK_SIZE)
    except _ZIP_ERRORS as err:
        problem = (
            f"download of {source.url} is not a readable zip archive ({err}); "
            "it may be truncated or corrupt and was discarded"
        )
        raise _fail(source, dest, problem) from err
    except OSError as err:
        raise _fail(source, dest, f"cannot extract {source.member} from {source.url}: {err}") from err
    return target


def _missing_member(source: RemoteSource, dest: Path, names: list[str]) -> FedcaError:
    """The error for an archive that lacks the wanted member, naming a few it does hold."""
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    problem = f"{source.member} is not in the archive {source.url} (it holds: {shown or 'nothing'})"
    return _fail(source, dest, problem)


def _verify_sha256(source: RemoteSource, dest: Path, path: Path) -> None:
    """Check the final file against ``source.sha256`` when it is known."""
    if source.sha256 is None:
        return
    actual = sha256_of(path)
    if not _same_hex(actual, source.sha256):
        problem = (
            f"checksum mismatch for {source.url}: expected sha256 {source.sha256}, got {actual}; "
            "the download was discarded"
        )
        raise _fail(source, dest, problem)


def _install(source: RemoteSource, dest: Path, path: Path) -> None:
    """Atomically move the verified file at ``path`` to ``dest``."""
    try:
        os.replace(path, dest)
    except OSError as err:
        raise _fail(source, dest, f"cannot move the download of {source.url} to {dest}: {err}") from err
