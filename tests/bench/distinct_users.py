#!/usr/bin/env python3
"""Connects N SSE subscribers to a Herald in --dev mode, each as a user of its own
(`?user=u<i>`), at most 200 connecting at a time, and prints how long until every one had its
response head. For measuring what a per-user limit costs at connect time (BENCHMARKS.md, "The
per-user cap across instances"); `herald bench` subscribes everyone as the same client.

Usage: tests/bench/distinct_users.py PORT N
"""
import asyncio
import sys
import time

IN_FLIGHT = 200


async def subscribe(port, i, gate, open_streams):
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /events?topic=t&user=u{i} HTTP/1.1\r\nHost: herald\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"subscriber {i} was answered: {head.decode(errors='replace')}")
        open_streams.append(writer)


async def main(port, n):
    gate = asyncio.Semaphore(IN_FLIGHT)
    open_streams = []
    started = time.perf_counter()
    await asyncio.gather(*(subscribe(port, i, gate, open_streams) for i in range(n)))
    print(f"{n} users connected in {time.perf_counter() - started:.3f} s")
    for writer in open_streams:
        writer.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
