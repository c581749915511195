"""An execution's captured output: written as it is produced, capped, readable by offset.

Offsets are positions in the stream the job *produced* (what ``on_output`` reports as
``total_bytes``), so they never move: a follower that read up to offset N asks for N next,
whether the job is still running, finished, or had the middle of its output dropped.

The cap keeps the head (the first half) and the tail (roughly the last half) and drops the
middle. On disk, while the job runs:

- ``<log>`` holds the head, written through as it arrives;
- ``<log>.tail.<offset>`` are segment files of the tail (each a quarter of the tail's
  share, named by the stream offset of their first byte); opening a new segment deletes
  the oldest ones so that the segments never hold more than the tail's share, which
  bounds the disk use at about the cap;
- ``<log>.index`` (JSON, written before the first segment) records the head's size.

When the job ends, ``OutputLog.close`` appends the one marker line
(``\\n[jobhost: N bytes of output dropped]\\n``) and the kept segments to ``<log>``, so the
finished log is a plain file: head + marker + tail. The index then records where the tail
starts; without a drop the index is removed and the log is the stream byte for byte.

Reading an offset inside the dropped middle returns just the marker, counting the bytes
this reader skips, and the offset of the first kept byte as the next offset; a reader that
starts at 0 therefore sees exactly the bytes of the finished log file.

stderr: the log is one stream (stdout and stderr in the order they were read), and
``<log>.stderr`` records which spans of it came from stderr: one 16-byte record
(start, end stream offsets, little-endian) appended per stderr read, so stdout pays
nothing and stderr one ``write``. Offsets are stream offsets, so the cap and its
consolidation never touch the side file; ``stderr_spans`` finds a range's spans by
bisection. Order across the two pipes is the order of the reads: lines written to both
within one loop turn may show swapped, as with any capture that keeps them apart.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import struct
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from jobhost.config import Settings
from jobhost.execution.launch import log_path, result_path
from jobhost.redact import OutputMasker

CHUNK = 64 * 1024
MIN_CAP = 2  # one byte of head, one of tail: anything smaller would keep nothing useful


def marker(dropped: int) -> bytes:
    """The line that stands for ``dropped`` bytes removed from the middle."""
    return f"\n[jobhost: {dropped} bytes of output dropped]\n".encode()


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _segment_path(path: str, start: int) -> str:
    return f"{path}.tail.{start}"


def _index_path(path: str) -> str:
    return f"{path}.index"


_SPAN = struct.Struct("<QQ")  # one stderr span: start, end (stream offsets)


def _stderr_path(path: str) -> str:
    return f"{path}.stderr"


def _write_index(path: str, index: dict[str, object]) -> None:
    tmp = f"{_index_path(path)}.tmp"
    with open(tmp, "w", encoding="utf-8") as file:
        json.dump(index, file)
    os.replace(tmp, _index_path(path))


class OutputLog:
    """Writer side: append everything a job prints; disk use stays at about ``max_bytes``.

    Memory is O(1): every ``write`` goes straight to a file descriptor.
    """

    def __init__(
        self,
        path: str,
        max_bytes: int,
        secrets: Sequence[str] = (),
        *,
        resume: bool = False,
        fd: int | None = None,
    ) -> None:
        """Create (truncate) the log at ``path``; with ``resume``, continue the one an
        earlier writer left unfinished (``release``, or a crash): the head, the tail
        segments and the logical size are taken from the files. ``fd``: the log, empty and
        named ``path`` already (``SpareLogs.take``)."""
        max_bytes = max(max_bytes, MIN_CAP)
        # redact: secret values are masked as written, also when split across writes.
        self._masker = OutputMasker(secrets) if secrets else None
        self.path = path
        self.total_bytes = 0  # produced so far: the logical size
        self._head_cap = max_bytes // 2
        self._tail_cap = max_bytes - self._head_cap
        self._segment_cap = max(1, self._tail_cap // 4)
        self._segments: list[tuple[int, int]] = []  # (start offset, size), oldest first
        self._segment_fd: int | None = None
        self._stderr_fd: int | None = None  # the span file, opened at the first stderr read
        self._stderr_masker = OutputMasker(secrets) if secrets else None
        self._closed = False
        if fd is not None:
            self._fd = fd
            return
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if resume else os.O_TRUNC)
        try:
            self._fd = os.open(path, flags, 0o640)
        except FileNotFoundError:  # the folder is created once, not checked on every run
            directory = os.path.dirname(path)
            if not directory:
                raise
            os.makedirs(directory, exist_ok=True)
            self._fd = os.open(path, flags, 0o640)
        if resume:
            self._resume()

    def _resume(self) -> None:
        index = _load_index(self.path)
        if index is not None:
            self._head_cap = index.head_bytes
        head = os.fstat(self._fd).st_size
        if head > self._head_cap or (index is not None and index.complete):
            os.close(self._fd)
            raise OSError(f"The log {self.path} was finished already; it cannot be continued")
        self.total_bytes = head
        starts = sorted(
            int(name.rsplit(".", 1)[1])
            for name in glob.glob(glob.escape(self.path) + ".tail.*")
            if name.rsplit(".", 1)[1].isdigit()
        )
        for start in starts:
            size = os.stat(_segment_path(self.path, start)).st_size
            self._segments.append((start, size))
            self.total_bytes = start + size
        if self._segments:
            self._segment_fd = os.open(
                _segment_path(self.path, self._segments[-1][0]),
                os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC,
            )

    def release(self) -> None:
        """Close the descriptors but leave the log unfinished, for a writer that resumes
        it (``OutputLog(path, max_bytes, resume=True)``); idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._segment_fd is not None:
            os.close(self._segment_fd)
            self._segment_fd = None
        self._close_stderr()
        os.close(self._fd)

    def _close_stderr(self) -> None:
        if self._stderr_fd is not None:
            os.close(self._stderr_fd)
            self._stderr_fd = None

    @property
    def dropped_bytes(self) -> int:
        """Bytes of the middle removed so far."""
        if not self._segments:
            return 0
        return self._segments[0][0] - self._head_cap

    def write(self, data: bytes) -> None:
        """Append ``data``; head bytes go to the log, the rest into the tail segments."""
        if self._masker is not None:  # redact
            data = self._masker.feed(data)
        self._append(data)

    def write_stderr(self, data: bytes) -> None:
        """Append ``data`` read from the job's stderr, and record its span."""
        if self._stderr_masker is not None:  # redact: stderr has its own partial matches
            data = self._stderr_masker.feed(data)
        self._append_stderr(data)

    def _append_stderr(self, data: bytes) -> None:
        if not data:
            return
        start = self.total_bytes
        self._append(data)
        if self._stderr_fd is None:
            self._stderr_fd = os.open(
                _stderr_path(self.path),
                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                0o640,
            )
        os.write(self._stderr_fd, _SPAN.pack(start, self.total_bytes))

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.total_bytes < self._head_cap:
                n = min(len(view), self._head_cap - self.total_bytes)
                _write_all(self._fd, view[:n])
            else:
                if self._segment_fd is None or self._segments[-1][1] >= self._segment_cap:
                    self._open_segment()
                assert self._segment_fd is not None
                start, size = self._segments[-1]
                n = min(len(view), self._segment_cap - size)
                _write_all(self._segment_fd, view[:n])
                self._segments[-1] = (start, size + n)
            self.total_bytes += n
            view = view[n:]

    def _open_segment(self) -> None:
        if not self._segments:
            # Readers must learn the head's size before the first segment can exist.
            _write_index(self.path, {"head_bytes": self._head_cap, "complete": False})
        if self._segment_fd is not None:
            os.close(self._segment_fd)
            self._segment_fd = None
        kept = sum(size for _, size in self._segments)
        while self._segments and kept + self._segment_cap > self._tail_cap:
            start, size = self._segments.pop(0)
            kept -= size
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_segment_path(self.path, start))
        start = self.total_bytes
        self._segment_fd = os.open(
            _segment_path(self.path, start),
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
            0o640,
        )
        self._segments.append((start, 0))

    def close(self) -> None:
        """Finish the log: append the marker (if any) and the kept tail; idempotent."""
        if self._closed:
            return
        if self._masker is not None:  # redact: the end of a stream is never a secret's start
            self._append(self._masker.flush())
        if self._stderr_masker is not None:
            self._append_stderr(self._stderr_masker.flush())
        self._close_stderr()
        self._closed = True
        if self._segment_fd is not None:
            os.close(self._segment_fd)
            self._segment_fd = None
        try:
            if self._segments:
                self._consolidate()
        finally:
            os.close(self._fd)

    def _consolidate(self) -> None:
        dropped = self.dropped_bytes
        tail_start = self._segments[0][0]
        mark = marker(dropped) if dropped else b""
        # Appending is safe for concurrent readers: they only read the log below the
        # head's size until the index says the log is complete.
        _write_all(self._fd, memoryview(mark))
        for start, _size in self._segments:
            with open(_segment_path(self.path, start), "rb") as segment:
                while chunk := segment.read(CHUNK):
                    _write_all(self._fd, memoryview(chunk))
        if dropped:
            _write_index(
                self.path,
                {
                    "head_bytes": self._head_cap,
                    "complete": True,
                    "tail_start": tail_start,
                    "marker_bytes": len(mark),
                },
            )
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_index_path(self.path))
        for start, _size in self._segments:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_segment_path(self.path, start))


class SpareLogs:
    """Log files made ahead of time, off the path of a start.

    Creating a file is the slowest step of a launch (an ext4 folder where many files were
    deleted lately makes each new inode cost most of a millisecond). A spawner thread with
    nothing to do makes a nameless file (``O_TMPFILE``) in the folder of the last log; the
    next start names it (``linkat``, a few microseconds). Nameless files vanish with the
    process, so none is ever left behind.
    """

    def __init__(self, count: int = 2) -> None:
        self._count = count
        self._lock = threading.Lock()
        self._folder: str | None = None  # where the logs go: that of the last one taken
        self._spares: list[int] = []
        self._making = 0
        self._usable = True
        self._fds = -1  # /proc/self/fd: a nameless file is named through its entry there

    def take(self, path: str) -> int | None:
        """An open, empty file named ``path`` now; None when there is no spare for it (or
        ``path`` exists): the caller creates the file."""
        folder = os.path.dirname(path)
        fd = None
        with self._lock:
            if folder == self._folder:
                fd = self._spares.pop() if self._spares else None
            else:
                self._folder = folder  # the next spares are made there
                self._close(self._spares)
                self._spares = []
        if fd is None:
            return None
        try:
            os.link(str(fd), path, src_dir_fd=self._fds, follow_symlinks=True)
        except OSError:
            os.close(fd)
            return None
        return fd

    def make(self) -> None:
        """Make one spare if fewer than ``count`` are there (a blocking call)."""
        with self._lock:
            folder = self._folder
            if (
                not self._usable
                or folder is None
                or len(self._spares) + self._making >= self._count
            ):
                return
            self._making += 1
            if self._fds < 0:
                self._fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fd = None
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR):  # not on this file system
                self._usable = False
        finally:
            with self._lock:
                self._making -= 1
                if fd is not None and folder == self._folder:
                    self._spares.append(fd)
                    fd = None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._close(self._spares)
            self._spares = []
            if self._fds >= 0:
                os.close(self._fds)
                self._fds = -1

    @staticmethod
    def _close(fds: list[int]) -> None:
        for fd in fds:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class _Index:
    head_bytes: int
    complete: bool
    tail_start: int = 0
    marker_bytes: int = 0


class _Moved(Exception):
    """The writer rearranged the files under the reader; read again."""


def _load_index(path: str) -> _Index | None:
    try:
        with open(_index_path(path), encoding="utf-8") as file:
            raw = json.load(file)
    except FileNotFoundError:
        return None
    return _Index(
        head_bytes=int(raw["head_bytes"]),
        complete=bool(raw["complete"]),
        tail_start=int(raw.get("tail_start", 0)),
        marker_bytes=int(raw.get("marker_bytes", 0)),
    )


def _pread(path: str, position: int, limit: int) -> bytes:
    with open(path, "rb") as file:
        return os.pread(file.fileno(), limit, position)


def read_output(path: str, offset: int, limit: int = CHUNK) -> tuple[bytes, int]:
    """Up to ``limit`` bytes of output from stream ``offset``, and the offset to ask next.

    Returns ``(b"", offset)`` when nothing new is there yet (or the log does not exist).
    Inside the dropped middle it returns only the marker line (see the module docstring).
    """
    offset = max(0, offset)
    limit = max(1, limit)
    for _ in range(10):
        index = _load_index(path)
        try:
            return _read(path, index, offset, limit)
        except _Moved:
            continue
    return b"", offset


def _read(path: str, index: _Index | None, offset: int, limit: int) -> tuple[bytes, int]:
    if index is None:
        try:
            data = _pread(path, offset, limit)
        except FileNotFoundError:
            return b"", offset
        return data, offset + len(data)
    head = index.head_bytes
    if offset < head:
        data = _pread(path, offset, min(limit, head - offset))
        return data, offset + len(data)
    if index.complete:
        if offset < index.tail_start:
            return marker(index.tail_start - offset), index.tail_start
        position = head + index.marker_bytes + (offset - index.tail_start)
        data = _pread(path, position, limit)
        return data, offset + len(data)
    return _read_segments(path, index, offset, limit)


def _read_segments(path: str, index: _Index, offset: int, limit: int) -> tuple[bytes, int]:
    starts = sorted(
        int(name.rsplit(".", 1)[1]) for name in glob.glob(glob.escape(path) + ".tail.*")
    )
    if not starts:
        if _load_index(path) != index:
            raise _Moved  # the writer just finished: the log is complete now
        return b"", offset  # the head is full and the first segment is not there yet
    if offset < starts[0]:
        return marker(starts[0] - offset), starts[0]
    for position, start in enumerate(starts):
        following = starts[position + 1] if position + 1 < len(starts) else None
        if following is not None and offset >= following:
            continue
        try:
            data = _pread(_segment_path(path, start), offset - start, limit)
        except FileNotFoundError:
            raise _Moved from None
        if not data and following is not None:
            raise _Moved  # a full segment shorter than expected cannot happen: re-list
        return data, offset + len(data)
    return b"", offset


def stderr_spans(path: str, start: int, end: int) -> list[tuple[int, int]]:
    """The spans of stream range [start, end) that came from stderr, merged, clipped to
    the range (stream offsets; see the module docstring)."""
    if end <= start:
        return []
    try:
        fd = os.open(_stderr_path(path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    try:
        count = os.fstat(fd).st_size // _SPAN.size

        def record(i: int) -> tuple[int, int]:
            a, b = _SPAN.unpack(os.pread(fd, _SPAN.size, i * _SPAN.size))
            return int(a), int(b)

        low, high = 0, count  # the first record that ends after ``start``
        while low < high:
            mid = (low + high) // 2
            if record(mid)[1] <= start:
                low = mid + 1
            else:
                high = mid
        spans: list[tuple[int, int]] = []
        position = low
        while position < count:
            # Read on in blocks: a chatty stderr has many small spans in one range.
            block = os.pread(fd, _SPAN.size * 256, position * _SPAN.size)
            position += len(block) // _SPAN.size
            for a, b in _SPAN.iter_unpack(block[: len(block) - len(block) % _SPAN.size]):
                if a >= end:
                    return spans
                a, b = max(a, start), min(b, end)
                if spans and spans[-1][1] == a:
                    spans[-1] = (spans[-1][0], b)
                elif b > a:
                    spans.append((a, b))
            if not block:
                break
        return spans
    finally:
        os.close(fd)


def text_spans(
    data: bytes, offset: int, spans: Sequence[tuple[int, int]]
) -> tuple[tuple[int, int], ...]:
    """Stream spans inside ``data`` (which starts at ``offset``) as character ranges of
    ``data`` decoded as UTF-8 with replacement, what the API's ``output`` holds."""
    ranges: list[tuple[int, int]] = []
    chars = 0
    done = 0  # bytes of ``data`` counted in ``chars``
    for a, b in spans:
        begin, finish = max(0, a - offset), min(len(data), b - offset)
        if finish <= begin:
            continue
        chars += len(data[done:begin].decode("utf-8", errors="replace"))
        first = chars
        chars += len(data[begin:finish].decode("utf-8", errors="replace"))
        done = finish
        ranges.append((first, chars))
    return tuple(ranges)


# ------------------------------------------------------------------ reading as text
_LOOKAHEAD = 3  # a UTF-8 character is at most 4 bytes: 3 past the limit finish any


@dataclass(frozen=True, slots=True)
class TextRead:
    """Bytes of output from ``offset`` that end on a UTF-8 character boundary.

    ``next_offset`` is where to ask next (stream byte offsets, as ever); ``at_end`` is
    True when the run had ended and nothing was left after ``next_offset``.
    """

    data: bytes
    offset: int
    next_offset: int
    at_end: bool
    stderr: tuple[tuple[int, int], ...] = ()  # stream spans of ``data`` from stderr


def _continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def _sequence_length(lead: int) -> int:
    if lead >= 0xF0:
        return 4
    if lead >= 0xE0:
        return 3
    if lead >= 0xC0:
        return 2
    return 1


def _incomplete_tail(data: bytes) -> int:
    """How many bytes at the end of ``data`` are a character still missing its rest."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if not _continuation(byte):
            return back if byte >= 0xC0 and _sequence_length(byte) > back else 0
    return 0


def _boundary_cut(raw: bytes, limit: int, live: bool) -> bytes:
    """``raw`` (read with lookahead) cut to at most about ``limit`` bytes on a character
    boundary. A character longer than ``limit`` is given whole; while the run is
    ``live``, a character at the very end still missing bytes waits for them."""
    if len(raw) > limit:
        end = limit
        while end > limit - _LOOKAHEAD and end > 0 and _continuation(raw[end]):
            end -= 1
        if _continuation(raw[end]):  # not UTF-8 here: cut where the limit says
            return raw[:limit]
        if end == 0:  # one character longer than the limit: give it whole
            end = limit
            while end < len(raw) and _continuation(raw[end]):
                end += 1
        return raw[:end]
    if live:
        return raw[: len(raw) - _incomplete_tail(raw)]
    return raw


def read_text(path: str, offset: int, limit: int = CHUNK, *, live: bool) -> TextRead:
    """Like ``read_output``, but never cutting a UTF-8 character (see ``TextRead``).

    Blocking file work: call it off the event loop. Output that is not UTF-8 is returned
    byte for byte; a character the cap's dropped middle broke stays broken.
    """
    offset = max(0, offset)
    limit = max(1, limit)
    want = limit + _LOOKAHEAD
    raw, following = read_output(path, offset, want)
    if following - offset != len(raw):  # the dropped middle's marker: as it is
        return TextRead(raw, offset, following, at_end=False)
    broken = False
    if len(raw) < want and _incomplete_tail(raw):
        # The rest may be in the next file (a tail segment): read on across it.
        extra, after = read_output(path, following, _LOOKAHEAD)
        if extra and after - following == len(extra):
            raw, following = raw + extra, after
        elif extra:
            broken = True  # the marker follows: the character was cut by the cap
    data = _boundary_cut(raw, limit, live and not broken)
    end = offset + len(data)
    at_end = False
    if end == following and not live:
        more, _ = read_output(path, end, 1)
        at_end = not more
    return TextRead(data, offset, end, at_end, tuple(stderr_spans(path, offset, end)))


def remove_logs(settings: Settings, execution_ids: Iterable[str]) -> None:
    """Delete pruned runs' logs, result files and capture side files (``<log>.index``,
    tails). Blocking file work: call it off the event loop."""
    for execution_id in execution_ids:
        log = log_path(settings, execution_id)
        for path in (
            log,
            result_path(settings, execution_id),
            *log.parent.glob(f"{log.name}.*"),
        ):
            Path(path).unlink(missing_ok=True)
