"""One aiohttp application listening on ``host:port`` until it is closed.

The operator endpoints (``engine.monitoring.OpsServer``) and the public gallery
(``gallery.server.GalleryServer``) are both one of these, each on its own port.
"""

from __future__ import annotations

import os
from typing import Self

from aiohttp import web


class ListenError(OSError):
    """A listener's address cannot be bound; the message names it and the setting to change."""


class WebListener:
    """An application served on ``host:port``: ``await listen(app, host, port)``, later
    ``await close()``."""

    #: The setting that chooses the port, named when the port cannot be bound.
    port_setting = "the port"

    def __init__(self, runner: web.AppRunner, host: str, port: int):
        self._runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """``http://host:port`` of the listener (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def addresses(self) -> list[tuple]:
        """The socket addresses it listens on (``getsockname()`` of each socket)."""
        return list(self._runner.addresses)

    @classmethod
    async def listen(cls, app: web.Application, host: str, port: int) -> Self:
        """Serve ``app`` on ``host:port`` (port 0: a free one, read back from ``.port``).

        Raises:
            ListenError: the address cannot be bound (in use, not this machine's); nothing is
                left running.
        """
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException as exc:
            await runner.cleanup()
            if isinstance(exc, OSError):
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                raise ListenError(
                    exc.errno,
                    f"Cannot listen on {host}:{port} ({reason}): free that port or choose "
                    f"another in {cls.port_setting} (0 = off)",
                ) from exc
            raise
        bound = runner.addresses[0][1] if runner.addresses else port
        return cls(runner, host, bound)

    async def close(self) -> None:
        """Stop listening (a second call does nothing)."""
        await self._runner.cleanup()
