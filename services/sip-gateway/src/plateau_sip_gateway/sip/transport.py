"""SIP transports over real sockets: UDP and TCP (RFC 3261 §18), IPv4 and IPv6.

A transport moves bytes; it neither parses nor answers. What arrives is handed, with a
``Source`` saying where it came from, to the sink the endpoint gave ``start``: a UDP
datagram whole, a TCP stream cut into messages by ``StreamFramer`` (Content-Length).

The ``Transport`` port is what the endpoint depends on; ``on_error`` callbacks are always
called later from the event loop, never from inside ``send``, so a transaction never sees
its own failure while it is still sending.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import socket as sockets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from plateau_sip_gateway.sip.framing import FramingError, StreamFramer
from plateau_sip_gateway.sip.parser import MAX_MESSAGE_SIZE

log = structlog.get_logger(__name__)

Address = tuple[str, int]
"""An IP literal (no brackets) and a port."""

ErrorCallback = Callable[[BaseException], None]

_WRITE_BUFFER_LIMIT = 1 << 20  # a peer that leaves 1 MiB unread is dropped

#: What the UDP socket asks the kernel to buffer. The usual default (~208 KiB, about a
#: hundred datagrams) overflows in bursts (a few hundred agent legs answered at once), and
#: a dropped 180/200 makes Timer A retransmit INVITEs the far end may not absorb. The
#: kernel caps the request at ``net.core.rmem_max``.
UDP_RECEIVE_BUFFER = 4 << 20


@dataclass(frozen=True, eq=False)
class Source:
    """Where a message came from: transport name, peer and local address, and for TCP
    the connection it arrived on (responses go back on it, RFC 3261 §18.2.2).

    ``relay``: the trusted edge proxy the request came through, when ``remote`` is the
    peer behind it that the proxy reported (requests back to that peer go through the
    proxy, over ``transport``)."""

    transport: str
    remote: Address
    local: Address
    connection: TcpConnection | None = None
    relay: Address | None = None


MessageSink = Callable[[bytes, Source], None]


class Transport(Protocol):
    """The port the endpoint sends and receives through."""

    @property
    def name(self) -> str:
        """``UDP`` or ``TCP``, as written in a Via."""
        ...

    @property
    def reliable(self) -> bool:
        """Whether the transport retransmits by itself (then transactions do not)."""
        ...

    @property
    def local_address(self) -> Address:
        """The bound address (with the real port when 0 was asked for)."""
        ...

    async def start(self, sink: MessageSink) -> None:
        """Open the socket and deliver every message received to ``sink``."""
        ...

    def send(
        self,
        data: bytes,
        address: Address,
        *,
        connection: TcpConnection | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        """Send ``data`` to ``address`` (over ``connection`` when it is still open)."""
        ...

    async def close(self) -> None:
        """Close the socket and every connection."""
        ...


@functools.lru_cache(maxsize=4096)  # a few peers, asked for on every message
def normalise_host(host: str) -> str:
    """An IP literal without IPv6 brackets, in canonical form; other text unchanged."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(normalise_host(host))
    except ValueError:
        return False
    return True


def _report_later(on_error: ErrorCallback | None, error: BaseException) -> None:
    if on_error is not None:
        asyncio.get_running_loop().call_soon(on_error, error)


@dataclass
class TransportStats:
    """Counters of one transport."""

    datagrams_received: int = 0
    messages_received: int = 0
    messages_sent: int = 0
    send_errors: int = 0
    connections_opened: int = 0
    connections_refused: int = 0
    framing_errors: int = 0
    pings_answered: int = 0


# UDP --------------------------------------------------------------------------------------


#: At most this many datagrams are read per readiness of the socket. asyncio's datagram
#: transport reads one per loop iteration, so a backlog of N datagrams waited N iterations
#: (each as long as everything else the loop had to do): the post-dial delay's tail.
_UDP_READ_BATCH = 64
_UDP_MAX_DATAGRAM = 65535


class UdpTransport:
    """SIP over UDP on one socket: every request and response leaves from it.

    The socket is driven with ``add_reader`` rather than asyncio's datagram transport, so
    that each readiness drains up to ``_UDP_READ_BATCH`` datagrams; a send the kernel
    cannot take at once is queued and flushed when the socket is writable.
    """

    name = "UDP"
    reliable = False

    def __init__(
        self, host: str, port: int = 0, *, receive_buffer: int = UDP_RECEIVE_BUFFER
    ) -> None:
        self._host = host
        self._port = port
        self._receive_buffer = receive_buffer
        self._sock: sockets.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._backlog: collections.deque[tuple[bytes, Address, ErrorCallback | None]] = (
            collections.deque()
        )
        self._sink: MessageSink | None = None
        self._local: Address = (host, port)
        self.stats = TransportStats()

    @property
    def local_address(self) -> Address:
        return self._local

    async def start(self, sink: MessageSink) -> None:
        loop = asyncio.get_running_loop()
        host = normalise_host(self._host)
        family = sockets.AF_INET6 if ":" in host else sockets.AF_INET
        sock = sockets.socket(family, sockets.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if self._receive_buffer > 0:
                with contextlib.suppress(OSError):
                    sock.setsockopt(sockets.SOL_SOCKET, sockets.SO_RCVBUF, self._receive_buffer)
            sock.bind((host, self._port))
        except BaseException:
            sock.close()
            raise
        self._sink = sink
        self._sock, self._loop = sock, loop
        sockname = sock.getsockname()
        self._local = (str(sockname[0]), int(sockname[1]))
        loop.add_reader(sock.fileno(), self._read_ready)

    def _read_ready(self) -> None:
        sock = self._sock
        for _ in range(_UDP_READ_BATCH):
            if sock is None or self._sock is not sock:
                return  # closed by what the last datagram caused
            try:
                data, addr = sock.recvfrom(_UDP_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error for some earlier datagram: not attributable to a transaction.
                self.stats.send_errors += 1
                log.debug("sip.udp.error_received", error=repr(exc))
                continue
            self._received(data, (str(addr[0]), int(addr[1])))

    def _received(self, data: bytes, remote: Address) -> None:
        self.stats.datagrams_received += 1
        if self._sink is not None:
            self._sink(data, Source("UDP", remote, self._local))

    def send(
        self,
        data: bytes,
        address: Address,
        *,
        connection: TcpConnection | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        sock = self._sock
        if sock is None:
            self.stats.send_errors += 1
            _report_later(on_error, ConnectionError("the UDP transport is closed"))
            return
        if self._backlog:
            self._backlog.append((data, address, on_error))
            return
        try:
            sock.sendto(data, address)
        except (BlockingIOError, InterruptedError):
            self._backlog.append((data, address, on_error))
            assert self._loop is not None
            self._loop.add_writer(sock.fileno(), self._write_ready)
            return
        except (OSError, ValueError, TypeError) as exc:
            self.stats.send_errors += 1
            _report_later(on_error, exc)
            return
        self.stats.messages_sent += 1

    def _write_ready(self) -> None:
        sock = self._sock
        while sock is not None and self._backlog:
            data, address, on_error = self._backlog[0]
            try:
                sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                return
            except (OSError, ValueError, TypeError) as exc:
                self.stats.send_errors += 1
                _report_later(on_error, exc)
            else:
                self.stats.messages_sent += 1
            self._backlog.popleft()
        if sock is not None and self._loop is not None:
            self._loop.remove_writer(sock.fileno())

    async def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(sock.fileno())
            self._loop.remove_writer(sock.fileno())
        for _, _, on_error in self._backlog:
            _report_later(on_error, ConnectionError("the UDP transport is closed"))
        self._backlog.clear()
        sock.close()


# TCP --------------------------------------------------------------------------------------


class TcpConnection(asyncio.Protocol):
    """One TCP connection, accepted or opened, framed into SIP messages."""

    def __init__(self, owner: TcpTransport, remote: Address | None = None) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._framer = StreamFramer(owner.max_message_size, on_ping=self._pong)
        self._pending: list[tuple[bytes, ErrorCallback | None]] = []
        self.remote: Address | None = remote
        self.local: Address = owner.local_address
        self.last_activity = asyncio.get_running_loop().time()
        self.closed = False

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self.closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        sockname = transport.get_extra_info("sockname")
        self.remote = (normalise_host(str(peer[0])), int(peer[1]))
        self.local = (str(sockname[0]), int(sockname[1]))
        if not self._owner._admit(self):
            transport.abort()
            self.closed = True
            return
        self._transport = transport
        pending, self._pending = self._pending, []
        for data, on_error in pending:
            self.write(data, on_error)

    def data_received(self, data: bytes) -> None:
        self.last_activity = asyncio.get_running_loop().time()
        try:
            messages = self._framer.feed(data)
        except FramingError as exc:
            self._owner.stats.framing_errors += 1
            log.info("sip.tcp.framing_error", remote=self.remote, reason=exc.reason)
            self.close()
            return
        source = Source("TCP", self.remote or ("", 0), self.local, self)
        for message in messages:
            if self.closed:
                return
            self._owner._received(message, source)

    def _pong(self) -> None:
        # RFC 5626 §4.4.1: a double-CRLF ping is answered with a single CRLF.
        if self._transport is not None and not self.closed:
            self._owner.stats.pings_answered += 1
            self._transport.write(b"\r\n")

    def write(self, data: bytes, on_error: ErrorCallback | None = None) -> None:
        if self.closed:
            _report_later(on_error, ConnectionError("the TCP connection is closed"))
            return
        transport = self._transport
        if transport is None:  # still connecting
            self._pending.append((data, on_error))
            return
        if transport.get_write_buffer_size() > _WRITE_BUFFER_LIMIT:
            _report_later(on_error, ConnectionError("the peer is not reading; dropped"))
            self.close()
            return
        transport.write(data)
        self._owner.stats.messages_sent += 1
        self.last_activity = asyncio.get_running_loop().time()

    def connection_failed(self, error: BaseException) -> None:
        """The connect attempt failed: everything queued fails with it."""
        self.closed = True
        pending, self._pending = self._pending, []
        for _, on_error in pending:
            _report_later(on_error, error)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._owner._forget(self)
        pending, self._pending = self._pending, []
        for _, on_error in pending:
            _report_later(on_error, exc or ConnectionError("the TCP connection closed"))

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
        self._owner._forget(self)


class TcpTransport:
    """SIP over TCP: a listening socket, connections opened on demand and reused in both
    directions (keyed by the peer's address), at most ``max_connections`` at once, idle
    ones closed after ``idle_timeout`` seconds."""

    name = "TCP"
    reliable = True

    def __init__(
        self,
        host: str,
        port: int = 0,
        *,
        max_connections: int = 1024,
        max_message_size: int = MAX_MESSAGE_SIZE,
        idle_timeout: float = 300.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self._host = host
        self._port = port
        self.max_connections = max_connections
        self.max_message_size = max_message_size
        self.idle_timeout = idle_timeout
        self.connect_timeout = connect_timeout
        self._server: asyncio.Server | None = None
        self._sink: MessageSink | None = None
        self._local: Address = (host, port)
        self._by_remote: dict[Address, TcpConnection] = {}
        self._connections: set[TcpConnection] = set()
        self._connecting: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.stats = TransportStats()

    @property
    def local_address(self) -> Address:
        return self._local

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def start(self, sink: MessageSink) -> None:
        loop = asyncio.get_running_loop()
        self._sink = sink
        self._server = await loop.create_server(
            lambda: TcpConnection(self), self._host, self._port, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self._local = (str(sockname[0]), int(sockname[1]))
        self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(max(1.0, self.idle_timeout / 4), self._sweep)

    def _sweep(self) -> None:
        now = asyncio.get_running_loop().time()
        for connection in list(self._connections):
            if now - connection.last_activity > self.idle_timeout:
                log.debug("sip.tcp.idle_close", remote=connection.remote)
                connection.close()
        self._schedule_sweep()

    def _admit(self, connection: TcpConnection) -> bool:
        if connection not in self._connections:
            if len(self._connections) >= self.max_connections:
                self.stats.connections_refused += 1
                log.warning("sip.tcp.connection_limit", remote=connection.remote)
                return False
            self._connections.add(connection)
            self.stats.connections_opened += 1
        if connection.remote is not None:
            self._by_remote[connection.remote] = connection
        return True

    def _forget(self, connection: TcpConnection) -> None:
        self._connections.discard(connection)
        if connection.remote is not None and self._by_remote.get(connection.remote) is connection:
            del self._by_remote[connection.remote]

    def _received(self, data: bytes, source: Source) -> None:
        self.stats.messages_received += 1
        if self._sink is not None:
            self._sink(data, source)

    def send(
        self,
        data: bytes,
        address: Address,
        *,
        connection: TcpConnection | None = None,
        on_error: ErrorCallback | None = None,
    ) -> None:
        if connection is not None and connection.is_open:
            connection.write(data, on_error)
            return
        address = (normalise_host(address[0]), address[1])
        existing = self._by_remote.get(address)
        if existing is not None and not existing.closed:
            existing.write(data, on_error)
            return
        if self._server is None:
            self.stats.send_errors += 1
            _report_later(on_error, ConnectionError("the TCP transport is closed"))
            return
        if len(self._connections) + len(self._connecting) >= self.max_connections:
            self.stats.connections_refused += 1
            self.stats.send_errors += 1
            _report_later(on_error, ConnectionError("TCP connection limit reached"))
            return
        connection = TcpConnection(self, address)
        self._by_remote[address] = connection
        connection.write(data, on_error)
        task = asyncio.get_running_loop().create_task(self._connect(connection, address))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect(self, connection: TcpConnection, address: Address) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: connection, address[0], address[1])
        except (OSError, TimeoutError) as exc:
            self.stats.send_errors += 1
            if self._by_remote.get(address) is connection:
                del self._by_remote[address]
            connection.connection_failed(exc)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self._connecting):
            task.cancel()
        for connection in list(self._connections):
            connection.close()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self._server.wait_closed()
            self._server = None
