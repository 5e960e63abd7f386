"""The worker's ProcessPool (kernel/lifecycle.py) on hosts of its own making: caps and which process
a start over one stops, pending order and positions, idle stops, the memory watermark and a process
over its own limit.  The same rules with real processes: tests/test_lifecycle.py."""
import asyncio

import pytest

from notebooks_app.kernel.lifecycle import EVICTED, IDLE, MEMORY, OVER_LIMIT, PoolLimits, ProcessPool

MB = 1024 * 1024


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Host:
    """What the pool sees of an ExecutionHost: its notebook, who started it, busy, its idle clock,
    and a stop through its notebook's queue (here: at once)."""

    def __init__(self, pool, notebook_id, user="", *, clock):
        self.pool, self.notebook_id, self.user, self.clock = pool, notebook_id, user, clock
        self.busy = False
        self.last_active = clock()
        self.pid = None
        self.nice = 0
        self.stops = []  # (cause, reason)
        self.killed = []
        self.positions = []

    async def start(self):
        self.busy = True  # as a real one: its notebook is handling the run that starts it
        await self.pool.admit(self)
        async with self.pool.starting():
            await asyncio.sleep(0)
        self.pid = hash(self.notebook_id) & 0xFFFF
        self.last_active = self.clock()

    async def evict(self, cause, reason, even_busy=False):
        if self.busy and not even_busy:
            return False
        self.stops.append((cause, reason))
        self.pid = None
        self.pool.released(self)
        return True

    async def kill(self, cause, reason):
        self.killed.append((cause, reason))
        return True

    def pending(self, info):
        if info is not None:
            self.positions.append(info["position"])

    def done(self):
        """Its notebook handled its last message: not busy, the idle clock restarts."""
        self.busy = False
        self.last_active = self.clock()
        self.pool.became_idle(self)


@pytest.fixture
def clock():
    return Clock()


def pool_of(clock, **limits):
    return ProcessPool(PoolLimits(**{"idle_seconds": 60, "max_processes": 3, "user_max": 0, **limits}), clock=clock, measure=lambda pid, nice=0: 0)


async def started(pool, clock, notebook_id, user="", *, busy=False):
    host = Host(pool, notebook_id, user, clock=clock)
    await host.start()
    host.busy = busy
    clock.now += 1
    return host


async def test_a_start_over_the_cap_stops_the_least_recently_used_idle_process(clock):
    pool = pool_of(clock)
    a, b, c = [await started(pool, clock, n) for n in "abc"]
    b.last_active = clock.now  # b used since: a is the least recently used
    d = await started(pool, clock, "d")
    assert [h.notebook_id for h in (a, b, c, d) if h.stops] == ["a"]
    assert a.stops[0][0] == EVICTED and "limit of 3 running kernels" in a.stops[0][1]
    assert sorted(pool.live) == ["b", "c", "d"]


async def test_busy_processes_are_never_evicted_and_the_start_waits_pending_in_order(clock):
    pool = pool_of(clock, max_processes=2)
    a = await started(pool, clock, "a", busy=True)
    b = await started(pool, clock, "b", busy=True)
    c, d = Host(pool, "c", clock=clock), Host(pool, "d", clock=clock)
    starts = [asyncio.create_task(c.start()), asyncio.create_task(d.start())]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in starts)
    assert c.positions[-1] == 1 and d.positions[-1] == 2
    assert not a.stops and not b.stops
    b.done()  # b is idle now: the first in line (c) stops it and starts
    await asyncio.wait_for(starts[0], 1)
    assert b.stops and not starts[1].done() and d.positions[-1] == 1
    a.done()
    await asyncio.wait_for(starts[1], 1)
    assert sorted(pool.live) == ["c", "d"]


async def test_a_person_over_their_cap_stops_their_own_least_recently_used(clock):
    pool = pool_of(clock, max_processes=10, user_max=2)
    alice_1 = await started(pool, clock, "a1", "alice")
    bob = await started(pool, clock, "b1", "bob")
    alice_2 = await started(pool, clock, "a2", "alice")
    alice_3 = await started(pool, clock, "a3", "alice")
    assert alice_1.stops and alice_1.stops[0][0] == EVICTED and "its user's limit of 2" in alice_1.stops[0][1]
    assert not bob.stops and not alice_2.stops and not alice_3.stops
    assert sorted(pool.live) == ["a2", "a3", "b1"]


async def test_a_person_whose_processes_are_all_busy_waits_while_others_start(clock):
    pool = pool_of(clock, max_processes=10, user_max=1)
    alice = await started(pool, clock, "a1", "alice", busy=True)
    waiting = Host(pool, "a2", "alice", clock=clock)
    task = asyncio.create_task(waiting.start())
    await asyncio.sleep(0.01)
    assert not task.done() and waiting.positions == [1]
    await asyncio.wait_for(started(pool, clock, "b1", "bob"), 1)  # the worker's cap is not reached: bob passes
    alice.done()
    await asyncio.wait_for(task, 1)
    assert alice.stops and sorted(pool.live) == ["a2", "b1"]


async def test_idle_processes_stop_after_the_idle_time_and_busy_ones_never(clock):
    pool = pool_of(clock, idle_seconds=60)
    quiet = await started(pool, clock, "quiet")
    sleeping = await started(pool, clock, "sleeping", busy=True)  # a cell in time.sleep(90)
    recent = await started(pool, clock, "recent")
    quiet.last_active = clock.now
    clock.now += 59
    recent.last_active = clock.now - 30
    await pool.tick()
    assert not quiet.stops
    clock.now += 2
    await pool.tick()
    assert quiet.stops[0][0] == IDLE and "after 1 min idle" in quiet.stops[0][1]
    assert not sleeping.stops and not recent.stops
    clock.now += 500
    await pool.tick()
    assert not sleeping.stops, "a busy notebook is never stopped as idle"
    sleeping.done()  # the long cell ended: its idle clock starts now
    clock.now += 59
    await pool.tick()
    assert not sleeping.stops
    clock.now += 2
    await pool.tick()
    assert sleeping.stops[0][0] == IDLE


async def test_over_the_high_watermark_idle_processes_stop_down_to_the_low_one(clock):
    sizes = {}
    pool = ProcessPool(PoolLimits(idle_seconds=3600, max_processes=10, memory_high_mb=300, memory_low_mb=150), clock=clock, measure=lambda pid, nice=0: sizes[pid])
    hosts = [await started(pool, clock, n) for n in "abcd"]
    for host in hosts:
        sizes[host.pid] = 100 * MB
    hosts[2].busy = True
    await pool.tick()  # 400 MB: a (oldest) then b stop, c is busy, 200 > 150 so d stops too
    assert [h.notebook_id for h in hosts if h.stops] == ["a", "b", "d"]
    assert all(h.stops[0][0] == MEMORY and "over 300 MB" in h.stops[0][1] for h in hosts if h.stops)
    sizes.clear()
    sizes[hosts[2].pid] = 100 * MB
    await pool.tick()
    assert not hosts[2].stops


async def test_a_process_over_its_own_limit_is_killed_with_its_size_said(clock):
    pool = ProcessPool(PoolLimits(max_processes=10, process_memory_mb=500), clock=clock, measure=lambda pid, nice=0: 700 * MB)
    host = await started(pool, clock, "hog", busy=True)
    await pool.tick()
    assert host.killed and host.killed[0][0] == OVER_LIMIT
    assert "used 700 MB, over its limit of 500 MB" in host.killed[0][1]


async def test_at_most_start_concurrency_processes_start_at_once(clock):
    pool = pool_of(clock, max_processes=10, start_concurrency=2)
    inside, peak = 0, 0

    async def start():
        nonlocal inside, peak
        async with pool.starting():
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(start() for _ in range(8)))
    assert peak == 2


def test_defaults_follow_the_host_and_keep_low_under_high():
    limits = PoolLimits.defaults(idle_minutes=0.05, high_mb=100, low_mb=400)
    assert limits.max_processes >= 2 and limits.memory_low_mb == 100
    assert limits.idle_seconds == 3.0 and limits.tick_seconds == 0.75


async def test_a_pending_start_withdrawn_stops_waiting_and_leaves_the_line(clock):
    from notebooks_app.kernel.lifecycle import StartWithdrawn

    pool = pool_of(clock, max_processes=1)
    await started(pool, clock, "a", busy=True)
    b, c = Host(pool, "b", clock=clock), Host(pool, "c", clock=clock)
    waiting_b, waiting_c = asyncio.create_task(b.start()), asyncio.create_task(c.start())
    await asyncio.sleep(0.01)
    assert c.positions[-1] == 2
    assert pool.withdraw(b)  # Stop pressed on b's page while it was pending
    with pytest.raises(StartWithdrawn):
        await asyncio.wait_for(waiting_b, 1)
    await asyncio.sleep(0.01)
    assert c.positions[-1] == 1 and not waiting_c.done()
    assert not pool.withdraw(b)
    waiting_c.cancel()


def test_a_journal_loaded_after_runs_arrived_keeps_them_and_recovers_only_the_others():
    """A run that reached the new owner before its first load is its own (run once from its
    queue, its end written); only the stored runs it never received run again."""
    from notebooks_app.kernel.run_journal import RunJournal

    journal = RunJournal()
    arrived = {"type": "kernel.run_cell", "cellId": "c2", "requestId": "r2"}
    assert journal.add(arrived)
    stored = {"pending": [
        {"id": "r1", "message": {"type": "kernel.run_cell", "cellId": "c1", "requestId": "r1", "journalId": "r1"}, "attempts": 0},
        {"id": "r2", "message": dict(arrived, journalId="r2"), "attempts": 0},
    ], "done": ["r0"]}
    recovered = journal.load(stored)
    assert [entry["id"] for entry in recovered] == ["r1"] and recovered[0]["attempts"] == 1
    assert [entry["id"] for entry in journal.pending] == ["r1", "r2"]
    assert not journal.add({"type": "kernel.run_cell", "cellId": "c0", "requestId": "r0"}), "done before: not run again"
    journal.finish(arrived)
    assert [entry["id"] for entry in journal.state()["pending"]] == ["r1"] and "r2" in journal.state()["done"]


def test_a_journal_takes_integer_request_ids():
    from notebooks_app.kernel.run_journal import RunJournal

    journal = RunJournal()
    message = {"type": "kernel.run_cell", "cellId": "c", "requestId": 7}
    assert journal.add(message) and not journal.add(dict(message))
    journal.finish(message)
    assert journal.state() == {"pending": [], "done": [7]}
