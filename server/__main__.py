"""Start the server: `python -m server`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from server.app import create_app
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
        "--env-file", type=Path, default=Path(".env"), help="file of settings"
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ, args.env_file)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    logger.info("listening on http://%s:%d", settings.host, settings.port)
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
