"""The journal's segments: records survive the process that wrote them, a full segment
rolls over to the next, a sealed segment holds exactly its records, and a stored one comes
back empty as a later segment."""

from __future__ import annotations

from pathlib import Path

import pytest

from faregate.metering.journal import Journal


def _records(paths: list[Path]) -> list[dict]:
    return [record for path in paths for record in Journal.read(path)]


def test_a_segment_left_by_a_killed_process_reads_back_every_record_and_nothing_else(
    tmp_path: Path,
) -> None:
    dead = Journal(tmp_path)  # never sealed nor closed: the rest of the segment is zeros
    for i in range(100):
        dead.append({"i": i, "text": "é" * i})
    later = Journal(tmp_path)  # the next process starts a segment of its own
    [left] = later.leftovers()
    assert left.stat().st_size > 0
    assert _records([left]) == [{"i": i, "text": "é" * i} for i in range(100)]
    later.close()


def test_a_torn_record_before_the_zeros_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "000000000001.jsonl"
    path.write_bytes(b'{"e": []}\n{"r": {"id": "x"' + b"\0" * 4096)
    assert list(Journal.read(path)) == [{"e": []}]


def test_a_segment_killed_while_being_zeroed_replays_as_nothing(tmp_path: Path) -> None:
    """A stored segment is zeroed from its start before it is reused: a process killed
    part of the way leaves zeros, then the tail of its records, all of them stored."""
    journal = Journal(tmp_path, segment_bytes=4096)
    for i in range(20):
        journal.append({"i": i, "pad": "x" * 30})
    sealed = journal.seal()
    [path] = sealed.paths
    records = path.read_bytes().rstrip(b"\0")
    half = len(records) // 2 + 3  # mid-record: the rest of that record, then whole ones
    path.write_bytes(b"\0" * half + records[half:])
    assert list(Journal.read(path)) == []
    sealed.release()
    journal.close()


def test_sealing_returns_the_segment_and_starts_an_empty_one_and_closing_cuts_it(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    journal.append({"a": 1})
    sealed = journal.seal()
    assert _records(sealed.paths) == [{"a": 1}]
    assert journal.leftovers() == []  # sealed segments are the writer's, not a replay's
    sealed.discard()
    assert journal.leftovers() == []
    journal.append({"b": 2})
    journal.close()
    [closed] = tmp_path.glob("*.jsonl")
    assert closed.read_bytes() == b'{"b":2}\n'  # cut to its records


def test_a_full_segment_rolls_over_and_the_next_seal_returns_every_segment_in_order(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, segment_bytes=256)
    records = [{"i": i, "pad": "x" * 40} for i in range(30)]
    for record in records[:20]:
        journal.append(record)
    journal.append({"big": "y" * 1000})  # larger than a segment: a segment of its own size
    for record in records[20:]:
        journal.append(record)
    assert journal.leftovers() == []  # filled segments wait for the seal, not for a replay
    sealed = journal.seal()
    assert len(sealed.paths) > 3
    assert _records(sealed.paths) == [*records[:20], {"big": "y" * 1000}, *records[20:]]
    sealed.discard()
    journal.close()
    assert list(tmp_path.glob("*.jsonl")) == []  # an empty segment is deleted on close


def test_a_stored_segment_is_zeroed_and_comes_back_as_a_later_one(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=4096)
    journal.append({"first": "x" * 3000})
    first = journal.seal()
    journal.append({"second": 2})
    first.discard()  # stored: zeroed and kept as a spare (same file, mapped)
    second = journal.seal()  # the next segment is the spare, renamed after this one
    assert len(list(tmp_path.glob("*.jsonl"))) == 2
    [second_path] = second.paths
    assert second_path.read_bytes().rstrip(b"\0") == b'{"second":2}\n'
    journal.append({"third": 3})  # into the recycled segment, over zeros
    [current] = sorted(tmp_path.glob("*.jsonl"))[-1:]
    assert current.name > second_path.name  # replay order is the order of the records
    assert current.read_bytes().rstrip(b"\0") == b'{"third":3}\n'
    assert _records([current]) == [{"third": 3}]  # nothing of the first use is left
    second.discard()
    journal.close()
    assert [p.read_bytes() for p in tmp_path.glob("*.jsonl")] == [b'{"third":3}\n']


def test_a_released_segment_is_replayed_and_a_killed_process_spares_replay_as_nothing(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path, segment_bytes=4096)
    journal.append({"a": 1})
    journal.seal().discard()  # a zeroed spare, on disk
    journal.append({"b": 2})
    failed = journal.seal()  # the spare is the current segment again; a new spare later
    failed.release()  # the database was down: the records stay, to be replayed
    assert journal.leftovers() == failed.paths
    journal.append({"c": 3})
    journal.seal().discard()  # stored: a spare on disk again when the process is killed
    journal.append({"d": 4})
    later = Journal(tmp_path, segment_bytes=4096)
    left = later.leftovers()
    assert len(left) == 3  # the released one, the spare, the current one
    assert _records(left) == [{"b": 2}, {"d": 4}]
    later.discard(left)
    assert later.leftovers() == []
    later.close()


def test_a_seal_that_cannot_start_a_segment_moves_nothing(tmp_path: Path, monkeypatch) -> None:
    journal = Journal(tmp_path, segment_bytes=4096)
    journal.append({"a": 1})

    def disk_full(fd: int, offset: int, size: int) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr("os.posix_fallocate", disk_full)
        with pytest.raises(OSError):
            journal.seal()
        with pytest.raises(OSError):
            journal.append({"big": "x" * 5000})  # a roll-over that cannot start a segment
    journal.append({"b": 2})  # still into the same segment, after the first record
    sealed = journal.seal()
    assert _records(sealed.paths) == [{"a": 1}, {"b": 2}]
    sealed.discard()
    journal.close()
