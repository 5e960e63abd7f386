"""Fuzzed frames against the production shape: a private PostgreSQL, Redis, Daphne and kernel
worker (tests/faults.py), SOCKETS sockets as viewer-or-owner sending FRAMES random frames in
all (schema-shaped messages with odd values, random JSON, text, binary), each socket ending with
a `sync` probe whose answer shows that all its frames were handled.  Reports frames/s up to the
last probe's answer, the answers by error code, sockets the server closed, tracebacks in the
server logs (exit status 1 if any), the floor of the other benchmarks (bench/harness.py), and
the latency of one malformed frame's `error`.

    scripts/test is not needed: `.venv/bin/python -m bench.fuzz [FRAMES] [SOCKETS]` (--help)
"""
import argparse
import asyncio
import collections
import datetime
import json
import logging
import random
import statistics
import sys
import time
import uuid

import websockets

from notebooks_app.protocol import MESSAGE_SCHEMAS
from bench.harness import FLOOR_SAMPLES, _pg_updates, _redis_round_trips, machine, summary
from tests.faults import Cluster

logger = logging.getLogger("bench.fuzz")
ANSWER_TIMEOUT = 3000
ODD = [None, True, 0, -1, 10**20, 1.5, "", "a = 1", "\ud800", "a\x00b", "x" * 2000, [], {}, [1, {"a": None}], "df_1", "sql", "python"]


def random_frame(rng, cell_ids):
    roll = rng.random()
    if roll < 0.1:
        return rng.randbytes(rng.randint(0, 64))
    if roll < 0.2:
        return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(0, 40)))
    kind = rng.choice(sorted(MESSAGE_SCHEMAS) + ["nope", ""])
    message = {"type": kind}
    for name in MESSAGE_SCHEMAS.get(kind, {}):
        if rng.random() < 0.7:
            message[name] = rng.choice(cell_ids + [str(uuid.uuid4())] + ODD) if "Id" in name else rng.choice(ODD)
    if rng.random() < 0.2:
        message[rng.choice(["extra", "\ud800", "code"])] = rng.choice(ODD)
    if rng.random() < 0.5:
        message["requestId"] = rng.choice(ODD)
    return json.dumps(message)


async def open_socket(cluster, notebook, attempts=5):
    """A socket on `notebook` that has its notebook_state (a handshake refused by a busy
    Daphne is tried again)."""
    url = cluster.url.replace("http://", "ws://") + f"/ws/notebooks/{notebook}/"
    for attempt in range(attempts):
        try:
            ws = await websockets.connect(url, additional_headers={"Cookie": cluster.cookie, "Origin": cluster.url}, max_size=None, open_timeout=60)
            await ws.recv()  # notebook_state
            return ws
        except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(1)


async def one_socket(ws, frames, seed, answers, finished):
    """Send `frames` fuzzed frames, then a `sync` probe, and read until the probe's answer: the
    consumer handles a socket's frames in order, so every frame has been dealt with by then.
    Returns the time of that answer (None if the server closed the socket)."""
    rng = random.Random(seed)
    probe = f"probe-{seed}"

    async def reader():
        async for text in ws:
            frame = json.loads(text)
            if frame.get("requestId") == probe:  # a notebook_state, or rate_limited after a burst
                answers[f"probe: {frame.get('code') or frame.get('type')}"] += 1
                return time.monotonic()
            answers[frame.get("code") or frame.get("type")] += 1

    reading = asyncio.create_task(reader())
    try:
        for _ in range(frames):
            await ws.send(random_frame(rng, []))
        await ws.send(json.dumps({"type": "sync", "requestId": probe}))
        done = await asyncio.wait_for(reading, ANSWER_TIMEOUT)
        if done is not None:
            finished.append(done)
        return done
    except websockets.exceptions.ConnectionClosed as exc:
        answers[f"closed {exc.rcvd.code if exc.rcvd else '?'}"] += 1
    except asyncio.TimeoutError:
        answers["probe not answered"] += 1
    finally:
        reading.cancel()
        await ws.close()


async def refusal_latency(cluster, notebook, samples):
    """ms from sending one malformed frame to its `error`, one at a time on one socket (the
    consumer alone answers it: no database, no kernel)."""
    url = cluster.url.replace("http://", "ws://") + f"/ws/notebooks/{notebook}/"
    out = []
    async with websockets.connect(url, additional_headers={"Cookie": cluster.cookie, "Origin": cluster.url}, max_size=None) as ws:
        await ws.recv()
        for i in range(samples):
            start = time.perf_counter()
            await ws.send(json.dumps({"type": "run_cell", "cellId": "not a uuid", "requestId": i}))
            while json.loads(await ws.recv()).get("requestId") != i:
                pass
            out.append((time.perf_counter() - start) * 1000)
            await asyncio.sleep(0.005)  # under the rate limit
    return out


async def main(args):
    cluster = Cluster()
    try:
        notebook = cluster.new_notebook("fuzz bench")
        floor_redis = statistics.median(await _redis_round_trips(cluster.redis.url, FLOOR_SAMPLES))
        floor_pg = statistics.median(await asyncio.to_thread(_pg_updates, cluster.pg.url.replace("postgres://", "postgresql://"), notebook, FLOOR_SAMPLES))
        floor = floor_redis + floor_pg
        logger.info("%s · %s", datetime.datetime.now().isoformat(timespec="minutes"), machine())
        logger.info("floor: Redis PUBLISH->SUBSCRIBE %.3f ms + committed PostgreSQL UPDATE %.3f ms = %.3f ms", floor_redis, floor_pg, floor)
        refusals = summary(await refusal_latency(cluster, notebook, args.latency_samples))
        logger.info(
            "one malformed frame -> its error, one at a time: median %.3f ms (%.1fx floor), p99 %.3f, max %.3f (n=%d)",
            refusals["median"], refusals["median"] / floor, refusals["p99"], refusals["max"], refusals["n"],
        )
        answers = collections.Counter()
        finished = []
        per_socket = args.frames // args.sockets
        sockets = []
        for first in range(0, args.sockets, 50):  # connected 50 at a time, before the clock starts
            sockets += await asyncio.gather(*(open_socket(cluster, notebook) for _ in range(first, min(args.sockets, first + 50))))
        start = time.monotonic()
        await asyncio.gather(*(one_socket(ws, per_socket, seed, answers, finished) for seed, ws in enumerate(sockets)))
        total = per_socket * args.sockets
        elapsed = (max(finished) if finished else time.monotonic()) - start
        logger.info(
            "%d frames over %d sockets, every one answered or handled, in %.1f s: %.0f frames/s (%.3f ms of server time a frame, %.1fx floor); %d/%d sockets finished",
            total, args.sockets, elapsed, total / elapsed, elapsed * 1000 / total, elapsed * 1000 / total / floor, len(finished), args.sockets,
        )
        logger.info("answers: %s", dict(answers.most_common()))
        tracebacks = cluster.tracebacks()
        logger.info("tracebacks in the server logs: %s (total %d)", tracebacks, sum(tracebacks.values()))
        return 1 if sum(tracebacks.values()) or len(finished) < args.sockets else 0
    finally:
        cluster.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description="Fuzzed frames against a private production shape: frames/s, answers by code, tracebacks.")
    parser.add_argument("frames", type=int, nargs="?", default=100_000, help="frames in all (default 100000)")
    parser.add_argument("sockets", type=int, nargs="?", default=200, help="sockets sending them at once (default 200)")
    parser.add_argument("--latency-samples", type=int, default=200, help="malformed frames sent one at a time for the latency line (default 200)")
    sys.exit(asyncio.run(main(parser.parse_args())))
