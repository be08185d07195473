"""The JSON sampler: a bounded, valid sample of one JSON document, streamed.

See ``JsonPruner`` for the rules. Input and output contract as in ``formats``.
"""

from __future__ import annotations

import codecs
import re
import tempfile
from typing import Any, BinaryIO

from sampler.formats import Sampled, Sink, Source
from sampler.limits import CHUNK, CapReached, ErrorKind, Limits, SampleError

_QUOTE = ord('"')

_E_VALUE, _E_VALUE_OR_CLOSE, _E_KEY, _E_KEY_OR_CLOSE, _E_COLON, _E_COMMA_OR_CLOSE = range(6)
_NONWS = re.compile(rb"[^ \t\r\n]")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_STRING_STOP = re.compile(rb'["\\\x00-\x1f]')
_ESCAPES = frozenset(b'"\\/bfnrt')
_HEX = frozenset(b"0123456789abcdefABCDEF")
_LITERALS = (b"true", b"false", b"null")


class _Frame:
    __slots__ = ("expect", "is_array", "kept", "last_end")

    def __init__(self, is_array: bool, pos: int) -> None:
        self.is_array = is_array
        self.expect = _E_VALUE_OR_CLOSE if is_array else _E_KEY_OR_CLOSE
        self.kept = 0  # items (members) written
        self.last_end = pos  # output position after the last complete written item


class _Enough(Exception):
    """The top-level container has its N items."""


class JsonPruner:
    """A bounded, valid sample of one JSON document, streamed.

    Rules: the top-level array (or object) keeps its first N items (members),
    one per line; every nested array keeps its first N items; nested objects
    keep all their members. Rows reported: the items kept of a top-level
    array; for a top-level object holding arrays (columns, or a ``data``
    array beside scalars), the most items kept by one of those arrays; for
    any other object, its members kept. Strings, numbers and literals are copied byte for
    byte; whitespace between tokens is not kept. Reading stops as soon as the
    top-level container has its N items.

    The parser validates as it goes (grammar, string escapes, control
    characters, UTF-8) and keeps no parsed values, only a stack of small
    frames, so memory is one chunk plus the stack whatever the document holds.
    Nesting past ``Limits.max_depth`` is ``HOSTILE`` (a million ``[``).

    When the byte cap stops it mid-document, the output is cut back to the
    last complete item of the innermost array being written (partial objects
    are dropped whole: half a record would mislead) and every open container
    is closed, so the sample is still valid JSON.

    Not ijson: measured here, its C backend takes 14 s and ~10 GB RSS on one
    64 MiB string, and its pure-Python backend is ~10x slower than the C one
    on ordinary records; neither bounds nesting.
    """

    def __init__(self, src: Source, out: BinaryIO, limits: Limits) -> None:
        self.src = src
        self.out = out
        self.rows = limits.rows
        self.max_depth = limits.max_depth
        self.stack: list[_Frame] = []
        self.skip_from: int | None = None  # stack depth whose current item is being skipped
        self.pos = 0  # bytes written
        self.root_done = False
        self.root_scalar = False
        self.truncated = False
        self.note: str | None = None
        self.rows_out = 0  # items of the top-level container in the sample
        self.array_rows: int | None = None  # most items kept by an array member of a top-level object

    # output
    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if self.skip_from is None:
            self.out.write(data)
            self.pos += len(data)

    # grammar events
    def _value_start(self) -> None:
        if not self.stack:
            if self.root_done:
                raise SampleError(ErrorKind.MALFORMED, "data after the top-level value")
            return
        frame = self.stack[-1]
        if frame.expect not in (_E_VALUE, _E_VALUE_OR_CLOSE):
            raise SampleError(ErrorKind.MALFORMED, "a value where none may stand")
        frame.expect = _E_COMMA_OR_CLOSE
        if not frame.is_array or self.skip_from is not None:
            return
        if frame.kept >= self.rows:
            if len(self.stack) == 1:
                raise _Enough
            self.skip_from = len(self.stack)
            self.truncated = True
            return
        root = len(self.stack) == 1
        if frame.kept:
            self._write(b",\n" if root else b",")
        elif root:
            self._write(b"\n")
        frame.kept += 1

    def _value_end(self) -> None:
        if not self.stack:
            self.root_done = True
            return
        if self.skip_from == len(self.stack):
            self.skip_from = None
        elif self.skip_from is None:
            self.stack[-1].last_end = self.pos

    def _key_start(self) -> None:
        frame = self.stack[-1]
        if frame.expect not in (_E_KEY, _E_KEY_OR_CLOSE):
            raise SampleError(ErrorKind.MALFORMED, "a key where none may stand")
        frame.expect = _E_COLON
        if self.skip_from is not None:
            return
        root = len(self.stack) == 1
        if root and frame.kept >= self.rows:
            raise _Enough
        if frame.kept:
            self._write(b",\n" if root else b",")
        elif root:
            self._write(b"\n")
        frame.kept += 1

    def _open(self, is_array: bool) -> None:
        self._value_start()
        if len(self.stack) >= self.max_depth:
            raise SampleError(ErrorKind.HOSTILE, f"JSON nested deeper than {self.max_depth}")
        self._write(b"[" if is_array else b"{")
        self.stack.append(_Frame(is_array, self.pos))

    def _close(self, is_array: bool) -> None:
        if not self.stack or self.stack[-1].is_array != is_array:
            raise SampleError(ErrorKind.MALFORMED, "unbalanced brackets")
        frame = self.stack[-1]
        allowed = (_E_VALUE_OR_CLOSE, _E_COMMA_OR_CLOSE) if is_array else (_E_KEY_OR_CLOSE, _E_COMMA_OR_CLOSE)
        if frame.expect not in allowed:
            raise SampleError(ErrorKind.MALFORMED, "a container closed too early")
        if len(self.stack) == 1:
            self.rows_out = frame.kept
            if frame.kept:
                self._write(b"\n")
        elif len(self.stack) == 2 and is_array:
            self._array_member(frame.kept)
        self._write(b"]" if is_array else b"}")
        self.stack.pop()
        self._value_end()

    # the tokenizer
    def run(self) -> Sampled:
        try:
            self._tokenize()
        except _Enough:
            self.truncated = True
            self._close_all()
        except CapReached:
            self._cut_back()
        self.out.write(b"\n")
        if self.root_scalar:
            self.rows_out = 1
        elif self.array_rows is not None:
            self.rows_out = self.array_rows
        return Sampled(rows=self.rows_out, truncated=self.truncated, note=self.note)

    def _tokenize(self) -> None:
        buf = bytearray()
        pos = 0
        eof = False
        in_string: tuple[bool, Any] | None = None  # (is_key, utf-8 decoder) while inside a string

        def need_more() -> bool:
            nonlocal buf, pos, eof
            if eof:
                return False
            del buf[:pos]
            pos = 0
            chunk = self.src.read(CHUNK)
            if chunk:
                buf += chunk
            else:
                eof = True
            return bool(chunk)

        while not self.root_done:
            if in_string is not None:
                is_key, decoder = in_string
                m = _STRING_STOP.search(buf, pos)
                if m is None:
                    piece = buf[pos:]
                    self._string_piece(piece, decoder)
                    pos = len(buf)
                    if not need_more():
                        raise SampleError(ErrorKind.MALFORMED, "unterminated string")
                    continue
                stop = m.start()
                self._string_piece(buf[pos:stop], decoder)
                c = buf[stop]
                if c == _QUOTE:
                    self._string_end(decoder)
                    in_string = None
                    pos = stop + 1
                    if not is_key:
                        self._value_end()
                    continue
                if c != ord("\\"):
                    raise SampleError(ErrorKind.MALFORMED, "control character in a string")
                if len(buf) - stop < 6 and not eof:
                    pos = stop  # the escape may go on in the next chunk
                    need_more()
                    continue
                esc = buf[stop + 1] if stop + 1 < len(buf) else -1
                if esc == ord("u"):
                    hexdigits = buf[stop + 2 : stop + 6]
                    if len(hexdigits) < 4 or not all(h in _HEX for h in hexdigits):
                        raise SampleError(ErrorKind.MALFORMED, "bad \\u escape")
                    length = 6
                elif esc in _ESCAPES:
                    length = 2
                else:
                    raise SampleError(ErrorKind.MALFORMED, "bad escape in a string")
                self._write(buf[stop : stop + length])
                pos = stop + length
                continue

            m = _NONWS.search(buf, pos)
            if m is None:
                pos = len(buf)
                if not need_more():
                    break
                continue
            pos = m.start()
            c = buf[pos]
            if c == ord("["):
                self._open(True)
                pos += 1
            elif c == ord("{"):
                self._open(False)
                pos += 1
            elif c == ord("]"):
                self._close(True)
                pos += 1
            elif c == ord("}"):
                self._close(False)
                pos += 1
            elif c == ord(","):
                frame = self._frame("',' outside a container")
                if frame.expect != _E_COMMA_OR_CLOSE:
                    raise SampleError(ErrorKind.MALFORMED, "misplaced ','")
                frame.expect = _E_VALUE if frame.is_array else _E_KEY
                pos += 1
            elif c == ord(":"):
                frame = self._frame("':' outside an object")
                if frame.expect != _E_COLON:
                    raise SampleError(ErrorKind.MALFORMED, "misplaced ':'")
                frame.expect = _E_VALUE
                self._write(b":")
                pos += 1
            elif c == _QUOTE:
                is_key = bool(self.stack) and self.stack[-1].expect in (_E_KEY, _E_KEY_OR_CLOSE)
                if is_key:
                    self._key_start()
                else:
                    self.root_scalar = self.root_scalar or not self.stack
                    self._value_start()
                self._write(b'"')
                in_string = (is_key, codecs.getincrementaldecoder("utf-8")())
                pos += 1
            else:
                token = self._scalar(buf, pos, eof)
                if token is None:
                    need_more()  # at the end, _scalar decides with eof set
                    continue
                self.root_scalar = self.root_scalar or not self.stack
                self._value_start()
                self._write(token)
                pos += len(token)
                self._value_end()
        if not self.root_done:
            raise SampleError(ErrorKind.MALFORMED, "unexpected end of JSON")

    @staticmethod
    def _scalar(buf: bytearray, pos: int, eof: bool) -> bytes | None:
        """The number or literal at ``pos``; None when it may go on past the buffer."""
        m = _NUMBER.match(buf, pos)
        if m is not None and m.end() > pos:
            if m.end() == len(buf) and not eof:
                return None
            return bytes(buf[pos : m.end()])
        head = bytes(buf[pos : pos + 5])
        for lit in _LITERALS:
            if head.startswith(lit):
                return lit
            if not eof and len(head) < len(lit) and lit.startswith(head):
                return None
        raise SampleError(ErrorKind.MALFORMED, f"unexpected byte {buf[pos : pos + 1]!r}")

    def _array_member(self, kept: int) -> None:
        if not self.stack[0].is_array:
            self.array_rows = max(self.array_rows or 0, kept)

    def _frame(self, what: str) -> _Frame:
        if not self.stack:
            raise SampleError(ErrorKind.MALFORMED, what)
        return self.stack[-1]

    def _string_piece(self, piece: bytearray, decoder: Any) -> None:
        if piece:
            try:
                decoder.decode(piece)
            except UnicodeDecodeError as exc:
                raise SampleError(ErrorKind.MALFORMED, "string is not valid UTF-8") from exc
            self._write(piece)

    def _string_end(self, decoder: Any) -> None:
        try:
            decoder.decode(b"", True)
        except UnicodeDecodeError as exc:
            raise SampleError(ErrorKind.MALFORMED, "string is not valid UTF-8") from exc
        self._write(b'"')

    # endings
    def _close_all(self) -> None:
        self.rows_out = self.stack[0].kept
        self.skip_from = None
        self._write(self._closers(len(self.stack) - 1))

    def _closers(self, innermost: int) -> bytes:
        parts = []
        for i in range(innermost, -1, -1):
            frame = self.stack[i]
            if i == 0 and frame.kept:
                parts.append(b"\n")
            parts.append(b"]" if frame.is_array else b"}")
        return b"".join(parts)

    def _cut_back(self) -> None:
        """Close a document the byte cap stopped (see the class docstring)."""
        if not self.stack:
            raise SampleError(ErrorKind.TOO_LARGE, "top-level value larger than the byte cap")
        written = len(self.stack) if self.skip_from is None else self.skip_from
        k = written - 1
        while k > 0 and not self.stack[k].is_array:
            k -= 1
        frame = self.stack[k]
        if len(self.stack) > 1 and self.stack[1].is_array:
            member = self.stack[1]
            cut = k == 1 and member.last_end < self.pos  # its last item is cut off; deeper: kept, cut short
            self._array_member(member.kept - cut)
        if k == 0 and frame.kept and frame.last_end < self.pos:
            frame.kept -= 1  # the last item was cut off
        if k == 0 and frame.kept == 0:
            raise SampleError(ErrorKind.TOO_LARGE, "no complete top-level item within the byte cap")
        self.out.seek(frame.last_end)
        self.out.truncate()
        self.pos = frame.last_end
        self.skip_from = None
        self.truncated = True
        self.note = "byte cap reached"
        self.rows_out = self.stack[0].kept
        self._write(self._closers(k))


def sample_json(src: Source, out: BinaryIO, limits: Limits) -> Sampled:
    """JSON into ``out``, which must be seekable (the cap may cut back)."""
    return JsonPruner(src, out, limits).run()


def sample_json_to(src: Source, write: Sink, limits: Limits) -> Sampled:
    """JSON into a stream that cannot seek (a gzip writer): via a temporary file."""
    with tempfile.TemporaryFile() as tmp:
        result = sample_json(src, tmp, limits)
        tmp.seek(0)
        while True:
            chunk = tmp.read(CHUNK)
            if not chunk:
                break
            write.write(chunk)
    return result
