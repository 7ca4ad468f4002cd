"""uvicorn's h11 protocol with a deadline for each request's headers, and one for a client that stops reading.

uvicorn has none: a client that sends half a request line, or a byte now and then, holds its connection (and one
of `limit_concurrency`'s slots) forever; a few dozen such clients would shut everyone else out with 503s. Here
the headers of each request must have arrived `header_seconds` after the connection opened or the previous answer
was sent, else the connection is closed. The launcher sets it (mnist_kit.serve.set_deadlines; defaults
serve.HEADER_SECONDS and serve.SEND_SECONDS). Bodies have their own deadline (mnist_kit.http_guard.Guard).

A client that stops reading its answer (a big response, a full socket buffer) held its connection as long as it
liked: when the transport's buffer stays full (asyncio paused writing) for `send_seconds`, the connection is
aborted and its slot freed.

This subclasses uvicorn's internal H11Protocol: pyproject pins uvicorn to the versions it is tested with, and
tests/test_serve.py fails loudly if the methods and attributes used here move.
"""

from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineH11(H11Protocol):
    """H11Protocol that closes a connection whose next request's headers are late."""

    header_seconds = 10.0  # set by the launcher
    send_seconds = 30.0  # set by the launcher
    header_timer = None
    send_timer = None

    def connection_made(self, transport):
        super().connection_made(transport)
        self.arm()

    def arm(self) -> None:
        self.disarm()
        self.header_timer = self.loop.call_later(self.header_seconds, self.headers_too_slow)

    def disarm(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.response_complete:  # the headers came: a request is running
            self.disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.arm()

    def connection_lost(self, exc) -> None:
        self.disarm()
        self.reading_again()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.reading_again()
        self.send_timer = self.loop.call_later(self.send_seconds, self.reader_too_slow)

    def resume_writing(self) -> None:
        self.reading_again()
        super().resume_writing()

    def reading_again(self) -> None:
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None

    def reader_too_slow(self) -> None:
        self.send_timer = None
        if not self.transport.is_closing():
            self.transport.abort()  # close() would wait for the buffer to drain: the client is not reading

    def headers_too_slow(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()
