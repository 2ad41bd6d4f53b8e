"""Run the fake OpenAI Realtime Translation server on 127.0.0.1 until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from .server import DEFAULT_MODEL, FakeOpenAI, FakeOptions

logger = logging.getLogger(__name__)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fake_openai",
        description=(
            "Serve a fake OpenAI Realtime Translation API on 127.0.0.1. It echoes "
            "input audio as the translation. Stop it with SIGINT or SIGTERM."
        ),
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8765,
        help="TCP port to listen on (0 picks a free port)",
    )
    parser.add_argument(
        "--lag-ms",
        type=int,
        default=0,
        help="delay in ms between input audio and its translated output",
    )
    parser.add_argument(
        "--pacing",
        choices=("realtime", "burst"),
        default="realtime",
        help=(
            "realtime: release output as input arrives; burst: hold each phrase "
            "and release it faster than real time"
        ),
    )
    parser.add_argument(
        "--burst-speedup",
        type=float,
        default=8.0,
        help="speed-up over real time of burst output",
    )
    parser.add_argument(
        "--expire-after-s",
        type=float,
        default=None,
        help="expire each session after this many seconds (default: never)",
    )
    parser.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="MODEL",
        help=f"accepted model name; repeat for more (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="logging level",
    )
    return parser.parse_args(argv)


async def _serve(options: FakeOptions, port: int) -> None:
    fake = FakeOpenAI(options)
    await fake.start(host="127.0.0.1", port=port)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, stop_requested.set)
    print(f"fake OpenAI Realtime Translation: base_url={fake.base_url}", flush=True)
    try:
        await stop_requested.wait()
    finally:
        logger.info("stopping")
        await fake.stop()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        options = FakeOptions(
            lag_ms=args.lag_ms,
            pacing=args.pacing,
            burst_speedup=args.burst_speedup,
            expire_after_s=args.expire_after_s,
            models=frozenset(args.models or [DEFAULT_MODEL]),
        )
    except ValueError as exc:
        raise SystemExit(f"invalid option: {exc}") from exc
    asyncio.run(_serve(options, args.port))


if __name__ == "__main__":
    main()
