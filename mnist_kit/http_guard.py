"""The HTTP hardening in front of every request the server answers (ASGI middleware, no FastAPI): `Host` must name
an address served, a POST from a page of another origin is refused, and a body is capped as it arrives (not only by
its announced length) and must arrive within BODY_SECONDS.

The Host rule is written here rather than taken from Starlette's TrustedHostMiddleware: that one answers 400 "Invalid
host header" as plain text, and the answer users are given is 421 with the --allow-host hint, as JSON like every
other refusal; a wrapper that kept it would rewrite its whole __call__.
"""

import asyncio
import json
from urllib.parse import urlsplit

MAX_REQUEST = 8 * 2**20  # bytes: a canvas PNG is a few KiB, a JSON batch of 256 28x28 images about 2 MiB
BODY_SECONDS = 10.0  # a request's body must arrive within this
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


class Guard:
    """ASGI middleware in front of every request: `Host` must be one served, a POST from another origin is refused,
    and a body is read here, capped at `max_body` bytes as it arrives and within `body_seconds`, then handed on."""

    def __init__(self, app, hosts: list[str], max_body: int = MAX_REQUEST, body_seconds: float = BODY_SECONDS):
        self.app, self.hosts, self.max_body, self.body_seconds = app, [h.lower() for h in hosts], max_body, body_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if "*" not in self.hosts and split_host(host) not in self.hosts:
            return await answer(send, 421, f"Host {host!r} is not served here (see --allow-host)")
        origin = headers.get("origin")
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and origin and urlsplit(origin).netloc != host:
            return await answer(send, 403, f"a page from {origin} may not post here")
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        announced = headers.get("content-length")
        if announced and (not announced.isdigit() or int(announced) > self.max_body):
            return await answer(send, 413, f"the body must be at most {self.max_body:,} bytes, got {announced}")
        chunks, size = [], 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return await answer(send, 408, f"the body did not arrive within {self.body_seconds:g} s")
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if size > self.max_body:
                await drain(receive, message, deadline)
                return await answer(send, 413, f"the body must be at most {self.max_body:,} bytes")
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


async def drain(receive, message: dict, deadline: float, limit: int = 8 * MAX_REQUEST) -> None:
    """Read and drop the rest of a refused body (bounded in bytes and time) before answering, so closing the
    connection does not reset it before the client has read the answer (uvicorn reads nothing after a response)."""
    loop, dropped = asyncio.get_running_loop(), 0
    while message.get("more_body") and dropped < limit:
        try:
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            return
        dropped += len(message.get("body", b""))


def split_host(host: str) -> str:
    """The host part of a Host header ('127.0.0.1:8000' -> '127.0.0.1', '[::1]:80' -> '[::1]')."""
    host = host.lower()
    if host.startswith("["):
        return host[:host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def answer(send, status: int, error: str) -> None:
    """A JSON error answer straight from the middleware (the connection then closes)."""
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def allowed_hosts(host: str, extra: list[str]) -> list[str]:
    """The Host header values accepted: the address served (every name of the loopback for a loopback address;
    anything for 0.0.0.0 / ::), plus --allow-host."""
    if host in ("0.0.0.0", "::", ""):
        return ["*"]
    served = list(LOCAL_HOSTS) if host in LOCAL_HOSTS else [host, f"[{host}]" if ":" in host else host]
    return [*served, *(h.lower() for h in extra)]
