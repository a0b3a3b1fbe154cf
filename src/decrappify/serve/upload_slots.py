"""Upload slots: how many request bodies the service receives at once, and who gets a slot when all are taken.

A slot bounds what uploads cost (spooled bytes, form parsing, then a place in the queue). Without more rules, a
client that sends its body one byte a second holds a slot for the whole upload timeout, and as many such clients
as there are slots lock every real user out (503) for that long: a slow-body flood. So, with a minimum rate:

* an upload whose average rate since it got its slot is below `min_bytes_per_s` once `grace_s` have passed is
  dropped (`due` says when its next bytes must have come; the middleware answers 408);
* when every slot is taken, a newcomer waits in line (first come, first served; at most `max_waiting` wait,
  for at most `grace_s`) instead of getting a 503 at once. The first in line takes a slot as soon as one is
  free, or else the slot of the slowest upload that has run `eviction_age_s` below the minimum rate, which is
  evicted (its pending read wakes up, and it gets a 408). A real upload sends its body in well under a second,
  so once in a slot it is done before it could be evicted; a flood's uploads never are, and lose their slots.

Waiting ends in a 503 when every slot holds a whole body (real work, not a slow client: waiting would not
help), when the line is full, or after `grace_s`. Without a minimum rate (`min_bytes_per_s = 0`) there is no
waiting and no eviction: a newcomer finding every slot taken gets the 503 at once.

What this does not stop: a flood with more connections than slots plus waiting places takes the places a real
client would wait in. A proxy that limits connections per client address is the defence against that.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: How long an upload runs before its rate counts against it when someone waits for its slot: long enough for
#: a real client's first bytes to arrive, short enough that the wait for a slot during a flood stays short.
EVICTION_AGE_S = 1.0
#: How often a waiting upload looks for a slot again.
POLL_S = 0.05
#: Places in line per slot.
WAITING_PER_SLOT = 4


@dataclass(eq=False)
class Upload:
    """One body being received: when it got its slot, how much came, and the timer its pending read waits under."""

    started: float
    received: int = 0
    done: bool = False
    evicted: bool = False  # its slot went to a waiting upload: it ends with a 408
    timer: asyncio.Timeout | None = None


class UploadSlots:
    """`capacity` upload slots, with the minimum-rate rules of the module docstring when `min_bytes_per_s > 0`.

    Used from one event loop (the server's), so no lock is needed: nothing here awaits between a check and the
    change it leads to.
    """

    def __init__(
        self,
        capacity: int,
        *,
        min_bytes_per_s: float = 0.0,
        grace_s: float = 10.0,
        eviction_age_s: float = EVICTION_AGE_S,
        max_waiting: int | None = None,
    ):
        self.capacity = capacity
        self.min_bytes_per_s = min_bytes_per_s
        self.grace_s = grace_s
        self.eviction_age_s = eviction_age_s
        self.max_waiting = WAITING_PER_SLOT * capacity if max_waiting is None else max_waiting
        self.uploads: set[Upload] = set()
        self._line: collections.deque[object] = collections.deque()

    @property
    def in_use(self) -> int:
        return len(self.uploads)

    async def acquire(self) -> Upload | None:
        """A slot for a new upload, after waiting in line if need be; None when it is to be refused (503)."""
        loop = asyncio.get_running_loop()
        if len(self.uploads) < self.capacity and not self._line:
            return self._take(loop.time())
        if self.min_bytes_per_s <= 0 or len(self._line) >= self.max_waiting:
            return None
        place = object()
        self._line.append(place)
        try:
            give_up = loop.time() + self.grace_s
            while True:
                now = loop.time()
                if self._line[0] is place:
                    if len(self.uploads) < self.capacity or self._evict_slowest(now):
                        return self._take(now)
                    if all(upload.done for upload in self.uploads):
                        return None  # every slot holds real work: waiting would not help
                if now >= give_up:
                    return None
                await asyncio.sleep(POLL_S)
        finally:
            self._line.remove(place)

    def release(self, upload: Upload) -> None:
        self.uploads.discard(upload)

    def due(self, upload: Upload) -> float:
        """The loop time by which more bytes of `upload` must arrive: when its average rate would fall below the
        minimum (never before `grace_s`); infinity without a minimum rate."""
        if self.min_bytes_per_s <= 0:
            return math.inf
        return upload.started + max(self.grace_s, upload.received / self.min_bytes_per_s)

    def _take(self, now: float) -> Upload:
        upload = Upload(started=now)
        self.uploads.add(upload)
        return upload

    def _evict_slowest(self, now: float) -> bool:
        """Free the slot of the slowest upload that has run `eviction_age_s` below the minimum rate, if any."""
        candidates = [
            upload
            for upload in self.uploads
            if not upload.done
            and now - upload.started >= self.eviction_age_s
            and upload.received < self.min_bytes_per_s * (now - upload.started)
        ]
        if not candidates:
            return False
        victim = min(candidates, key=lambda upload: upload.received / (now - upload.started))
        victim.evicted = True
        self.uploads.discard(victim)
        if victim.timer is not None:
            victim.timer.reschedule(now)  # wakes its pending read, which then answers 408
        log.info("slow upload (%d bytes in %.1f s) evicted for a waiting one", victim.received, now - victim.started)
        return True
