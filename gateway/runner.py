"""Runs a gateway process: event loop choice, signal handling, logging."""

from __future__ import annotations

import asyncio
import signal

from gateway.logs import configure_logging
from gateway.server import serve_until_signalled
from gateway.settings import GatewaySettings
from gateway.tracing import configure_tracing


def run_gateway(settings: GatewaySettings) -> None:
    """Serve until SIGTERM or SIGINT, then drain in-flight calls and exit."""
    configure_logging(settings.log_level, settings.log_format)
    configure_tracing(settings.tracing)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve_until_signalled(settings, stop)

    if settings.use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
