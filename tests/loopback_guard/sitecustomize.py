"""Loaded first by every Python program the docs' tests start: sockets reach loopback only.

A block of the docs that names a host of its own (a Redis server, a real endpoint) fails with an
``OSError`` instead of sending anything off this machine, whatever address form it uses.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _check(sock: socket.socket, address: Any) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets and the like stay on this machine
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    try:
        loopback = ipaddress.ip_address(str(host).split("%", 1)[0]).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise OSError(f"the docs' tests reach loopback only, not {host}")


def guarded_connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _connect(self, address)


def guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _connect_ex(self, address)


def install() -> None:
    """Refuse every connection that does not go to loopback (idempotent)."""
    socket.socket.connect = guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign,assignment]


if __name__ == "sitecustomize":  # started as a program's site hook, not imported by a test
    install()
