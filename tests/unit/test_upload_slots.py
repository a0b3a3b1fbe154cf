"""Upload slots: who gets a slot when all are taken, with and without a minimum upload rate."""

from __future__ import annotations

import asyncio

from decrappify.serve.upload_slots import UploadSlots


def run(coroutine):
    return asyncio.run(coroutine)


def test_without_a_minimum_rate_a_full_house_refuses_at_once():
    async def scenario():
        slots = UploadSlots(1)
        first = await slots.acquire()
        return first, await slots.acquire()

    first, second = run(scenario())
    assert first is not None and second is None


def test_a_waiting_upload_takes_the_slot_of_a_stalled_one():
    async def scenario():
        slots = UploadSlots(1, min_bytes_per_s=1000, grace_s=5.0, eviction_age_s=0.1)
        stalled = await slots.acquire()
        newcomer = await slots.acquire()  # waits in line until the stalled one has run 0.1 s
        return stalled, newcomer, slots.in_use

    stalled, newcomer, in_use = run(scenario())
    assert stalled.evicted and newcomer is not None and not newcomer.evicted and in_use == 1


def test_uploads_keeping_up_are_never_evicted_and_a_full_house_of_real_work_refuses():
    async def scenario():
        slots = UploadSlots(1, min_bytes_per_s=1000, grace_s=5.0, eviction_age_s=0.0)
        busy = await slots.acquire()
        busy.received, busy.done = 50_000, True  # its whole body came: it is real work now
        return busy, await slots.acquire()

    busy, refused = run(scenario())
    assert refused is None and not busy.evicted


def test_the_line_is_bounded():
    async def scenario():
        slots = UploadSlots(1, min_bytes_per_s=1000, grace_s=0.3, eviction_age_s=10.0, max_waiting=1)
        await slots.acquire()
        waiting = asyncio.create_task(slots.acquire())  # holds the one place in line until it gives up
        await asyncio.sleep(0.05)
        over = await slots.acquire()
        return over, await waiting

    over, gave_up = run(scenario())
    assert over is None and gave_up is None


def test_an_upload_is_due_by_its_rate_never_before_the_grace():
    slots = UploadSlots(1, min_bytes_per_s=100, grace_s=2.0)
    upload = run(slots.acquire())
    assert slots.due(upload) == upload.started + 2.0
    upload.received = 1000
    assert slots.due(upload) == upload.started + 10.0
