"""Samplers for archives: zip, tar (compressed files: ``formats_compressed``).

Same contract as ``formats``: a budgeted source in, a sample out, bounded by
N, the byte cap (decompressed bytes included) and the time limit.

- zip: a zip holding ``LISTING.txt`` (one line per member) and, when the
  first file member declares at most ``Limits.member_bytes``, that member
  under ``first_member/<sanitised name>``. Before zipfile reads the central
  directory, its declared size and entry count are checked against the
  budget and ``Limits.max_entries`` (zipfile keeps every entry in memory).
  Hostile archives are errors: members whose data overlap (the
  non-recursive zip bomb), a member expanding more than ``MAX_RATIO`` times,
  and a first member whose real size or CRC differs from what it declares.
- tar (``.tar``, ``.tar.gz``, ``.tgz``, ``.tar.zst``...): the member listing
  as text, streamed. A plain tar is read by seeking over member data, so a
  listing costs the headers only; a compressed one must be decompressed through,
  so its listing stops at the byte cap (marked). Header offsets must
  increase, so crafted headers cannot loop; entries stop at
  ``Limits.max_entries``.

Listing lines are ``type  mode  size  mtime  name`` separated by tabs, the
name (and a link's target) as a JSON string: a name holding ``../``, a
newline or undecodable bytes stays one unambiguous line.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
import tarfile
import time
import zipfile
from typing import BinaryIO

from sampler.formats import Sampled, Source
from sampler.limits import BoundedFile, CapReached, ErrorKind, GzipStream, Limits, SampleError

MAX_RATIO = 1000  # deflate's own ceiling is ~1032: more than this is a crafted member
RATIO_FLOOR = 1 << 20  # members smaller than this are not judged by ratio
LISTING_NAME = "LISTING.txt"


def quote_name(name: str) -> str:
    """A member name as one JSON string; undecodable bytes as ``\\udcXX``."""
    return json.dumps(name, ensure_ascii=False).encode("utf-8", "backslashreplace").decode("utf-8")


def _when(ts: float) -> str:
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return str(ts)


# --- zip ----------------------------------------------------------------------

_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")


def _central_directory(f: BoundedFile) -> tuple[int, int]:
    """(entries, central directory bytes) as the end records declare them."""
    tail_len = min(f.size, _EOCD.size + 65535)
    f.seek(f.size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _EOCD.size:
        raise SampleError(ErrorKind.MALFORMED, "not a zip file (no end of central directory)")
    _, _, _, _, entries, cd_size, _, _ = _EOCD.unpack_from(tail, at)
    if (entries == 0xFFFF or cd_size == 0xFFFFFFFF) and at >= _ZIP64_LOCATOR.size:
        sig, _, z64_offset, _ = _ZIP64_LOCATOR.unpack_from(tail, at - _ZIP64_LOCATOR.size)
        if sig == b"PK\x06\x07" and 0 <= z64_offset <= f.size - _ZIP64_EOCD.size:
            f.seek(z64_offset)
            rec = f.read(_ZIP64_EOCD.size)
            if len(rec) == _ZIP64_EOCD.size and rec[:4] == b"PK\x06\x06":
                fields = _ZIP64_EOCD.unpack(rec)
                entries, cd_size = fields[7], fields[8]
    return int(entries), int(cd_size)


def _check_layout(infos: list[zipfile.ZipInfo], size: int) -> None:
    """Overlapping member data and absurd ratios: the zip bomb signatures."""
    # A local header is at least 30 bytes: counting no name or extra field can
    # only miss an overlap, never invent one.
    files = sorted((i for i in infos if not i.is_dir()), key=lambda i: i.header_offset)
    for a, b in itertools.pairwise(files):
        end = a.header_offset + 30 + a.compress_size
        start = b.header_offset
        if start < end:
            raise SampleError(
                ErrorKind.HOSTILE,
                f"members {a.filename!r} and {b.filename!r} overlap (zip bomb)",
            )
    for info in infos:
        if info.header_offset + info.compress_size > size:
            raise SampleError(ErrorKind.MALFORMED, f"member {info.filename!r} runs past the file's end")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise SampleError(
                ErrorKind.HOSTILE,
                f"member {info.filename!r} declares {info.file_size} bytes from "
                f"{info.compress_size} (ratio over {MAX_RATIO}: zip bomb)",
            )


def safe_member_name(name: str) -> str:
    """A name that extracts inside the current directory, whatever ``name`` holds."""
    parts = [p for p in re.split(r"[/\\]", name) if p not in ("", ".", "..")]
    cleaned = "/".join(re.sub(r"[\x00-\x1f\x7f:]", "_", p) for p in parts)
    return "first_member/" + (cleaned or "unnamed")


def open_zip(f: BoundedFile, limits: Limits) -> zipfile.ZipFile:
    """A ``ZipFile`` on ``f`` once the central directory and the members' layout passed the checks."""
    entries, cd_size = _central_directory(f)
    if entries > limits.max_entries:
        raise SampleError(
            ErrorKind.TOO_LARGE, f"{entries} members, over the listing limit {limits.max_entries}"
        )
    if cd_size > f.budget.left:
        raise SampleError(ErrorKind.TOO_LARGE, f"central directory of {cd_size} bytes exceeds the byte cap")
    f.seek(0)
    try:
        zf = zipfile.ZipFile(f)  # BoundedFile has the file surface zipfile uses
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        ValueError,
        OSError,
        NotImplementedError,
    ) as exc:
        raise SampleError(ErrorKind.MALFORMED, f"not a readable zip: {exc}") from exc
    try:
        _check_layout(zf.infolist(), f.size)
    except BaseException:
        zf.close()
        raise
    return zf


def sample_zip(f: BoundedFile, out: BinaryIO, limits: Limits) -> Sampled:
    zf = open_zip(f, limits)
    with zf:
        infos = zf.infolist()
        lines = ["# type\tsize\tcompressed\tmtime\tname"]
        for info in infos:
            kind = "d" if info.is_dir() else "f"
            y, mo, d, h, mi, s = info.date_time
            stamp = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"
            lines.append(
                f"{kind}\t{info.file_size}\t{info.compress_size}\t{stamp}\t{quote_name(info.filename)}"
            )
        first = next((i for i in infos if not i.is_dir()), None)
        member: bytes | None = None
        note = None
        if first is None:
            note = "no file member"
        elif first.flag_bits & 0x1:
            note = "first member is encrypted: listing only"
        elif first.file_size > limits.member_bytes:
            note = f"first member declares {first.file_size} bytes: listing only"
        else:
            member = _read_member(zf, first)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr(LISTING_NAME, ("\n".join(lines) + "\n").encode("utf-8"))
        if member is not None and first is not None:
            z.writestr(safe_member_name(first.filename), member)
    return Sampled(rows=len(infos), truncated=False, note=note)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        with zf.open(info) as m:
            data = m.read(info.file_size + 1)
    except zipfile.BadZipFile as exc:  # a bad CRC: the data is not what the header says
        raise SampleError(ErrorKind.HOSTILE, f"first member {info.filename!r}: {exc}") from exc
    except (EOFError, ValueError, OSError, NotImplementedError, RuntimeError) as exc:
        raise SampleError(ErrorKind.MALFORMED, f"first member {info.filename!r}: {exc}") from exc
    if len(data) != info.file_size:
        raise SampleError(
            ErrorKind.HOSTILE,
            f"first member {info.filename!r} declares {info.file_size} bytes, holds {len(data)}",
        )
    return data


# --- tar ----------------------------------------------------------------------

_TAR_TYPES = {
    tarfile.REGTYPE: "f",
    tarfile.AREGTYPE: "f",
    tarfile.DIRTYPE: "d",
    tarfile.SYMTYPE: "l",
    tarfile.LNKTYPE: "h",
    tarfile.CHRTYPE: "c",
    tarfile.BLKTYPE: "b",
    tarfile.FIFOTYPE: "p",
    tarfile.CONTTYPE: "f",
}


def sample_tar(
    f: BoundedFile, out: BinaryIO, limits: Limits, *, compressed: bool, stream: Source | None = None
) -> Sampled:
    """The listing; ``compressed``: read through ``stream`` (default: gzip), not seekable."""
    out.write(b"# type\tmode\tsize\tmtime\tname\n")
    count = 0
    note = None
    last_offset = -1
    try:
        # plain: seekable, tarfile seeks over member data; gzip: streamed through
        fileobj = (stream or GzipStream(f)) if compressed else f
        with tarfile.open(fileobj=fileobj, mode="r|" if compressed else "r:") as tf:  # type: ignore[call-overload]
            while True:
                info = tf.next()
                if info is None:
                    break
                if info.offset <= last_offset:
                    raise SampleError(ErrorKind.HOSTILE, "tar headers loop back")
                last_offset = info.offset
                if count >= limits.max_entries:
                    note = f"listing stops at {limits.max_entries} entries"
                    break
                out.write(_tar_line(info).encode("utf-8"))
                count += 1
    except CapReached:
        if count == 0:
            raise
        note = f"listing stops at the byte cap ({limits.max_bytes} bytes)"
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise SampleError(ErrorKind.MALFORMED, f"not a readable tar: {exc}") from exc
    if note:
        out.write(f"# {note}\n".encode())
    return Sampled(rows=count, truncated=note is not None, note=note)


def _tar_line(info: tarfile.TarInfo) -> str:
    kind = _TAR_TYPES.get(info.type, "?")
    line = f"{kind}\t{info.mode:04o}\t{info.size}\t{_when(info.mtime)}\t{quote_name(info.name)}"
    if info.issym() or info.islnk():
        line += f" -> {quote_name(info.linkname)}"
    return line + "\n"
