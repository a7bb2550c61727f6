"""uvicorn's sans-I/O WebSocket protocol, plus prepared frames and a receive queue.

A live event goes to every watcher of a group as the same text frame. Server frames are
not masked, so without compression its bytes on the wire are the same for every socket:
the fan-out encodes them once (chatsite.fanout.LiveEvent) and this protocol writes them as
they are, where the stock one would encode and frame the text again for each socket. The
messages still carry "text", so any other server (daphne) ignores the extra key and sends
the text the usual way; the scope's extensions say which connections honour it, and give
the fan-out a synchronous `write` for them.

uvicorn's protocol also stops reading the socket after every message until the app has
taken it, and starts again when it does: two epoll changes per frame a device sends. This
one reads ahead up to uvicorn's `--ws-max-queue` messages (32 by default; the Procfile
sets 8), as uvicorn's legacy websockets protocol and the websockets library do, and only
then pauses.
"""

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import State

from chatsite.fanout import PREPARED_FRAME


class PreparedFrameProtocol(WebSocketsSansIOProtocol):
    """Write prepared frames as they are; pause reading only when the app falls behind."""

    prepared = False  # until the handshake shows the connection can take them

    def handle_connect(self, event: Request) -> None:
        """Advertise the extension on connections that can use it (no compression)."""
        super().handle_connect(event)
        self.prepared = not self.handshake_complete and not self.conn.extensions
        if self.prepared:
            self.scope["extensions"][PREPARED_FRAME] = {"write": self.write_prepared}

    def write_prepared(self, frame: bytes) -> bool:
        """Write a prepared frame now if the socket is open and writable; False if not.

        Synchronous, so the fan-out can write a frame to each socket without creating and
        finishing a coroutine per socket; when it returns False, send the message instead.
        """
        if (
            self.writable.is_set()
            and not self.close_sent
            and not self.disconnected
            and self.conn.state is State.OPEN
        ):
            self.transport.write(frame)
            return True
        return False

    async def send(self, message: Any) -> None:
        """Write a prepared frame directly while the socket is open and writable."""
        frame = message.get(PREPARED_FRAME)
        if frame is not None and self.prepared and self.write_prepared(frame):
            return
        await super().send(message)

    def send_receive_event_to_app(self) -> None:
        """Queue the message for the app; pause reading once ws_max_queue are waiting."""
        paused = self.read_paused
        self.read_paused = True  # so uvicorn's method does not pause after every message
        try:
            super().send_receive_event_to_app()
        finally:
            self.read_paused = paused
        if not paused and self.queue.qsize() >= self.config.ws_max_queue:
            self.read_paused = True
            self.transport.pause_reading()  # resumed by receive() once the queue is empty
