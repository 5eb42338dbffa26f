"""A numpy ``.npz`` archive read as untrusted input: sizes are checked before anything is read.

``np.load`` trusts the file: a compressed member is inflated whatever its size, and an array
header declaring 4 TB makes numpy allocate 4 TB before it reads a byte. :class:`SafeNpz` opens
the archive itself and refuses, before reading any member:

* a central directory with more entries or bytes than the caller allows (read from the end
  record, before :mod:`zipfile` parses the directory);
* duplicate names, names the caller does not know, compressed or encrypted members, members
  whose declared sizes disagree, and members that together declare more than ``limit`` bytes
  or more than the file holds.

:meth:`SafeNpz.header` then reads one member's ``.npy`` header only (at most
:data:`NPY_HEADER_MAX` bytes) and checks that the shape and dtype it declares account exactly for
the member's declared size; :meth:`SafeNpz.read` reads exactly that many bytes (zipfile checks the
CRC) into an array without a copy. Every problem is an :class:`ArchiveError` (a phrase saying
what is wrong) or a :class:`TooBig`.
"""

from __future__ import annotations

import math
import struct
import zipfile
from collections.abc import Collection
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy

#: the most bytes an ``.npy`` header may take (numpy's own default)
NPY_HEADER_MAX = 10_000
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_EOCD_SIZE = 22


class ArchiveError(Exception):
    """The archive is damaged or holds something it should not; ``str()`` says what, as a phrase."""


class TooBig(ArchiveError):
    """The archive declares more bytes than allowed: ``size`` (of ``what``) against ``limit``."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} declares {format_bytes(size)}, more than the {format_bytes(limit)} allowed")
        self.what, self.size, self.limit = what, size, limit


def format_bytes(n: int) -> str:
    """``n`` bytes in words: ``512 bytes``, ``3.2 MiB``, ``4.0 GiB``, ``4.0 TiB``."""
    if n < 1024:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"


@dataclass(frozen=True)
class Member:
    """One member's ``.npy`` header: ``key`` (the name without ``.npy``), dtype, shape, the
    header's length in bytes and the array's bytes (the two add up to the declared size)."""

    key: str
    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int
    nbytes: int


def _directory_size(fh: BinaryIO, size: int) -> tuple[int, int]:
    """(entries, bytes) of the archive's central directory, from its end record (zip64 too)."""
    tail_len = min(size, _EOCD_SIZE + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < _EOCD_SIZE:
        raise ArchiveError("it is not a zip archive")
    _, _, _, _, entries, cd_size, cd_offset, _ = struct.unpack("<4s4H2LH", tail[at : at + _EOCD_SIZE])
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        locator_at = size - tail_len + at - 20
        if locator_at < 0:
            raise ArchiveError("its zip64 end record is missing")
        fh.seek(locator_at)
        locator = fh.read(20)
        if locator[:4] != _EOCD64_LOCATOR:
            raise ArchiveError("its zip64 end record is missing")
        (record_at,) = struct.unpack("<Q", locator[8:16])
        if record_at > size - 56:
            raise ArchiveError("its zip64 end record is damaged")
        fh.seek(record_at)
        record = fh.read(56)
        if len(record) < 56 or record[:4] != _EOCD64:
            raise ArchiveError("its zip64 end record is damaged")
        entries, cd_size = struct.unpack("<QQ", record[32:48])
    return entries, cd_size


class SafeNpz:
    """An open ``.npz`` whose directory passed the checks above; use as a context manager.

    Parameters
    ----------
    fh : the archive, opened for binary reading (the caller closes it)
    size : its size in bytes
    known : the keys (member names without ``.npy``) the archive may hold
    limit : the most bytes all members together may declare
    """

    def __init__(self, fh: BinaryIO, size: int, known: Collection[str], limit: int) -> None:
        self.limit = limit
        entries, cd_bytes = _directory_size(fh, size)
        # a member's directory entry is 46 bytes plus its name (and zip64 extras: 32)
        if entries > len(known):
            raise ArchiveError(f"it has {entries} members, more than the {len(known)} it may have")
        if cd_bytes > len(known) * (46 + 32 + max(map(len, known), default=0) + len(".npy")):
            raise ArchiveError(f"its directory takes {format_bytes(cd_bytes)}, far more than its members need")
        fh.seek(0)
        self._zip = zipfile.ZipFile(fh)
        self.members = self._check(self._zip.infolist(), size, known)

    def __enter__(self) -> SafeNpz:
        return self

    def __exit__(self, *exc) -> None:
        self._zip.close()

    def _check(self, infos: list[zipfile.ZipInfo], size: int, known: Collection[str]) -> dict[str, zipfile.ZipInfo]:
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.filename
            key = name[: -len(".npy")] if name.endswith(".npy") else ""
            if key not in known:
                raise ArchiveError(f"it holds a member '{name[:80]}' that does not belong there")
            if key in members:
                raise ArchiveError(f"it holds two members named '{name}'")
            if info.compress_type != zipfile.ZIP_STORED:
                # a compressed member can inflate to any size: a session is written uncompressed
                raise ArchiveError(f"its member '{name}' is compressed, which a session never is")
            if info.flag_bits & 0x1:
                raise ArchiveError(f"its member '{name}' is encrypted")
            if info.file_size != info.compress_size:
                raise ArchiveError(f"its member '{name}' declares two different sizes")
            members[key] = info
        total = sum(info.file_size for info in members.values())
        if total > self.limit:
            raise TooBig("it", total, self.limit)
        if total > size:
            raise ArchiveError(f"its members declare {format_bytes(total)} but the file holds {format_bytes(size)}")
        return members

    def header(self, key: str) -> Member:
        """Read member ``key``'s ``.npy`` header (nothing else) and check it against the
        member's declared size; object arrays and Fortran order are refused."""
        info = self.members[key]
        name = info.filename
        try:
            with self._zip.open(info) as fp:
                version = npy.read_magic(fp)
                if version == (1, 0):
                    shape, fortran, dtype = npy.read_array_header_1_0(fp, max_header_size=NPY_HEADER_MAX)
                elif version == (2, 0):
                    shape, fortran, dtype = npy.read_array_header_2_0(fp, max_header_size=NPY_HEADER_MAX)
                else:
                    raise ArchiveError(f"its member '{name}' is in an unknown array format {version}")
                offset = fp.tell()
        except zipfile.BadZipFile as exc:  # a small member is read whole, its checksum checked here
            raise _damaged(name, exc) from None
        if dtype.hasobject:
            raise ArchiveError(f"its member '{name}' holds Python objects")
        if fortran or any(n < 0 for n in shape):
            raise ArchiveError(f"its member '{name}' has an unusual array layout")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.limit:
            raise TooBig(f"its member '{name}'", nbytes, self.limit)
        if offset + nbytes != info.file_size:
            raise ArchiveError(f"its member '{name}' declares a {'×'.join(map(str, shape)) or 'single'} {dtype} "
                               f"array ({format_bytes(nbytes)}) but holds {format_bytes(info.file_size - offset)}")
        return Member(key, info, dtype, tuple(shape), offset, nbytes)

    def open(self, member: Member):
        """A binary stream of the member's array bytes (after its header), read in pieces; the CRC
        is checked when the stream reaches the member's end."""
        fp = self._zip.open(member.info)
        fp.read(member.offset)
        return fp

    def read(self, member: Member) -> np.ndarray:
        """The member's array (read-only, over the bytes read: no copy); the CRC is checked."""
        try:
            with self._zip.open(member.info) as fp:
                # one read of the whole member: zipfile checks the CRC when it reaches the end
                data = fp.read(member.offset + member.nbytes)
                if len(data) != member.offset + member.nbytes or fp.read(1):
                    raise ArchiveError(f"its member '{member.info.filename}' is truncated")
        except zipfile.BadZipFile as exc:
            raise _damaged(member.info.filename, exc) from None
        return np.frombuffer(data, dtype=member.dtype, count=math.prod(member.shape),
                             offset=member.offset).reshape(member.shape)


def _damaged(name: str, exc: zipfile.BadZipFile) -> Exception:
    """The error for a member zipfile could not read: a checksum that does not match is an
    :class:`ArchiveError`; anything else stays what zipfile said."""
    if "CRC" not in str(exc):
        return exc
    return ArchiveError(f"its member '{name}' is damaged (its checksum does not match)")
