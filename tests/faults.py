"""Helpers of the fault tests: :func:`wait_for` a condition, and TCP proxies to PostgreSQL that
misbehave on purpose (loopback only).

:class:`Proxy` relays every connection made to :attr:`Proxy.dsn` to the real server, one pair of
sockets per connection; a subclass decides, chunk by chunk, what to pass on
(:meth:`Proxy.client_sends`, :meth:`Proxy.server_sends`).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo


def wait_for(condition: Any, timeout: float, what: str) -> None:
    """Poll ``condition()`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Proxy:
    """Relay connections to the server of ``dsn``; :attr:`dsn` is the proxy's own DSN."""

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        host, port = str(params.get("host") or "/tmp"), str(params.get("port") or "5432")
        if host.startswith("/"):
            self.upstream: Any = (socket.AF_UNIX, f"{host}/.s.PGSQL.{port}")
        else:
            self.upstream = (socket.AF_INET, (host, int(port)))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.dsn = make_conninfo(dsn, host="127.0.0.1", port=str(self.server.getsockname()[1]))
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop accepting, and end every relayed connection within a fraction of a second."""
        self.closed = True
        self.server.close()

    def client_sends(self, state: dict[str, Any], data: bytes) -> bool:
        """Called with each chunk the client sends; return whether to pass it on."""
        return True

    def server_sends(self, state: dict[str, Any], data: bytes) -> bytes:
        """Called with each chunk the server sends; return what to pass on (``b""``: nothing)."""
        return data

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            up = socket.socket(self.upstream[0], socket.SOCK_STREAM)
            up.connect(self.upstream[1])
            threading.Thread(target=self._pump, args=(client, up), daemon=True).start()

    def _pump(self, client: socket.socket, up: socket.socket) -> None:
        state: dict[str, Any] = {}  # what the subclass remembers about this connection
        try:
            while not self.closed:
                readable, _, _ = select.select([client, up], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client and self.client_sends(state, data):
                        up.sendall(data)
                    elif sock is up and (passed := self.server_sends(state, data)):
                        client.sendall(passed)
        except OSError:
            return
        finally:
            client.close()
            up.close()


class SilentDropProxy(Proxy):
    """After :meth:`drop`, bytes from the server to any connection that sent ``LISTEN`` are
    swallowed: the socket stays open and no error is raised, as when a NAT or firewall forgets
    an idle connection."""

    def __init__(self, dsn: str) -> None:
        self.dropped = threading.Event()
        self.listeners_seen = 0
        super().__init__(dsn)

    def drop(self) -> None:
        self.dropped.set()

    def client_sends(self, state: dict[str, Any], data: bytes) -> bool:
        if b"LISTEN" in data and not state.get("listening"):
            state["listening"] = True
            self.listeners_seen += 1
        return True

    def server_sends(self, state: dict[str, Any], data: bytes) -> bytes:
        return b"" if state.get("listening") and self.dropped.is_set() else data


class StallingProxy(Proxy):
    """Freezes the first connection that sends ``pattern``: that chunk (and everything after it
    on that connection) is held for ``seconds`` (``None``: until :meth:`close`), as when one NAT
    entry expires: the client waits for an answer that does not come, while its other
    connections work."""

    def __init__(self, dsn: str, pattern: bytes, seconds: float | None) -> None:
        self.pattern, self.seconds = pattern, seconds
        self.stalled = threading.Event()
        super().__init__(dsn)

    def client_sends(self, state: dict[str, Any], data: bytes) -> bool:
        if self.pattern in data and not self.stalled.is_set():
            self.stalled.set()
            until = None if self.seconds is None else time.monotonic() + self.seconds
            while not self.closed and (until is None or time.monotonic() < until):
                time.sleep(0.05)
        return not self.closed
