"""The Avro sampler: the first N records of an object container file, same schema, same codec.

Input: a ``BoundedFile``. Output: an Avro object container file with the
source's metadata map byte for byte (``avro.schema``, ``avro.codec`` and any
other key), its sync marker, and one block holding the first N records'
bytes exactly as the source encodes them, compressed with the source's codec.

The container framing (header, blocks, sync markers) is parsed here, not by
``fastavro.reader``, because the bounds must come before the bytes: a block's
declared size is checked against the file and the byte cap before it is read,
and its decompression is asked for at most the bytes the cap still allows
(fastavro would read and inflate a whole block, however large). fastavro
decodes records one by one (``schemaless_reader``) only to find where each
ends, so no value is re-encoded.

Hostile files: a block that runs past the end, a bad sync marker, a
truncated record, an unknown codec are ``MALFORMED``; a block (compressed or
not) over the cap with no record kept yet is ``TOO_LARGE``, with some kept the
sample stops there (truncated); a schema whose arrays hold items that take
no bytes (``null``, empty records) is ``HOSTILE``: a block count of 10^12
such items would loop without reading.

Codecs: ``null``, ``deflate``, ``bzip2``, ``xz`` (stdlib), ``snappy`` and
``zstandard`` (pyarrow's codecs), as the Avro specification names them.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from typing import Any, BinaryIO

import fastavro
import orjson
from fastavro.schema import SchemaParseException

from sampler.formats import Sampled
from sampler.limits import BoundedFile, CapReached, ErrorKind, Limits, SampleError

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
_READ_AHEAD = 1 << 16


class _Framing:
    """Sequential reads of the container through the budget, a small buffer ahead."""

    def __init__(self, f: BoundedFile) -> None:
        self.f = f
        self.buf = b""
        self.pos = 0  # file offset of buf[0]

    def left_in_file(self) -> int:
        return self.f.size - self.pos

    def exact(self, n: int, what: str) -> bytes:
        if n > self.left_in_file():
            raise SampleError(ErrorKind.MALFORMED, f"{what} of {n} bytes runs past the end of the file")
        if n > len(self.buf):
            self.f.seek(self.pos + len(self.buf))
            ahead = min(_READ_AHEAD, self.left_in_file() - len(self.buf), self.f.budget.left)
            more = self.f.read(max(n - len(self.buf), ahead))  # strict: past the cap raises
            self.buf += more
            if len(self.buf) < n:
                raise SampleError(ErrorKind.MALFORMED, f"{what}: file ends early")
        data, self.buf = self.buf[:n], self.buf[n:]
        self.pos += n
        return data

    def at_end(self) -> bool:
        return self.left_in_file() == 0

    def long(self, what: str) -> int:
        shift = result = 0
        for _ in range(10):
            b = self.exact(1, what)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return (result >> 1) ^ -(result & 1)
            shift += 7
        raise SampleError(ErrorKind.MALFORMED, f"{what}: varint longer than 10 bytes")

    def sized(self, what: str) -> bytes:
        """A length-prefixed field, checked against the file and the cap before it is read."""
        n = self.long(what)
        if n < 0:
            raise SampleError(ErrorKind.MALFORMED, f"{what}: negative length {n}")
        if n > self.left_in_file():
            raise SampleError(ErrorKind.MALFORMED, f"{what} of {n} bytes runs past the end of the file")
        if n > self.f.budget.left + len(self.buf):
            raise SampleError(ErrorKind.TOO_LARGE, f"{what} of {n} bytes exceeds the byte cap")
        return self.exact(n, what)


def _encode_long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _header(r: _Framing) -> tuple[list[tuple[bytes, bytes]], bytes]:
    if r.exact(4, "magic") != MAGIC:
        raise SampleError(ErrorKind.MALFORMED, "not an Avro object container file (bad magic)")
    meta: list[tuple[bytes, bytes]] = []
    while True:
        count = r.long("metadata block count")
        if count == 0:
            break
        if count < 0:
            r.long("metadata block size")
            count = -count
        for _ in range(count):
            key = r.sized("metadata key")
            value = r.sized("metadata value")
            meta.append((key, value))
    return meta, r.exact(SYNC_SIZE, "sync marker")


def _zero_size(schema: Any, named: dict[str, Any], seen: frozenset[str] = frozenset()) -> bool:
    """Whether a value of ``schema`` can be encoded in no bytes at all."""
    if isinstance(schema, str):
        if schema in named and schema not in seen:
            return _zero_size(named[schema], named, seen | {schema})
        return schema == "null"
    if isinstance(schema, dict):
        t = schema.get("type")
        if t in ("record", "error"):
            name = str(schema.get("name"))
            return name not in seen and all(
                _zero_size(fld.get("type"), named, seen | {name}) for fld in schema.get("fields", [])
            )
        if t == "fixed":
            return schema.get("size") == 0
        if isinstance(t, (str, dict, list)) and t not in ("array", "map", "enum"):
            return _zero_size(t, named, seen)
    return False  # unions, arrays, maps and enums write at least one byte


def _check_arrays(schema: Any, named: dict[str, Any]) -> None:
    """``HOSTILE`` when an array's items take no bytes; also collects named types into ``named``."""
    stack = [schema]
    while stack:
        s = stack.pop()
        if isinstance(s, list):
            stack.extend(s)
        elif isinstance(s, dict):
            t = s.get("type")
            if t in ("record", "error", "enum", "fixed") and "name" in s:
                named[str(s["name"])] = s
                if "namespace" in s:
                    named[f"{s['namespace']}.{s['name']}"] = s
            if t in ("record", "error"):
                stack.extend(fld.get("type") for fld in s.get("fields", []))
            elif t == "array":
                stack.append(s.get("items"))
            elif t == "map":
                stack.append(s.get("values"))
            elif isinstance(t, (dict, list)):
                stack.append(t)
    stack = [schema]
    while stack:
        s = stack.pop()
        if isinstance(s, list):
            stack.extend(s)
        elif isinstance(s, dict):
            t = s.get("type")
            if t == "array" and _zero_size(s.get("items"), named):
                raise SampleError(
                    ErrorKind.HOSTILE, "an array of items that take no bytes (a count could loop)"
                )
            if t in ("record", "error"):
                stack.extend(fld.get("type") for fld in s.get("fields", []))
            elif t == "array":
                stack.append(s.get("items"))
            elif t == "map":
                stack.append(s.get("values"))
            elif isinstance(t, (dict, list)):
                stack.append(t)


def _inflate(codec: str, data: bytes, cap: int) -> bytes:
    """A block's bytes decompressed, at most ``cap`` (more raises ``CapReached``-like TOO_LARGE)."""
    try:
        if codec == "null":
            return data
        if codec == "deflate":
            d = zlib.decompressobj(-15)
            out = d.decompress(data, cap + 1)
        elif codec == "bzip2":
            out = bz2.BZ2Decompressor().decompress(data, cap + 1)
        elif codec == "xz":
            out = lzma.LZMADecompressor().decompress(data, cap + 1)
        elif codec == "snappy":
            out = _snappy_decompress(data, cap)
        elif codec == "zstandard":
            import pyarrow as pa

            out = pa.CompressedInputStream(pa.BufferReader(data), "zstd").read(cap + 1)
        else:
            raise SampleError(ErrorKind.MALFORMED, f"unsupported Avro codec {codec!r}")
    except SampleError:
        raise
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as exc:
        raise SampleError(ErrorKind.MALFORMED, f"block not valid {codec}: {exc}") from exc
    if len(out) > cap:
        raise SampleError(ErrorKind.TOO_LARGE, f"a block decompresses past the byte cap ({codec})")
    return out


def _snappy_decompress(data: bytes, cap: int) -> bytes:
    import pyarrow as pa

    if len(data) < 5:
        raise SampleError(ErrorKind.MALFORMED, "snappy block too short")
    body, crc = data[:-4], int.from_bytes(data[-4:], "big")
    size = shift = 0
    for i, b in enumerate(body[:5]):  # snappy's preamble: the uncompressed length, a varint
        size |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
        if i == 4:
            raise SampleError(ErrorKind.MALFORMED, "snappy block: bad length")
    if size > cap:
        raise SampleError(ErrorKind.TOO_LARGE, f"a block decompresses past the byte cap ({size} bytes)")
    out: bytes = pa.decompress(body, decompressed_size=size, codec="snappy", asbytes=True)
    if zlib.crc32(out) != crc:
        raise SampleError(ErrorKind.MALFORMED, "snappy block: bad CRC")
    return out


def _deflate(codec: str, data: bytes) -> bytes:
    if codec == "null":
        return data
    if codec == "deflate":
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return c.compress(data) + c.flush()
    if codec == "bzip2":
        return bz2.compress(data)
    if codec == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ)
    import pyarrow as pa

    if codec == "snappy":
        out: bytes = pa.compress(data, codec="snappy", asbytes=True)
        return out + zlib.crc32(data).to_bytes(4, "big")
    out = pa.compress(data, codec="zstd", asbytes=True)
    return out


def sample_avro(f: BoundedFile, out: BinaryIO, limits: Limits) -> Sampled:
    r = _Framing(f)
    meta, sync = _header(r)
    meta_map = dict(meta)
    codec = meta_map.get(b"avro.codec", b"null").decode("utf-8", "replace") or "null"
    try:
        raw_schema = orjson.loads(meta_map[b"avro.schema"])
        named: dict[str, Any] = {}
        _check_arrays(raw_schema, named)
        schema = fastavro.parse_schema(raw_schema)
    except KeyError as exc:
        raise SampleError(ErrorKind.MALFORMED, "no avro.schema in the header") from exc
    except SampleError:
        raise
    except (orjson.JSONDecodeError, SchemaParseException, ValueError, TypeError, AttributeError) as exc:
        raise SampleError(ErrorKind.MALFORMED, f"bad Avro schema: {exc}") from exc
    records: list[bytes] = []
    truncated = more = False
    while len(records) < limits.rows and not r.at_end():
        try:
            count = r.long("block count")
            if count < 0:
                raise SampleError(ErrorKind.MALFORMED, f"negative block count {count}")
            data = r.sized("block")
            if r.exact(SYNC_SIZE, "sync marker") != sync:
                raise SampleError(ErrorKind.MALFORMED, "sync marker does not match the header's")
            block = _inflate(codec, data, f.budget.left)
            f.budget.spend(len(block) if codec != "null" else 0)
        except (CapReached, SampleError) as exc:
            if exc.kind is not ErrorKind.TOO_LARGE or not records:
                raise
            truncated = True
            break
        bio = io.BytesIO(block)
        for _ in range(count):
            if len(records) == limits.rows:
                more = True
                break
            start = bio.tell()
            try:
                fastavro.schemaless_reader(bio, schema, None)
            except (
                EOFError,
                ValueError,
                TypeError,
                IndexError,
                KeyError,
                UnicodeDecodeError,
                OverflowError,
            ) as exc:
                raise SampleError(ErrorKind.MALFORMED, f"record {len(records) + 1}: {exc}") from exc
            records.append(block[start : bio.tell()])
    body = b"".join(records)
    out.write(MAGIC)
    if meta:
        out.write(_encode_long(len(meta)))
        for key, value in meta:
            out.write(_encode_long(len(key)) + key + _encode_long(len(value)) + value)
    out.write(_encode_long(0) + sync)
    if records:
        block = _deflate(codec, body)
        out.write(_encode_long(len(records)) + _encode_long(len(block)) + block + sync)
    note = "byte cap reached" if truncated else "first records" if more or not r.at_end() else None
    return Sampled(rows=len(records), truncated=truncated, note=note)
