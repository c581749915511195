"""The ``changed`` notes a server sends the others: every id in one note, each note within
PostgreSQL's payload limit, progress reports with their runs."""

from __future__ import annotations

import json

from jobhost.store.requests import NOTIFY_BYTES, change_notes


def test_many_runs_with_long_progress_messages_are_split_under_the_payload_limit() -> None:
    ids = [f"run-{n:05d}" for n in range(400)]
    progress = {i: (0.25, "é" * 500) for i in ids[::3]}  # escaped: 3,000 bytes each
    notes = [json.loads(p) for p in change_notes("me", ids, progress)]
    assert all(len(p.encode()) <= NOTIFY_BYTES for p in change_notes("me", ids, progress))
    assert [i for note in notes for i in note["ids"]] == ids
    sent = {i: tuple(r) for note in notes for i, r in note.get("progress", {}).items()}
    assert sent == progress
    assert all(note["from"] == "me" and note["kind"] == "changed" for note in notes)


def test_a_few_runs_go_in_one_note() -> None:
    (note,) = change_notes("me", ["a", "b"], {})
    assert json.loads(note) == {"to": None, "kind": "changed", "from": "me", "ids": ["a", "b"]}
