"""The conftest guard: tests may talk to loopback only."""

from __future__ import annotations

import socket

import pytest


def test_connect_to_non_loopback_address_is_blocked() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        # conftest's NetworkBlocked (a RuntimeError, so code catching OSError cannot hide it).
        with pytest.raises(RuntimeError, match="must not use the network"):
            sock.connect(("10.255.255.1", 80))


def test_connect_to_loopback_is_allowed() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
