"""A byte-value LRU with per-entry expiry, bounded by entry count and total bytes: the
in-process backend of the response cache. No clock of its own; callers pass `now_ms`."""

from __future__ import annotations

from collections import OrderedDict


class ByteLRU:
    def __init__(self, max_entries: int, max_bytes: int) -> None:
        if max_entries <= 0 or max_bytes <= 0:
            raise ValueError("cache limits must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.total_bytes = 0
        self._entries: OrderedDict[str, tuple[bytes, int | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now_ms: int) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires_ms = entry
        if expires_ms is not None and expires_ms <= now_ms:
            self.delete(key)
            return None
        self._entries.move_to_end(key)
        return value

    def set(self, key: str, value: bytes, expires_ms: int | None) -> None:
        self.delete(key)
        if len(value) > self.max_bytes:
            return  # larger than the whole cache: never stored
        self._entries[key] = (value, expires_ms)
        self.total_bytes += len(value)
        while len(self._entries) > self.max_entries or self.total_bytes > self.max_bytes:
            _, (old, _) = self._entries.popitem(last=False)
            self.total_bytes -= len(old)

    def delete(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.total_bytes -= len(entry[0])

    def purge(self, now_ms: int) -> None:
        expired = [k for k, (_, e) in self._entries.items() if e is not None and e <= now_ms]
        for key in expired:
            self.delete(key)
