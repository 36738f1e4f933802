"""Request ids: unique, one shape, and ordered by the time they were made."""

from __future__ import annotations

import re
import time

from faregate.api.common import new_request_id


def test_ids_are_unique_and_sort_by_time() -> None:
    first = [new_request_id() for _ in range(10_000)]
    time.sleep(0.002)
    later = new_request_id()
    assert len(set(first)) == len(first)
    assert all(re.fullmatch(r"req_[0-9a-f]{24}", i) for i in [*first, later])
    assert all(later > i for i in first)  # a later millisecond sorts after every earlier id
    stamp = int(later[4:16], 16)
    assert abs(stamp - time.time() * 1000) < 5_000  # the leading digits are the clock in ms
