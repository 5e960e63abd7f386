"""Fuzzed frames against the production shape: a private PostgreSQL, Redis, Daphne and kernel
worker (tests/faults.py), SOCKETS sockets as viewer-or-owner sending FRAMES random frames in
all (schema-shaped messages with odd values, random JSON, text, binary).  Reports frames/s, the
answers by error code, sockets the server closed, and tracebacks in the server logs.

    scripts/test is not needed: `.venv/bin/python -m bench.fuzz [FRAMES] [SOCKETS]`
"""
import asyncio
import collections
import json
import logging
import random
import sys
import time
import uuid

import websockets

from notebooks_app.protocol import MESSAGE_SCHEMAS
from tests.faults import Cluster

logger = logging.getLogger("bench.fuzz")
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


async def one_socket(cluster, notebook, frames, seed, answers):
    rng = random.Random(seed)
    url = cluster.url.replace("http://", "ws://") + f"/ws/notebooks/{notebook}/"
    async with websockets.connect(url, additional_headers={"Cookie": cluster.cookie, "Origin": cluster.url}, max_size=None) as ws:
        await ws.recv()  # notebook_state

        async def reader():
            async for text in ws:
                frame = json.loads(text)
                answers[frame.get("code") or frame.get("type")] += 1

        reading = asyncio.create_task(reader())
        try:
            for _ in range(frames):
                await ws.send(random_frame(rng, []))
            await asyncio.sleep(2)
        except websockets.exceptions.ConnectionClosed as exc:
            answers[f"closed {exc.rcvd.code if exc.rcvd else '?'}"] += 1
        reading.cancel()


async def main(total, sockets):
    cluster = Cluster()
    try:
        notebook = cluster.new_notebook("fuzz bench")
        answers = collections.Counter()
        start = time.monotonic()
        await asyncio.gather(*(one_socket(cluster, notebook, total // sockets, seed, answers) for seed in range(sockets)))
        elapsed = time.monotonic() - start - 2
        logger.info("%d frames over %d sockets in %.1f s: %.0f frames/s", total, sockets, elapsed, total / elapsed)
        logger.info("answers: %s", dict(answers.most_common()))
        logger.info("tracebacks in the server logs: %s", cluster.tracebacks())
    finally:
        cluster.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    asyncio.run(main(total, int(sys.argv[2]) if len(sys.argv) > 2 else 200))
