"""Storage that remembers used assertion IDs until they would have expired anyway."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol


class ReplayStore(Protocol):
    def seen(self, assertion_id: str, expires: datetime) -> bool:
        """Record ``assertion_id`` until ``expires``; True if it was already recorded.

        Must be atomic: of two concurrent calls with one ID, exactly one returns False.
        """
        ...


class InMemoryReplayStore:
    """For tests and a single process; the idp backs ``ReplayStore`` with the database."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._clock = clock
        self._ids: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def seen(self, assertion_id: str, expires: datetime) -> bool:
        now = self._clock()
        with self._lock:
            self._ids = {k: v for k, v in self._ids.items() if v > now}
            if assertion_id in self._ids:
                return True
            self._ids[assertion_id] = expires
            return False
