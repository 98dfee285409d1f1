"""bot.queue: fairness, bounds, cancel, batching, waiting, estimates."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import pytest

from lifecycle.queue import FairQueue, JobQueue, QueuedJob, QueueFull, UserLimitReached

KEY_A = ("a prompt shape", 1024, 1024, 4)
KEY_B = ("another shape", 832, 1216, 4)

_ids = itertools.count(1)


def job(user: int, *, images: int = 4, key: tuple = KEY_A, job_id: int | None = None):
    return QueuedJob(
        job_id=next(_ids) if job_id is None else job_id,
        user_id=user,
        images=images,
        batch_key=key,
        enqueued_at=0.0,
    )


async def drain(queue: FairQueue, max_images: int = 4) -> list[int]:
    """Pop everything one batch at a time; the ids in the order they were handed out."""
    popped: list[int] = []
    while len(queue):
        popped.extend(j.job_id for j in await queue.next_batch(max_images))
    return popped


def test_fair_queue_is_a_job_queue():
    assert isinstance(FairQueue(), JobQueue)


async def test_twenty_users_three_jobs_each_interleave():
    queue = FairQueue(max_size=100, per_user_limit=3)
    submitted: dict[int, list[int]] = {}
    for user in range(1, 21):
        for _ in range(3):
            queued = job(user)
            await queue.submit(queued)
            submitted.setdefault(user, []).append(queued.job_id)
    expected = [submitted[user][k] for k in range(3) for user in range(1, 21)]
    assert queue.order() == expected
    assert [queue.position(job_id) for job_id in expected] == list(range(1, 61))
    assert await drain(queue) == expected


async def test_submit_returns_position():
    queue = FairQueue()
    assert await queue.submit(job(1)) == 1
    assert await queue.submit(job(1)) == 2
    # A new user's first job goes before user 1's second.
    assert await queue.submit(job(2)) == 2
    assert len(queue) == 3


async def test_user_served_and_submitting_again_goes_to_the_back():
    queue = FairQueue()
    a1, b1, c1 = job(1), job(2), job(3)
    for queued in (a1, b1, c1):
        await queue.submit(queued)
    assert [j.job_id for j in await queue.next_batch(4)] == [a1.job_id]
    a2 = job(1)
    await queue.submit(a2)
    assert queue.order() == [b1.job_id, c1.job_id, a2.job_id]


async def test_per_user_limit_raises_and_keeps_queued_jobs():
    queue = FairQueue(per_user_limit=2)
    first, second = job(1), job(1)
    await queue.submit(first)
    await queue.submit(second)
    with pytest.raises(UserLimitReached) as raised:
        await queue.submit(job(1))
    assert "2 jobs waiting" in raised.value.user_message
    assert queue.order() == [first.job_id, second.job_id]
    # Other users are not affected, and a per-call limit (e.g. a guild setting) overrides.
    await queue.submit(job(2))
    await queue.submit(job(1), per_user_limit=3)
    with pytest.raises(UserLimitReached, match="1 job waiting"):
        await queue.submit(job(2), per_user_limit=1)
    assert queue.queued_for(1) == 3 and queue.queued_for(2) == 1


async def test_global_bound_raises_and_keeps_queued_jobs():
    queue = FairQueue(max_size=3, per_user_limit=3)
    for user in (1, 2, 3):
        await queue.submit(job(user))
    before = queue.order()
    with pytest.raises(QueueFull) as raised:
        await queue.submit(job(4))
    assert "full" in raised.value.user_message and "3" in raised.value.user_message
    assert queue.order() == before
    # Restart recovery may go over the bounds: queued work is never refused then.
    await queue.submit(job(1), enforce_limits=False)
    await queue.submit(job(1), enforce_limits=False)
    await queue.submit(job(1), enforce_limits=False)
    assert len(queue) == 6


async def test_duplicate_job_id_is_refused():
    queue = FairQueue()
    await queue.submit(job(1, job_id=500))
    with pytest.raises(ValueError):
        await queue.submit(job(2, job_id=500))
    assert queue.order() == [500]


async def test_cancel_removes_and_shifts_positions():
    queue = FairQueue()
    a1, a2, b1, b2, c1 = job(1), job(1), job(2), job(2), job(3)
    for queued in (a1, a2, b1, b2, c1):
        await queue.submit(queued)
    assert queue.order() == [a1.job_id, b1.job_id, c1.job_id, a2.job_id, b2.job_id]
    assert queue.cancel(b1.job_id)
    assert queue.position(b1.job_id) is None
    # b2 moves into b1's slot; everyone behind b1 moves up.
    assert queue.order() == [a1.job_id, b2.job_id, c1.job_id, a2.job_id]
    assert queue.position(c1.job_id) == 3
    assert not queue.cancel(b1.job_id)
    assert not queue.cancel(99999)
    assert await drain(queue) == [a1.job_id, b2.job_id, c1.job_id, a2.job_id]


async def test_cancelled_user_is_not_penalised_when_submitting_again():
    queue = FairQueue()
    a1, b1 = job(1), job(2)
    await queue.submit(a1)
    await queue.submit(b1)
    queue.cancel(a1.job_id)
    a2, b2 = job(1), job(2)
    await queue.submit(b2)
    await queue.submit(a2)
    # User 1 was never served, so their new job is in the first round, after user 2.
    assert queue.order() == [b1.job_id, a2.job_id, b2.job_id]


async def test_cannot_cancel_a_started_job():
    queue = FairQueue()
    queued = job(1)
    await queue.submit(queued)
    await queue.next_batch(4)
    assert not queue.cancel(queued.job_id)


async def test_next_batch_groups_same_key_up_to_max_images():
    queue = FairQueue(per_user_limit=5)
    a1 = job(1, key=KEY_A)
    b1 = job(2, key=KEY_B)
    c1 = job(3, key=KEY_A)
    d1 = job(4, key=KEY_A)
    e1 = job(5, key=KEY_A)
    a2 = job(1, key=KEY_B)
    for queued in (a1, b1, c1, d1, e1, a2):
        await queue.submit(queued)
    batch = await queue.next_batch(12)
    assert [j.job_id for j in batch] == [a1.job_id, c1.job_id, d1.job_id]
    assert sum(j.images for j in batch) == 12
    # Skipped jobs keep their relative order; the rest of the same key comes later.
    assert queue.order() == [b1.job_id, e1.job_id, a2.job_id]
    batch = await queue.next_batch(12)
    assert [j.job_id for j in batch] == [b1.job_id, a2.job_id]
    assert [j.job_id for j in await queue.next_batch(12)] == [e1.job_id]
    assert len(queue) == 0


async def test_batch_stops_at_the_first_mate_that_does_not_fit():
    queue = FairQueue()
    a = job(1, images=4)
    b = job(2, images=8)
    c = job(3, images=2)
    for queued in (a, b, c):
        await queue.submit(queued)
    assert [j.job_id for j in await queue.next_batch(8)] == [a.job_id]
    assert queue.order() == [b.job_id, c.job_id]


async def test_oversized_first_job_still_runs_alone():
    queue = FairQueue()
    big, small = job(1, images=8), job(2, images=1)
    await queue.submit(big)
    await queue.submit(small)
    assert [j.job_id for j in await queue.next_batch(4)] == [big.job_id]


async def test_batch_mates_do_not_move_their_owners_later_jobs_up():
    queue = FairQueue(per_user_limit=4)
    u1 = [job(1, key=KEY_A), job(1, key=KEY_B), job(1, key=KEY_A), job(1, key=KEY_B)]
    u2 = [job(2, key=KEY_B) for _ in range(4)]
    for queued in (*u1, *u2):
        await queue.submit(queued)
    before = queue.order()
    batch = await queue.next_batch(8)
    assert [j.job_id for j in batch] == [u1[0].job_id, u1[2].job_id]
    assert queue.order() == [i for i in before if i not in {u1[0].job_id, u1[2].job_id}]


async def test_positions_match_the_actual_pop_order():
    queue = FairQueue(max_size=200, per_user_limit=10)
    keys = [KEY_A, KEY_B]
    for step in range(60):
        await queue.submit(job(step * 7 % 9, key=keys[step % 3 == 0]))
        if step % 5 == 4:
            await queue.next_batch(4)
        if step % 11 == 10:
            queue.cancel(queue.order()[len(queue) // 2])
        # Whatever happened, the predicted order is what next_batch hands out next.
        predicted = queue.order()
        assert [queue.position(i) for i in predicted] == list(range(1, len(predicted) + 1))
    predicted = queue.order()
    assert await drain(queue) == predicted


async def test_order_after_batching_is_the_order_before_minus_the_batch():
    queue = FairQueue(per_user_limit=10)
    keys = [KEY_A, KEY_B]
    for step in range(30):
        await queue.submit(job(step % 4, key=keys[(step * 5) % 3 == 0]))
    while len(queue):
        before = queue.order()
        taken = {j.job_id for j in await queue.next_batch(12)}
        assert before[0] in taken
        assert queue.order() == [i for i in before if i not in taken]


async def test_next_batch_waits_for_a_submit():
    queue = FairQueue()
    waiter = asyncio.create_task(queue.next_batch(4))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    queued = job(1)
    await queue.submit(queued)
    batch = await asyncio.wait_for(waiter, timeout=1)
    assert [j.job_id for j in batch] == [queued.job_id]


async def test_next_batch_times_out_on_an_empty_queue_and_loses_nothing():
    queue = FairQueue()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.next_batch(4), timeout=0.05)
    queued = job(1)
    await queue.submit(queued)
    batch = await asyncio.wait_for(queue.next_batch(4), timeout=1)
    assert [j.job_id for j in batch] == [queued.job_id]


async def test_two_waiting_feeders_each_get_a_different_job():
    queue = FairQueue()
    feeders = [asyncio.create_task(queue.next_batch(4)) for _ in range(2)]
    await asyncio.sleep(0)
    first, second = job(1, key=KEY_A), job(2, key=KEY_B)
    await queue.submit(first)
    await queue.submit(second)
    batches = await asyncio.wait_for(asyncio.gather(*feeders), timeout=1)
    assert sorted(b[0].job_id for b in batches) == sorted([first.job_id, second.job_id])


async def test_waiting_again_after_the_queue_empties():
    queue = FairQueue()
    await queue.submit(job(1))
    await queue.next_batch(4)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.next_batch(4), timeout=0.05)


async def test_estimated_start_is_monotone_in_position():
    queue = FairQueue(per_user_limit=5)
    for user in range(6):
        for images in (4, 1, 2):
            await queue.submit(job(user, images=images))
    order = queue.order()
    estimates = [queue.estimated_start(i, seconds_per_image=0.5) for i in order]
    assert estimates[0] == 0.0
    assert estimates == sorted(estimates)
    assert estimates[1] == 2.0  # one 4-image job ahead at 0.5 s per image
    assert queue.estimated_start(order[0], 0.5, busy_for=3.0) == 3.0
    assert queue.estimated_start(99999, 0.5) is None


async def test_subscribers_hear_every_change():
    queue = FairQueue()
    heard: list[int] = []
    unsubscribe = queue.subscribe(lambda: heard.append(len(queue)))
    queue.subscribe(lambda: 1 / 0)  # a broken subscriber must not break the queue
    first = job(1)
    await queue.submit(first)
    await queue.submit(job(2))
    queue.cancel(first.job_id)
    await queue.next_batch(4)
    assert heard == [1, 2, 1, 0]
    unsubscribe()
    await queue.submit(job(3))
    assert heard == [1, 2, 1, 0]
    unsubscribe()  # twice is harmless


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        FairQueue(max_size=0)
    with pytest.raises(ValueError):
        FairQueue(per_user_limit=0)


async def test_a_set_from_one_command_takes_one_place_and_still_takes_turns():
    queue = FairQueue(per_user_limit=2)
    leader = job(1)
    rest = [dataclasses.replace(job(1), group=leader.job_id) for _ in range(3)]
    await queue.submit(leader)
    for follower in rest:
        await queue.submit(follower)
    assert queue.queued_for(1) == 1
    await queue.submit(job(1))  # a second place
    assert queue.queued_for(1) == 2
    with pytest.raises(UserLimitReached):
        await queue.submit(job(1))
    # Another user is not held up behind the whole set: turns interleave job by job.
    other = job(2)
    await queue.submit(other)
    order = await drain(queue, max_images=4)
    assert order.index(other.job_id) == 1
