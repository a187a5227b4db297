"""The HTTP/1.1 connection of ``yexport serve``: uvicorn's own protocol, with three guards it lacks.

``serving.serve`` hands uvicorn ``partial(ServeHTTP, timeout=..., error_doc=...)`` as its protocol:

- **staged close** (RFC 9112 9.6): when the server closes a connection whose request body is still arriving (a 413
  from the Content-Length header, a 413 once a chunked body passes the limit, 503 busy, 408), it half-closes (FIN
  after the answer) and reads and discards what the client still sends until the client closes, for at most
  ``timeout`` seconds. A plain close would make the kernel answer those bytes with a reset, and a client that sends
  its whole body before reading (most of them) would see a reset connection instead of the answer. Nothing is kept
  and no ``--max-concurrency`` slot is held meanwhile: the request has been answered;
- **header budget**: a request's head (request line and headers), and the trailers of a chunked body, are at most
  ``MAX_HEAD`` bytes, else 431 with the error document and a staged close. The parser keeps every header (trailers
  too) until the message ends, so without it one connection could grow the server by as much as it sends;
- **pipelining**: at most ``MAX_PIPELINE`` requests are parsed ahead of the one being answered (uvicorn parses
  all it has read and resumes reading after every answer: one connection of tiny pipelined requests, ~2 KB of
  server memory each, grew the server by gigabytes); the rest stay in the socket, where TCP slows the client down;
- **head timeout**: a request's head must arrive within ``timeout`` of its first byte (or of the connection),
  else 408: uvicorn has no such limit, and headers sent a byte at a time held a connection for ever;
- **write stall**: a client that does not read its answers (pipelined requests, never read) stalls the answer once
  the socket's buffers are full; after ``timeout`` seconds stalled the connection is dropped, so the request's slot
  goes back.

A malformed request gets the error document (400, ``ArgumentError``) instead of uvicorn's plain-text line. Only the
HTTP layer lives here; the ASGI app (``serving.Guard``) keeps the limits on bodies and requests. Imported only when
``yexport serve`` runs on uvicorn.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from yolo_export.errors import ArgumentError, LimitError

MAX_HEAD = 64 * 1024  # bytes of request line + headers
MAX_PIPELINE = 16     # pipelined requests parsed ahead of the one being answered; the rest wait, unread
SLICE = 2048          # outside a body of known length, data is fed in slices this big: the head count is exact to
                      # a slice, and at most a slice of requests is parsed past MAX_PIPELINE
# Both need the parser's callbacks, which only the httptools protocol has; the h11 one caps its head itself and
# parses one request at a time.
PARSES_HERE = hasattr(AutoHTTPProtocol, "on_headers_complete")


def _plain_doc(err: BaseException) -> bytes:
    return json.dumps({"error": str(err), "type": type(err).__name__}).encode()


class StagedClose:
    """The transport as uvicorn's protocol and request cycles see it: ``close()`` asks the protocol, which closes
    at once or stages the close; ``is_closing()`` is true from then on. Everything else is the real transport."""

    def __init__(self, transport, protocol: ServeHTTP):
        self._transport, self._protocol = transport, protocol

    def __getattr__(self, name):
        return getattr(self._transport, name)

    def close(self) -> None:
        self._protocol.close_connection()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._transport.is_closing()

    def pause_reading(self) -> None:
        self._protocol.want_reading(False)

    def resume_reading(self) -> None:
        self._protocol.want_reading(True)

    def write(self, data) -> None:
        # A pipelined request's cycle is not told when the connection drops (only the newest cycle is): its answer
        # goes nowhere instead of raising in the app.
        if not self.is_closing():
            self._transport.write(data)


class ServeHTTP(AutoHTTPProtocol):
    def __init__(self, *args, timeout: float = 30.0, error_doc=_plain_doc, **kwargs):
        super().__init__(*args, **kwargs)
        self.timeout, self.error_doc = float(timeout), error_doc
        self.raw = None
        self.lingering = self.shutting_down = False
        self.in_head, self.head_bytes, self.body_left = True, 0, None
        self.wants_reading, self.backlog = True, b""
        self._linger_timer = self._stall_timer = self._head_timer = None

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport) -> None:
        self.raw = transport
        super().connection_made(StagedClose(transport, self))
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        for timer in (self._linger_timer, self._stall_timer, self._head_timer):
            if timer is not None:
                timer.cancel()
        super().connection_lost(exc)

    def close_connection(self, linger: bool | None = None) -> None:
        """Close now, or (when the request body is still arriving) stage it: FIN after the answer, then read and
        drop until the client closes or ``timeout`` passes."""
        if self.lingering or self.raw.is_closing():
            return
        if linger is None:
            linger = self._body_unread()
        if not linger or self.shutting_down:
            return self.raw.close()
        self.lingering = True
        if self.raw.can_write_eof():
            self.raw.write_eof()
        self.raw.resume_reading()  # the request cycle may have paused it (flow control)
        self._linger_timer = self.loop.call_later(self.timeout, self.raw.abort)

    def _body_unread(self) -> bool:
        cycle = getattr(self, "cycle", None)
        if cycle is not None and hasattr(cycle, "more_body"):   # httptools: the message has not ended
            return bool(cycle.more_body)
        conn = getattr(self, "conn", None)                     # h11: the client is still sending the body
        return conn is not None and conn.their_state.__name__ == "SEND_BODY"

    def shutdown(self) -> None:
        self.shutting_down = True
        if self.lingering:
            return self.raw.abort()
        super().shutdown()

    # ------------------------------------------------------------------ reading
    def want_reading(self, on: bool) -> None:
        """uvicorn's own pause/resume: reading goes on only if it wants it and the pipeline has room."""
        self.wants_reading = on
        self._apply_reading()

    def _apply_reading(self) -> None:
        if self.lingering or self.raw.is_closing():
            return
        queued = len(getattr(self, "pipeline", ()))
        if self.wants_reading and not self.backlog and queued < MAX_PIPELINE:
            self.raw.resume_reading()
        else:
            self.raw.pause_reading()

    def data_received(self, data) -> None:
        if self.lingering:
            return None  # the answer is out; what the client still sends is dropped
        if not PARSES_HERE:
            return super().data_received(data)
        self._arm_head_timer()
        had_backlog = bool(self.backlog)
        if had_backlog:
            data, self.backlog = self.backlog + bytes(data), b""
        view = memoryview(data)
        while view and not self.transport.is_closing():
            if len(self.pipeline) >= MAX_PIPELINE:  # uvicorn would parse every request it has read
                self.backlog = bytes(view)
                return self._apply_reading()
            n = self.body_left if not self.in_head and self.body_left and not self.pipeline else SLICE
            part, view = view[:n], view[n:]
            was_head = self.in_head
            super().data_received(part)
            if was_head and self.in_head:  # all of it head (a part that ends a message and starts the next: none)
                self.head_bytes += len(part)
                if self.head_bytes > MAX_HEAD:
                    return self._refuse_head()
        if had_backlog:
            self._apply_reading()
        return None

    def _feed_backlog(self) -> None:
        if self.backlog and not self.transport.is_closing():
            self.data_received(b"")

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.backlog:
            self.loop.call_soon(self._feed_backlog)
        self._apply_reading()

    def on_message_begin(self) -> None:
        self.in_head, self.head_bytes = True, 0
        super().on_message_begin()

    def _arm_head_timer(self) -> None:
        """A head must arrive within ``timeout`` of its first byte (or of the connection): headers trickled a byte
        at a time would otherwise hold the connection for ever (the keep-alive timer stops at the first byte)."""
        idle = self.cycle is None or self.cycle.response_complete
        if PARSES_HERE and self._head_timer is None and idle:
            self._head_timer = self.loop.call_later(self.timeout, self._head_timeout)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.lingering or self.raw.is_closing() or self.pipeline or self.backlog or not self.in_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered: the next head waits for the server, not the client
        self._write_error(408, b"Request Timeout", LimitError(f"request head not received within {self.timeout:g} s"))
        self.close_connection(linger=False)

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.in_head = False
        declared = [v for k, v in self.headers if k == b"content-length"]
        chunked = any(k == b"transfer-encoding" for k, _ in self.headers)
        self.body_left = int(declared[0]) if len(declared) == 1 and declared[0].isdigit() and not chunked else None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head, self.head_bytes = True, 0

    def on_chunk_header(self) -> None:
        self.in_head = True  # a chunk's size line, or the trailers after the last chunk: kept by the parser too

    def on_body(self, body: bytes) -> None:
        self.in_head, self.head_bytes = False, 0
        if self.body_left is not None:
            self.body_left -= len(body)
        super().on_body(body)

    def _refuse_head(self) -> None:
        err = LimitError(f"request head or trailers over {MAX_HEAD // 1024} KB")
        self._write_error(431, b"Request Header Fields Too Large", err)
        self.close_connection(linger=True)

    def send_400_response(self, msg: str) -> None:
        self._write_error(400, b"Bad Request", ArgumentError("malformed HTTP request"))
        self.close_connection(linger=True)

    def _unsupported_upgrade_warning(self) -> None:
        """An ``Upgrade`` header is served as plain HTTP (the app has no WebSocket), without a log line each."""

    def _write_error(self, status: int, reason: bytes, err: BaseException) -> None:
        body = self.error_doc(err)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.raw.write(b"".join(head) + body)

    # ------------------------------------------------------------------ writing
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.timeout, self.raw.abort)

    def resume_writing(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        super().resume_writing()
