"""Recall latency through MCP vs a direct `MemoryStore.search`, on the same data.

One database, N facts in one namespace (HashingEmbedder, 384 dims), the same queries, k=5.
Four paths take turns round by round (so load elsewhere on the machine hits them alike):

- direct: `store.search(query, k=5)` in this process;
- MCP in-process: the SDK's `Client(server)` on `build_server(store)` (no transport: the
  cost of the SDK's dispatch, argument validation and JSON rendering);
- MCP stdio: `python -m memstate_pg.mcp` spawned, JSON-RPC over pipes;
- MCP HTTP: the same server over streamable HTTP on 127.0.0.1.

Each prints p50 and p95 in milliseconds and the p50 ratio to direct.

    python -m benchmarks.mcp_recall                    # embedded PostgreSQL, temp dir
    MEMSTATE_DSN=postgresql://… python -m benchmarks.mcp_recall --facts 10000 --calls 400
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters

from benchmarks.common import bench_database
from memstate_pg import Fact, HashingEmbedder, MemoryStore
from memstate_pg.mcp import build_server

ROOT = Path(__file__).resolve().parents[1]
NS = "bench"
WORDS = [
    "coffee",
    "tea",
    "paris",
    "berlin",
    "sushi",
    "pizza",
    "running",
    "chess",
    "piano",
    "violin",
    "python",
    "rust",
    "garden",
    "ocean",
    "mountain",
    "winter",
    "summer",
    "cat",
    "dog",
    "novel",
    "film",
    "jazz",
    "museum",
    "bicycle",
    "train",
]


def seed(store: MemoryStore, n: int, rng: random.Random) -> None:
    for start in range(0, n, 500):
        facts = [
            Fact(type="note", payload={"text": " ".join(rng.choices(WORDS, k=6)), "i": i})
            for i in range(start, min(n, start + 500))
        ]
        store.commit_many(facts, namespace=NS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def wait_listening(port: int, proc: subprocess.Popen[bytes], bound: float = 60) -> None:
    deadline = time.monotonic() + bound
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the HTTP server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not listen in time") from None
            time.sleep(0.2)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def measure(dsn: str, calls: int, rounds: int, queries: list[str]) -> dict[str, list[float]]:
    store = MemoryStore(dsn, namespace=NS, embedder=HashingEmbedder(dim=384))
    port = free_port()
    http = subprocess.Popen(
        [sys.executable, "-m", "memstate_pg.mcp", "--dsn", dsn, "--namespace", NS]
        + ["--http", "--port", str(port)],
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    stdio = StdioServerParameters(
        command=sys.executable,
        args=["-m", "memstate_pg.mcp", "--dsn", dsn, "--namespace", NS],
        env=child_env(),
    )
    times: dict[str, list[float]] = {}
    try:
        wait_listening(port, http)
        async with contextlib.AsyncExitStack() as stack:
            inproc = await stack.enter_async_context(Client(build_server(store)))
            piped = await stack.enter_async_context(Client(stdio))
            web = await stack.enter_async_context(Client(f"http://127.0.0.1:{port}/mcp"))

            def via(client: Client) -> Callable[[str], Awaitable[object]]:
                async def call(q: str) -> object:
                    result = await client.call_tool("recall", {"query": q, "k": 5})
                    assert not result.is_error, result
                    return result

                return call

            async def direct(q: str) -> object:
                return store.search(q, k=5)

            paths = {
                "direct store.search": direct,
                "MCP in-process (SDK Client)": via(inproc),
                "MCP stdio (subprocess)": via(piped),
                "MCP streamable HTTP (127.0.0.1)": via(web),
            }
            for fn in paths.values():  # warm up: connections, prepared plans
                for q in queries[:10]:
                    await fn(q)
            per_round = max(1, calls // rounds)
            for r in range(rounds):
                for name, fn in paths.items():
                    for i in range(per_round):
                        q = queries[(r * per_round + i) % len(queries)]
                        t0 = time.perf_counter()
                        await fn(q)
                        times.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
    finally:
        http.terminate()
        try:
            http.wait(10)
        except subprocess.TimeoutExpired:
            http.kill()
        store.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=200, help="recall calls per path")
    parser.add_argument("--rounds", type=int, default=4, help="paths take turns this often")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    queries = [" ".join(rng.choices(WORDS, k=3)) for _ in range(args.calls)]
    with bench_database("memstate_bench_mcp") as dsn:
        with MemoryStore(dsn, embedder=HashingEmbedder(dim=384)) as setup:
            setup.migrate()
            seed(setup, args.facts, rng)
        times = anyio.run(measure, dsn, args.calls, args.rounds, queries)
    base = statistics.median(times["direct store.search"])
    print(f"recall k=5 over {args.facts} facts, {args.calls} calls per path ({args.rounds} rounds)")
    print(f"{'path':34} {'p50 ms':>8} {'p95 ms':>8} {'p50 vs direct':>14}")
    for name, values in times.items():
        p50 = statistics.median(values)
        print(f"{name:34} {p50:8.2f} {pct(values, 95):8.2f} {p50 / base:13.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
