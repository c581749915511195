"""Output read back as text: every chunk ends on a UTF-8 character boundary (offsets stay
byte offsets), live and after the end, through the file reader and the REST API."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from jobhost.execution.output import OutputLog, read_text
from tests.jobfolders import write_job
from tests.serverfixtures import make_settings, running_harness

TEXT = "".join(f"{i:05d} ascii é ß € 😀 中文\n" for i in range(3000))  # 1-4 byte characters


def _write(path: Path, data: bytes, cap: int = 10 * 1024 * 1024, close: bool = True) -> None:
    log = OutputLog(str(path), cap)
    step = 7  # odd writes: characters split across writes, as a block-buffered child does
    for start in range(0, len(data), step):
        log.write(data[start : start + step])
    if close:
        log.close()


def _read_all(path: Path, limit: int, live: bool) -> tuple[list[bytes], int]:
    chunks: list[bytes] = []
    offset = 0
    while True:
        read = read_text(str(path), offset, limit, live=live)
        if not read.data:
            return chunks, offset
        assert read.offset == offset
        assert read.next_offset >= offset + len(read.data)  # more only past the marker
        chunks.append(read.data)
        offset = read.next_offset
        if read.at_end:
            return chunks, offset


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 1000, 64 * 1024])
def test_every_chunk_of_a_finished_log_decodes_on_its_own(tmp_path: Path, limit: int) -> None:
    data = TEXT.encode()
    path = tmp_path / "run.log"
    _write(path, data)
    chunks, end = _read_all(path, limit, live=False)
    assert end == len(data)
    assert b"".join(chunks) == data
    for chunk in chunks:
        chunk.decode("utf-8")  # strict: a cut character would raise
        assert len(chunk) <= max(limit, 4)


def test_a_live_read_leaves_a_half_written_character_for_later(tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    euro = "€".encode()
    log = OutputLog(str(path), 1024)
    log.write(b"price: " + euro[:2])  # the child's buffer ended inside the character
    first = read_text(str(path), 0, 1024, live=True)
    assert (first.data, first.next_offset, first.at_end) == (b"price: ", 7, False)
    log.write(euro[2:] + b"\n")
    second = read_text(str(path), first.next_offset, 1024, live=True)
    assert second.data.decode() == "€\n"
    log.close()
    last = read_text(str(path), second.next_offset, 1024, live=False)
    assert (last.data, last.at_end) == (b"", True)


def test_the_last_page_of_a_finished_log_says_at_end(tmp_path: Path) -> None:
    path = tmp_path / "run.log"
    _write(path, b"all of it\n")
    read = read_text(str(path), 0, 1024, live=False)
    assert (read.data, read.at_end) == (b"all of it\n", True)
    assert read_text(str(path), 0, 4, live=False).at_end is False


def test_output_that_is_not_utf8_reads_back_byte_for_byte(tmp_path: Path) -> None:
    data = bytes(random.Random(7).randrange(256) for _ in range(20_000))
    path = tmp_path / "run.log"
    _write(path, data)
    for limit in (1, 3, 4096):
        chunks, end = _read_all(path, limit, live=False)
        assert (b"".join(chunks), end) == (data, len(data))


def test_a_capped_log_keeps_its_offsets_and_whole_characters(tmp_path: Path) -> None:
    data = TEXT.encode()
    path = tmp_path / "run.log"
    _write(path, data, cap=40_000)
    chunks, end = _read_all(path, 4096, live=False)
    assert end == len(data)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    assert "bytes of output dropped]" in text
    assert text.count("\ufffd") <= 2  # at most the two characters the cap itself cut


async def test_rest_paging_of_a_block_buffered_utf8_run_is_exact_and_ends_done(
    tmp_path: Path,
) -> None:
    # Once: 17 U+FFFD in a 660 KB replay, and done stayed false on the page that ended it.
    apps = tmp_path / "apps"
    script = (
        "import sys\n"
        "out = sys.stdout.buffer\n"
        "for i in range(20000):\n"
        "    out.write(f'{i:05d} é € 😀 中文\\n'.encode())\n"  # no flush: 8 KiB blocks
    )
    write_job(apps, "Lab", "Utf8", {"Name": "Utf8"}, script_text=script)
    async for harness in running_harness(make_settings(tmp_path)):
        client = await harness.admin()
        started = await client.post("/api/v1/jobs/start", json={"job_id": "Lab/Utf8"})
        execution_id = started.json()["id"]
        await harness.wait(execution_id)
        text, offset, pages = "", 0, []
        while True:
            page = (
                await client.get(f"/api/v1/jobs/output/{execution_id}?offset={offset}&limit=65536")
            ).json()
            pages.append(page)
            text += page["output"]
            offset = page["next_offset"]
            if page["done"]:
                break
        expected = "".join(f"{i:05d} é € 😀 中文\n" for i in range(20000))
        assert "\ufffd" not in text
        assert text == expected
        assert offset == len(expected.encode())
        assert pages[-1]["output"] != ""  # the page that returned the last bytes says done
