"""OutputLog and read_output: write-through capture, the head/tail cap, reads by offset."""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path

from jobhost.execution.output import (
    OutputLog,
    marker,
    read_output,
    read_text,
    stderr_spans,
    text_spans,
)


def stream(size: int) -> bytes:
    """A deterministic byte stream where every position is distinguishable."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(str(counter).encode()).digest()
        counter += 1
    return bytes(out[:size])


def read_all(path: str, offset: int = 0, limit: int = 100) -> tuple[bytes, int]:
    data = bytearray()
    while True:
        chunk, offset = read_output(path, offset, limit)
        if not chunk:
            return bytes(data), offset
        data += chunk


def disk_bytes(path: str) -> int:
    return sum(os.path.getsize(name) for name in glob.glob(glob.escape(path) + "*"))


def test_output_under_the_cap_is_stored_byte_for_byte(tmp_path: Path) -> None:
    path = str(tmp_path / "logs" / "run.log")
    data = stream(3000)
    log = OutputLog(path, max_bytes=4000)
    for start in range(0, len(data), 700):
        log.write(data[start : start + 700])
    assert log.total_bytes == 3000
    log.close()

    assert Path(path).read_bytes() == data
    assert glob.glob(path + ".*") == []  # no index, no segments left behind
    assert read_all(path) == (data, 3000)
    assert read_output(path, 2990, 100) == (data[2990:], 3000)


def test_output_filling_the_head_but_not_the_cap_is_not_marked(tmp_path: Path) -> None:
    path = str(tmp_path / "run.log")
    data = stream(900)
    log = OutputLog(path, max_bytes=1000)
    log.write(data)
    log.close()

    assert Path(path).read_bytes() == data
    assert glob.glob(path + ".*") == []


def test_output_over_the_cap_keeps_head_and_tail_with_one_marker(tmp_path: Path) -> None:
    path = str(tmp_path / "run.log")
    data = stream(10_000)
    log = OutputLog(path, max_bytes=1000)
    for start in range(0, len(data), 97):
        log.write(data[start : start + 97])
        assert disk_bytes(path) <= 1000 + 100  # bounded while running (index file included)
    log.close()

    stored = Path(path).read_bytes()
    head, rest = stored[:500], stored[500:]
    assert head == data[:500]
    assert rest.startswith(b"\n[jobhost: ")
    dropped = int(rest.split(b"[jobhost: ", 1)[1].split(b" ", 1)[0])
    mark = marker(dropped)
    assert rest.startswith(mark)
    assert mark == f"\n[jobhost: {dropped} bytes of output dropped]\n".encode()
    tail = rest[len(mark) :]
    assert tail == data[-len(tail) :]
    assert 375 <= len(tail) <= 500
    assert 500 + dropped + len(tail) == len(data)
    assert len(stored) <= 1000 + len(mark)
    assert stored.count(b"[jobhost:") == 1
    assert glob.glob(path + ".tail.*") == []


def test_reading_from_zero_after_a_drop_gives_the_stored_file(tmp_path: Path) -> None:
    path = str(tmp_path / "run.log")
    data = stream(10_000)
    log = OutputLog(path, max_bytes=1000)
    log.write(data)
    log.close()

    content, end = read_all(path)
    assert content == Path(path).read_bytes()
    assert end == 10_000  # offsets are positions in the produced stream


def test_reading_inside_the_dropped_middle_returns_the_marker_then_the_tail(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "run.log")
    data = stream(10_000)
    log = OutputLog(path, max_bytes=1000)
    log.write(data)
    log.close()

    chunk, following = read_output(path, 600, 100)
    assert chunk == marker(following - 600)
    assert b"bytes of output dropped" in chunk
    tail, end = read_all(path, following)
    assert tail == data[following:]
    assert end == 10_000


def test_a_follower_that_keeps_up_sees_every_byte_despite_the_cap(tmp_path: Path) -> None:
    path = str(tmp_path / "run.log")
    data = stream(20_000)
    log = OutputLog(path, max_bytes=1000)
    seen = bytearray()
    offset = 0
    for start in range(0, len(data), 50):
        log.write(data[start : start + 50])
        chunk, offset = read_all(path, offset)
        seen += chunk
    log.close()
    chunk, offset = read_all(path, offset)
    seen += chunk

    assert bytes(seen) == data
    assert offset == 20_000


def test_a_lagging_follower_gets_a_marker_and_consistent_offsets(tmp_path: Path) -> None:
    path = str(tmp_path / "run.log")
    data = stream(20_000)
    log = OutputLog(path, max_bytes=1000)
    log.write(data[:300])
    first, offset = read_all(path)
    assert first == data[:300]
    log.write(data[300:15_000])  # the follower falls far behind while the job runs

    head_rest, offset = read_output(path, offset, 1000)
    assert (head_rest, offset) == (data[300:500], 500)  # the rest of the head comes first
    chunk, following = read_output(path, offset, 100)
    assert chunk == marker(following - 500)
    rest, offset = read_all(path, following)
    assert rest == data[following:15_000]
    assert offset == 15_000

    log.write(data[15_000:])  # behind again: 5,000 bytes against a 500-byte tail
    log.close()
    chunk, following = read_output(path, offset, 100)
    assert chunk == marker(following - 15_000)
    rest, offset = read_all(path, following)
    assert rest == data[following:]
    assert offset == 20_000


def test_reading_a_log_that_does_not_exist_yet_returns_nothing(tmp_path: Path) -> None:
    assert read_output(str(tmp_path / "missing.log"), 5, 100) == (b"", 5)


def test_closing_twice_is_harmless(tmp_path: Path) -> None:
    path = str(tmp_path / "run.log")
    log = OutputLog(path, max_bytes=100)
    log.write(b"x" * 1000)
    log.close()
    log.close()
    assert Path(path).read_bytes().count(b"bytes of output dropped") == 1


def test_stderr_spans_are_recorded_in_stream_offsets_and_survive_the_cap(tmp_path: Path) -> None:
    path = str(tmp_path / "run.log")
    log = OutputLog(path, max_bytes=100)
    log.write(b"out one\n")  # 0-8
    log.write_stderr(b"err one\n")  # 8-16
    log.write_stderr(b"err two\n")  # 16-24: adjacent, read as one span
    log.write(b"x" * 200)  # 24-224: the middle is dropped
    log.write_stderr(b"late err\n")  # 224-233, in the kept tail
    log.close()

    assert stderr_spans(path, 0, 233) == [(8, 24), (224, 233)]
    assert stderr_spans(path, 12, 230) == [(12, 24), (224, 230)]
    assert stderr_spans(path, 24, 224) == []
    tail = read_text(path, 224, 100, live=False)
    assert tail.data == b"late err\n"
    assert tail.stderr == ((224, 233),)
    assert read_text(path, 0, 8, live=False).stderr == ()


def test_stderr_spans_count_characters_of_the_text(tmp_path: Path) -> None:
    path = str(tmp_path / "run.log")
    log = OutputLog(path, max_bytes=10_000)
    log.write("é ok\n".encode())
    log.write_stderr("ü bad\n".encode())
    log.close()
    read = read_text(path, 0, 1000, live=False)
    text = read.data.decode()
    ((start, end),) = text_spans(read.data, read.offset, read.stderr)
    assert text[start:end] == "ü bad\n"


def test_secrets_on_stderr_are_masked_and_the_span_covers_the_mask(tmp_path: Path) -> None:
    path = str(tmp_path / "run.log")
    log = OutputLog(path, max_bytes=10_000, secrets=["hunter2"])
    log.write(b"password is hun")
    log.write_stderr(b"hunter2 failed\n")
    log.write(b"ter2\n")
    log.close()
    data = Path(path).read_bytes()
    assert b"hunter2" not in data
    ((start, end),) = stderr_spans(path, 0, len(data))
    assert data[start:end].endswith(b" failed\n")
    assert b"hunter2" not in data[start:end]
