"""The lifecycle of a worker's execution processes (`ProcessPool`): which may start, which wait,
which stop and why (docs/operations.md#kernel-lifecycle).

* **Idle stop**: a process with no run, edit or input change for `idle_seconds` is stopped; never
  while its notebook handles a message (a cell running), and its clock restarts when that ends.
* **Caps**: at most `max_processes` live processes in this worker and `user_max` per person who
  started one.  A start over a cap first stops the least recently used idle process (of that
  person, for the person's cap); when every one is busy the start waits, **pending**, in order.
* **Memory**: the resident memory of every process tree is measured each tick; one over its own
  limit is killed with a clear error, and over the worker's high watermark idle processes are
  stopped, least recently used first, down to the low one.
* **Start storms**: at most `start_concurrency` processes start at once.

It holds `ExecutionHost`s (execution.py) and never touches cells: a host's `evict(cause, reason)`
goes through its notebook's own queue (session.py), so a stop is never in the middle of a cascade.
"""
import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

MB = 1024 * 1024

# Why a process stopped (the `cause` of kernel_status, history and log lines).
IDLE, EVICTED, MEMORY, OVER_LIMIT, DRAIN, OPERATOR = "idle", "evicted", "memory", "over_limit", "drain", "operator"


def host_memory_mb():
    """This host's physical memory, in MB (the defaults of the caps and watermarks follow it)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MB
    except (ValueError, OSError, AttributeError):
        return 4096


@dataclass(frozen=True)
class PoolLimits:
    idle_seconds: float = 30 * 60.0
    max_processes: int = 8
    user_max: int = 5
    start_concurrency: int = 2
    memory_high_mb: int = 0  # 0: no watermark
    memory_low_mb: int = 0
    process_memory_mb: int = 0  # one process tree's resident memory; 0: no limit here (rlimits still apply)
    tick_seconds: float = 2.0

    @classmethod
    def defaults(cls, *, idle_minutes=30.0, max_processes=None, user_max=5, start_concurrency=2, high_mb=None, low_mb=None, process_mb=0):
        """Caps and watermarks from the host's memory where not given: a process per 512 MB of
        half the memory (an idle one takes 30 - 100 MB; a working one far more), stops from 70 %
        of it down to 60 %."""
        total = host_memory_mb()
        max_processes = max_processes or max(2, total // 2 // 512)
        high = high_mb if high_mb is not None else total * 70 // 100
        low = low_mb if low_mb is not None else min(high, total * 60 // 100)
        idle = max(1.0, idle_minutes * 60.0)
        return cls(
            idle_seconds=idle,
            max_processes=max_processes,
            user_max=user_max,
            start_concurrency=max(1, start_concurrency),
            memory_high_mb=high,
            memory_low_mb=min(low, high),
            process_memory_mb=process_mb,
            tick_seconds=min(2.0, max(0.5, idle / 4)),  # psutil over a hundred processes: ~10 ms
        )


def tree_rss(pid, nice=0):
    """Resident memory, in bytes, of process `pid` and every process under it (the sandbox's
    bubblewrap, the child, what user code spawned); 0 when it is gone.  With `nice`, each of
    their sessions' autogroups is given that nice too (`deprioritize`)."""
    import psutil  # noqa: PLC0415 - the worker's alone

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    if nice:
        deprioritize([process.pid for process in processes], nice)
    return total


def deprioritize(pids, nice):
    """Give the sessions of `pids` the autogroup nice `nice`.  Where the kernel groups CPU time by
    session (sched_autogroup, on by default on desktops and many servers), a process's own nice
    only counts within its session's group, and every execution process has a session of its
    own (the sandbox's --new-session): without this, KERNEL_NICE would change nothing there
    (bench/lifecycle.py measured 1.4x the edit latency beside a CPU hog, nice or not).  Applied
    again at every tick of the pool, so a session user code makes (os.setsid) is caught within
    one.  Best effort: no autogroups, or no right to them, leaves the plain nice."""
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/autogroup", "w") as autogroup:
                autogroup.write(str(nice))


class StartWithdrawn(Exception):
    """A start that waited for a place was given up (Stop pressed while pending)."""


class _Waiter:
    __slots__ = ("host", "event", "blocked_by", "withdrawn")

    def __init__(self, host):
        self.host = host
        self.event = asyncio.Event()
        self.blocked_by = None  # "worker" | "user" while it cannot start
        self.withdrawn = False


class ProcessPool:
    def __init__(self, limits, *, clock=time.monotonic, measure=tree_rss):
        self.limits = limits
        self.clock = clock
        self.measure = measure  # pid -> resident bytes of its tree
        self.live = {}  # notebook id -> ExecutionHost whose process runs or is starting
        self.memory = {}  # notebook id -> resident bytes at the last tick
        self._stopping = set()  # notebook ids whose stop is on its way
        self._waiting = []  # _Waiter, in arrival order
        self._starting = asyncio.Semaphore(limits.start_concurrency)
        self._task = None

    # --- starting -------------------------------------------------------------------------------
    async def admit(self, host):
        """A place for `host`'s process under both caps, before it starts: stops idle processes
        over a cap (least recently used first) or waits, pending, until one is free."""
        if host.notebook_id in self.live:
            return
        waiter = _Waiter(host)
        self._waiting.append(waiter)
        try:
            while True:
                if waiter.withdrawn:
                    raise StartWithdrawn(host.notebook_id)
                verdict, victim = self._verdict(waiter)
                if verdict == "go":
                    self.live[host.notebook_id] = host
                    return
                if verdict == "evict":
                    cause = EVICTED
                    scope = "its user's" if waiter.blocked_by == "user" else "this worker's"
                    reason = f"Kernel stopped to make room for another notebook ({scope} limit of {self._cap(waiter)} running kernels); the next run starts it again"
                    await self._evict(victim, cause, reason)
                    continue
                self._announce_positions()
                waiter.event.clear()
                await waiter.event.wait()
        finally:
            self._waiting.remove(waiter)
            host.pending(None)
            self._announce_positions()
            self._wake()  # those behind it look again

    def withdraw(self, host):
        """`host`'s start no longer waits for a place (its admit raises StartWithdrawn)."""
        for waiter in self._waiting:
            if waiter.host is host:
                waiter.withdrawn = True
                waiter.event.set()
                return True
        return False

    @contextlib.asynccontextmanager
    async def starting(self):
        """At most `start_concurrency` processes start at once (a failover cannot storm)."""
        async with self._starting:
            yield

    def _cap(self, waiter):
        return self.limits.user_max if waiter.blocked_by == "user" else self.limits.max_processes

    def _verdict(self, waiter):
        """("go", None), ("evict", host) or ("wait", None) for `waiter`, now."""
        host, user = waiter.host, waiter.host.user
        candidates = [h for h in self.live.values() if h.notebook_id not in self._stopping]
        if user and self.limits.user_max and sum(1 for h in self.live.values() if h.user == user) >= self.limits.user_max:
            waiter.blocked_by = "user"
            victim = self._least_recently_used(h for h in candidates if h.user == user)
            return ("evict", victim) if victim is not None else ("wait", None)
        # First come, first served for the worker's cap: nobody passes a start waiting for it.
        for earlier in self._waiting:
            if earlier is waiter:
                break
            if earlier.blocked_by == "worker":
                waiter.blocked_by = "worker"
                return "wait", None
        if len(self.live) >= self.limits.max_processes:
            waiter.blocked_by = "worker"
            victim = self._least_recently_used(candidates)
            return ("evict", victim) if victim is not None else ("wait", None)
        waiter.blocked_by = None
        return "go", None

    def _least_recently_used(self, hosts):
        idle = [h for h in hosts if not h.busy]
        return min(idle, key=lambda h: h.last_active, default=None)

    def _announce_positions(self):
        position = 0
        for waiter in self._waiting:
            if waiter.blocked_by is None:
                continue
            position += 1
            if waiter.blocked_by == "user":
                why = f"you have {self.limits.user_max} notebooks' kernels running, all busy; it starts when one of them is free"
            else:
                why = f"this server's {self.limits.max_processes} kernels are all busy; it starts when one is free"
            waiter.host.pending({"position": position, "reason": why})

    def _wake(self):
        for waiter in self._waiting:
            waiter.event.set()

    # --- stopping -------------------------------------------------------------------------------
    def released(self, host):
        """`host`'s process is gone (stopped, died, closed): its place is free."""
        if self.live.get(host.notebook_id) is host:
            del self.live[host.notebook_id]
            self.memory.pop(host.notebook_id, None)
        self._wake()

    def became_idle(self, host):
        """`host`'s notebook finished handling a message: a waiter may now stop it."""
        if self._waiting:
            self._wake()

    async def _evict(self, host, cause, reason):
        """Stop `host` through its notebook's queue; False if it was no longer idle then."""
        if host.notebook_id in self._stopping:
            return False
        self._stopping.add(host.notebook_id)
        try:
            return await host.evict(cause, reason)
        finally:
            self._stopping.discard(host.notebook_id)

    async def stop(self, notebook_id, cause, reason):
        """An operator's or a drain's stop of one notebook's process, busy or not."""
        host = self.live.get(str(notebook_id))
        if host is None:
            return False
        return await host.evict(cause, reason, even_busy=True)

    # --- the ticks ------------------------------------------------------------------------------
    def run(self):
        """The pool's background task (idle stops and memory), started once on the running loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._ticks(), name="kernel-pool")

    async def close(self):
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self._task = None

    async def _ticks(self):
        while True:
            await asyncio.sleep(self.limits.tick_seconds)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the next tick tries again
                logger.exception("kernel pool tick failed")

    async def tick(self):
        """Stop what has been idle too long; measure memory and act on it."""
        now = self.clock()
        idle_minutes = self.limits.idle_seconds / 60
        for host in list(self.live.values()):
            if not host.busy and now - host.last_active >= self.limits.idle_seconds:
                reason = f"Kernel stopped after {idle_minutes:g} min idle: the next run starts it and reruns what that cell needs"
                await self._evict(host, IDLE, reason)
        await self._measure_memory()

    async def _measure_memory(self):
        hosts = [h for h in self.live.values() if h.pid is not None]
        if not hosts:
            return
        sizes = await asyncio.to_thread(lambda: [self.measure(h.pid, h.nice) for h in hosts])
        self.memory = {h.notebook_id: size for h, size in zip(hosts, sizes)}
        limit = self.limits.process_memory_mb * MB
        for host, size in zip(hosts, sizes):
            if limit and size > limit:
                reason = f"Kernel stopped: it used {size / MB:,.0f} MB, over its limit of {self.limits.process_memory_mb:,} MB (KERNEL_MEMORY_LIMIT_MB)"
                await host.kill(OVER_LIMIT, reason)
                self.memory.pop(host.notebook_id, None)
        high, low = self.limits.memory_high_mb * MB, self.limits.memory_low_mb * MB
        total = sum(self.memory.values())
        if not high or total <= high:
            return
        logger.warning("kernel processes use %.0f MB, over the high watermark of %d MB: stopping idle ones", total / MB, self.limits.memory_high_mb)
        for host in sorted(self.live.values(), key=lambda h: h.last_active):
            if total <= low:
                break
            if host.busy or host.notebook_id not in self.memory:
                continue
            size = self.memory[host.notebook_id]
            reason = f"Kernel stopped to free memory: this server's kernels used {total / MB:,.0f} MB, over {self.limits.memory_high_mb:,} MB; the next run starts it again"
            if await self._evict(host, MEMORY, reason):
                total -= size

    # --- what operators see ---------------------------------------------------------------------
    def describe(self):
        """Each live process: notebook, who started it, idle seconds, memory, busy (manage.py kernels)."""
        now = self.clock()
        return [
            {
                "notebook": host.notebook_id,
                "user": host.user or "",
                "idle": round(now - host.last_active, 1),
                "busy": host.busy,
                "rss_mb": round(self.memory.get(host.notebook_id, 0) / MB, 1),
                "pid": host.pid,
            }
            for host in self.live.values()
        ] + [
            {"notebook": w.host.notebook_id, "user": w.host.user or "", "pending": True}
            for w in self._waiting if w.blocked_by is not None
        ]
