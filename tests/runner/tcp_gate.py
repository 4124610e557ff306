"""A TCP relay on loopback in front of the test API server that a test can stop or black-hole.

It stands for what the network does to a trainer's calls: ``open`` relays bytes both ways;
``stop`` closes the listening port and cuts every connection (an API server that stopped:
new connections are refused); ``black_hole`` keeps accepting and keeps connections open
but relays nothing (a firewall dropping packets, a hung API server). TLS passes through
untouched, so the trainer still checks the API server's certificate.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

_CHUNK = 65_536


class TcpGate:
    """Relay ``127.0.0.1:<port>`` to ``upstream`` until told otherwise."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.state = "open"
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener = self._listen(0)
        self.port = self.listener.getsockname()[1]

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                downstream, _ = listener.accept()
            except OSError:
                return  # the listener was closed: stopped
            with self.lock:
                self.connections.append(downstream)
                state = self.state
            if state != "open":
                continue  # black-holed: accepted, and never answered
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                downstream.close()
                continue
            with self.lock:
                self.connections.append(upstream)
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        while True:
            try:
                data = source.recv(_CHUNK)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
                return
            if self.state != "open":
                continue  # black-holed: swallowed
            try:
                sink.sendall(data)
            except OSError:
                return

    def _cut(self) -> None:
        with self.lock:
            connections, self.connections = self.connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def stop(self) -> None:
        """Refuse new connections and cut the open ones (an API server that stopped)."""
        self.state = "stopped"
        self.listener.close()
        self._cut()

    def black_hole(self) -> None:
        """Accept connections but answer nothing, on new and open connections alike."""
        if self.state == "stopped":
            self.listener = self._listen(self.port)
        self.state = "black-hole"

    def open(self) -> None:
        """Relay again; connections held in the black hole are cut so clients reconnect."""
        self._cut()
        if self.state == "stopped":
            self.listener = self._listen(self.port)
        self.state = "open"

    def close(self) -> None:
        """Stop for good."""
        self.state = "stopped"
        with contextlib.suppress(OSError):
            self.listener.close()
        self._cut()


@contextlib.contextmanager
def tcp_gate(upstream: tuple[str, int]) -> Iterator[TcpGate]:
    """A gate in front of ``upstream``, closed afterwards."""
    gate = TcpGate(upstream)
    try:
        yield gate
    finally:
        gate.close()
