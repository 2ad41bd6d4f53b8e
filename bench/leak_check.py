"""Look for Python objects that calls leave behind, with tracemalloc.

The server and the fake OpenAI run in this process. N translated calls are
opened and ended at the signaling level, each opening and closing two
realtime sessions upstream but no WebRTC media. The report gives the memory
still allocated afterwards by frames of the product's own packages.

    .venv/bin/python -m bench.leak_check --calls 300
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import tracemalloc
from pathlib import Path

import aiohttp
from aiohttp import web

from server.app import create_app, make_runner
from server.config import Settings
from tests.fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
PRODUCT_DIRS = tuple(str(ROOT / name) for name in ("server", "signaling", "media"))
WARM_UP_CALLS = 50
TIMEOUT_S = 5.0


async def expect(ws: aiohttp.ClientWebSocketResponse, type_: str) -> None:
    """Read messages until one of `type_` arrives (bounded by TIMEOUT_S each)."""
    for _ in range(100):
        message = await ws.receive_json(timeout=TIMEOUT_S)
        if message["type"] == type_:
            return
    raise TimeoutError(f"no {type_!r} message in 100 messages")


async def one_call(session: aiohttp.ClientSession, url: str) -> None:
    first = await session.ws_connect(url)
    second = await session.ws_connect(url)
    await first.send_str(json.dumps({"type": "join", "language": "en"}))
    await second.send_str(json.dumps({"type": "join", "language": "fr"}))
    await expect(first, "translation")
    await first.send_str(json.dumps({"type": "leave"}))
    await expect(second, "partner_left")
    await first.close()
    await second.close()


def product_frames(stat: tracemalloc.StatisticDiff) -> bool:
    files = [frame.filename for frame in stat.traceback]
    ours = any(name.startswith(PRODUCT_DIRS) for name in files)
    return ours and not any("fake_openai" in name for name in files)


async def run(calls: int) -> None:
    fake = FakeOpenAI()
    await fake.start()
    settings = Settings.from_env(
        {
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-leak-check",
            "WS_CONNECTS_PER_MIN": "100000",
            "LOG_LEVEL": "WARNING",
        }
    )
    runner = make_runner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"ws://127.0.0.1:{runner.addresses[0][1]}/ws"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(WARM_UP_CALLS):
                await one_call(session, url)
            gc.collect()
            tracemalloc.start(25)
            before = tracemalloc.take_snapshot()
            for index in range(calls):
                await one_call(session, url)
                if (index + 1) % 50 == 0:
                    print(f"{index + 1}/{calls} calls", flush=True)
            await asyncio.sleep(2)
            gc.collect()
            after = tracemalloc.take_snapshot()
    finally:
        await runner.cleanup()
        await fake.stop()
    stats = after.compare_to(before, "traceback")
    ours = [stat for stat in stats if product_frames(stat)]
    total_kb = sum(stat.size_diff for stat in stats) / 1024
    ours_kb = sum(stat.size_diff for stat in ours) / 1024
    print(f"after {calls} calls: {total_kb:.0f} KB more in all, of which")
    print(f"{ours_kb:.0f} KB allocated under server/, signaling/ or media/")
    for stat in ours[:5]:
        print(f"  {stat.size_diff / 1024:.1f} KB in {stat.count_diff} blocks at")
        for line in stat.traceback.format()[-4:]:
            print("   ", line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300, help="calls to measure")
    args = parser.parse_args()
    asyncio.run(run(max(1, min(args.calls, 10_000))))


if __name__ == "__main__":
    main()
