"""Start the server: `python -m server`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from server.app import create_app, drain, make_runner
from server.config import SETTINGS_HELP, Settings, SettingsError
from server.logs import configure_logging

logger = logging.getLogger("server")


def main(argv: list[str] | None = None) -> int:
    epilog = "settings (environment variables or .env in the working folder):\n"
    epilog += "\n".join(
        f"  {s.name:<30} {s.help}" + (f" (default {s.default})" if s.default else "")
        for s in SETTINGS_HELP
    )
    parser = argparse.ArgumentParser(
        prog="python -m server",
        description="Real-time speech-translation call server.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        default=None,
        help="file of settings (default: .env in the working folder, if any)",
    )
    args = parser.parse_args(argv)
    if args.env_file is not None and not args.env_file.is_file():
        print(
            f"error: --env-file {str(args.env_file)!r} was not found", file=sys.stderr
        )
        return 2
    try:
        settings = Settings.from_env(os.environ, args.env_file or Path(".env"))
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", settings.host, settings.port, exc)
        return 1
    return 0


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then drain calls and stop."""
    app = create_app(settings)
    runner = make_runner(app)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        logger.info("listening on http://%s:%d", settings.host, settings.port)
        await stop.wait()
        await drain(app)
    finally:
        await runner.cleanup()
    logger.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
