"""The rows the recorder hands the usage writer wait there until its next flush, so they are
made of plain values: the request row and each event's properties hold nothing the garbage
collector tracks, and a tag reads the same before and after the database."""

from __future__ import annotations

import gc
import json
from datetime import UTC, datetime

from faregate.auth.principal import Principal
from faregate.billing.events import text_property
from faregate.gateway.call import Call
from faregate.metering.recorder import build_events, build_request_row
from faregate.usage import Usage

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def finished(tags: tuple[str, ...]) -> Call:
    call = Call("req_1", Principal("key_1", "fg_x"), "chat", "m", {}, tags=tags, created_at=NOW)
    call.usage = Usage(input_tokens=10, output_tokens=5)
    call.finished = call.started
    return call


def test_the_request_row_and_the_event_properties_are_not_tracked_by_the_collector() -> None:
    call = finished(())
    assert not gc.is_tracked(build_request_row(call, "sub_1"))
    events = build_events(call, "sub_1", "acme")
    assert [e["code"] for e in events] == ["requests", "tokens", "tokens"]
    assert not any(gc.is_tracked(e["properties"]) for e in events)


def test_tags_are_stored_as_a_list_and_filter_as_the_stored_list_does() -> None:
    call = finished(("team-a", "beta"))
    row = build_request_row(call, "sub_1")
    event = build_events(call, "sub_1", "acme")[0]
    assert json.loads(json.dumps(row["tags"])) == ["team-a", "beta"]
    stored = json.loads(json.dumps(event["properties"]))
    assert stored["tags"] == ["team-a", "beta"]
    assert text_property(event["properties"], "tags") == text_property(stored, "tags")
