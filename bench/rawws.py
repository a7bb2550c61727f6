"""A minimal WebSocket client for benchmark watchers, cheap per frame.

The ``websockets`` client costs the load generator about 10 µs a received frame (its
parser, its queue, a wakeup of the reading task per frame). At 100,000+ frames a second
that is a whole core, and a maximum-rate search then measures the generator instead of
the server. This client parses the server's frames straight off ``data_received``, many
a call, and hands each text frame's payload (bytes) to a callback with the time the
bytes arrived. It does only what a watcher needs: the RFC 6455 handshake (checked),
unmasked server frames, fragments, answering pings, and the closing handshake. It sends
no extensions, so frames are never compressed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from collections.abc import Callable
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HEAD = 16384


class HandshakeError(Exception):
    """The server did not switch protocols as RFC 6455 says."""


def client_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One masked, final client frame (payloads under 126 bytes: control frames)."""
    mask = os.urandom(4)
    key = int.from_bytes((mask * (len(payload) // 4 + 1))[: len(payload)], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(len(payload), "big")
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class RawWatcher(asyncio.Protocol):
    """A watcher socket: ``on_text(payload, now)`` for every text message, in order."""

    def __init__(
        self, request: bytes, accept: bytes, on_text: Callable[[bytes, float], None]
    ) -> None:
        self.request = request
        self.accept = accept
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.head = b""  # the handshake response, until it is complete
        self.buf = b""  # bytes of an incomplete frame
        self.fragments: list[bytes] | None = None
        self.upgraded = False

    # asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            data = self._handshake(data)
            if not data:
                return
        now = time.time()
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            size, start = b1 & 0x7F, pos + 2
            if size == 126:
                if end - pos < 4:
                    break
                size, start = struct.unpack_from("!H", buf, pos + 2)[0], pos + 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, start = struct.unpack_from("!Q", buf, pos + 2)[0], pos + 10
            if b1 & 0x80:
                self._fail(1002)  # servers must not mask
                return
            if start + size > end:
                break
            self._frame(b0, buf[start : start + size], now)
            pos = start + size
        self.buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    # frames -----------------------------------------------------------------------------

    def _frame(self, b0: int, payload: bytes, now: float) -> None:
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode == OP_TEXT and fin and self.fragments is None:
            self.on_text(payload, now)
        elif opcode in (OP_TEXT, OP_BINARY):
            self.fragments = [payload]
        elif opcode == OP_CONT and self.fragments is not None:
            self.fragments.append(payload)
            if fin:
                whole, self.fragments = b"".join(self.fragments), None
                self.on_text(whole, now)
        elif opcode == OP_PING:
            self.transport.write(client_frame(OP_PONG, payload))  # type: ignore[union-attr]
        elif opcode == OP_CLOSE:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            self._fail(code)

    def _fail(self, code: int) -> None:
        if not self.closed.done():
            self.closed.set_result(code)
        self.close()

    def close(self) -> None:
        """Start the closing handshake (code 1000) and drop the connection."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(OP_CLOSE, struct.pack("!H", 1000)))
            self.transport.close()

    # the opening handshake --------------------------------------------------------------

    def _handshake(self, data: bytes) -> bytes:
        self.head += data
        head, sep, rest = self.head.partition(b"\r\n\r\n")
        if not sep:
            if len(self.head) > MAX_HEAD:
                self._refused("response head too large")
            return b""
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if len(status) < 2 or status[1] != b"101":
            self._refused(f"status {status[1:2]!r}")
        elif headers.get(b"sec-websocket-accept") != self.accept:
            self._refused("bad Sec-WebSocket-Accept")
        elif headers.get(b"sec-websocket-extensions"):
            self._refused("an extension was negotiated that was not offered")
        else:
            self.upgraded, self.head = True, b""
            self.opened.set_result(None)
            return rest
        return b""

    def _refused(self, why: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(HandshakeError(why))
        self.transport.close()  # type: ignore[union-attr]


async def raw_watch(
    url: str, *, origin: str, on_text: Callable[[bytes, float], None], open_timeout: float = 30
) -> RawWatcher:
    """Open a watcher socket to ws://host:port/path; returns once the handshake passed."""
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError("rawws speaks plain ws:// only (the benchmark runs on loopback)")
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(
        loop.create_connection(
            lambda: RawWatcher(request, accept, on_text), parts.hostname, parts.port or 80
        ),
        open_timeout,
    )
    try:
        await asyncio.wait_for(asyncio.shield(proto.opened), open_timeout)
    except BaseException:
        proto.close()
        raise
    return proto
