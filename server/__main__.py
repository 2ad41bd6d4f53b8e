"""Start the server: `python -m server` or `callbridge`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import tempfile
from pathlib import Path

from server.app import Site, create_app, drain, make_runner
from server.config import (
    SETTINGS_HELP,
    Settings,
    SettingsError,
    env_example,
    env_file_warnings,
)
from server.logs import configure_logging
from server.tls import (
    make_self_signed,
    reload_certificate,
    server_context,
    validity_warning,
)

logger = logging.getLogger("server")


def main(argv: list[str] | None = None) -> int:
    epilog = "settings (environment variables or .env in the working folder):\n"
    epilog += "\n".join(
        f"  {s.name:<30} {s.help} (default: {s.default_text})" for s in SETTINGS_HELP
    )
    parser = argparse.ArgumentParser(
        prog="callbridge"
        if Path(sys.argv[0]).name == "callbridge"
        else "python -m server",
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
    parser.add_argument(
        "--self-signed",
        action="store_true",
        help="serve HTTPS with a throwaway certificate made at start-up, for a "
        "test on a LAN (TLS_SELF_SIGNED=true does the same)",
    )
    parser.add_argument(
        "--env-example",
        action="store_true",
        help="print every setting with its default, as in .env.example, and exit",
    )
    args = parser.parse_args(argv)
    if args.env_example:
        sys.stdout.write(env_example())
        return 0
    if args.env_file is not None and not args.env_file.is_file():
        problem = "is a folder" if args.env_file.is_dir() else "was not found"
        print(f"error: --env-file {str(args.env_file)!r} {problem}", file=sys.stderr)
        return 2
    env_file = args.env_file or Path(".env")
    try:
        environ = dict(os.environ)
        if args.self_signed:
            environ["TLS_SELF_SIGNED"] = "true"
        settings = Settings.from_env(environ, env_file)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    for warning in env_file_warnings(env_file):
        logger.warning("%s", warning)
    with tempfile.TemporaryDirectory(prefix="callbridge-tls-") as folder:
        try:
            ssl_context = tls_context(settings, Path(folder))
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            asyncio.run(serve(settings, ssl_context))
        except OSError as exc:
            logger.error(
                "cannot listen on %s:%d: %s", settings.host, settings.port, exc
            )
            return 1
    return 0


def tls_context(settings: Settings, folder: Path) -> ssl.SSLContext | None:
    """Return the TLS context for the listening socket, or None for plain HTTP.

    A self-signed certificate is written to `folder` and lives as long as it.
    """
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        context = server_context(settings.tls_cert_file, settings.tls_key_file)
        warning = validity_warning(settings.tls_cert_file)
        if warning is not None:
            logger.warning("%s", warning)
        return context
    if not settings.tls_self_signed:
        return None
    certificate = make_self_signed(folder)
    logger.warning(
        "TLS with a self-signed certificate made at start-up, for tests only: "
        "browsers warn before they open the page. Names: %s. SHA-256 "
        "fingerprint: %s",
        ", ".join(certificate.names),
        certificate.fingerprint,
    )
    return server_context(certificate.cert_file, certificate.key_file)


def reload_tls(settings: Settings, context: ssl.SSLContext | None) -> None:
    """Load TLS_CERT_FILE and TLS_KEY_FILE again, on SIGHUP after a renewal."""
    cert_file, key_file = settings.tls_cert_file, settings.tls_key_file
    if context is None or cert_file is None or key_file is None:
        logger.info("SIGHUP: no TLS_CERT_FILE to reload")
        return
    try:
        fingerprint = reload_certificate(context, cert_file, key_file)
    except (SettingsError, OSError, ValueError) as exc:
        logger.error(
            "SIGHUP: TLS certificate not reloaded, so the previous one stays in "
            "use: %s. Fix the files and send SIGHUP again.",
            exc,
        )
        return
    logger.info(
        "SIGHUP: TLS certificate reloaded from %s, SHA-256 fingerprint %s",
        cert_file,
        fingerprint,
    )
    warning = validity_warning(cert_file)
    if warning is not None:
        logger.warning("%s", warning)


async def serve(settings: Settings, ssl_context: ssl.SSLContext | None = None) -> None:
    """Run until SIGTERM or SIGINT, then drain calls and stop."""
    app = create_app(settings)
    runner = make_runner(app)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload_tls, settings, ssl_context)
    try:
        site = Site(
            runner,
            settings.host,
            settings.port,
            ssl_context=ssl_context,
            handshake_timeout_s=settings.request_timeout_s,
        )
        await site.start()
        scheme = "https" if ssl_context is not None else "http"
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        if settings.host in ("0.0.0.0", "::"):
            logger.info(
                "listening on %s://%s:%d on every interface; on this machine, "
                "open %s://localhost:%d/",
                scheme,
                host,
                settings.port,
                scheme,
                settings.port,
            )
        else:
            logger.info("listening on %s://%s:%d", scheme, host, settings.port)
        await stop.wait()
        # A task of its own, so the call ids that draining puts in the log
        # context do not stay on the lines logged after it.
        await asyncio.create_task(drain(app))
    finally:
        await runner.cleanup()
    logger.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
