"""A TCP relay in front of an S3 server, run as its own process: the endpoint that vanishes.

``python s3_relay.py LISTEN_PORT TARGET_PORT [--lose-response-of REGEX]`` listens on
127.0.0.1:LISTEN_PORT and pipes each connection to 127.0.0.1:TARGET_PORT (one upstream
connection per client connection, so keep-alive connections live and die with the relay).

Killing the relay by its PID (SIGKILL) is an outage of the endpoint while the store behind it
keeps its objects: in-flight requests get their connections reset, new ones are refused until
the relay is started again on the same port.

``--lose-response-of REGEX``: the relay forwards a request whose request line matches (for
example ``PUT /bucket/table/_delta_log/00000000000000000003.json``) to the server, and the
moment the server's answer starts to come back — the server has applied the request — the
relay kills itself, so the client never learns that its request succeeded. It prints
``lost response of <request line>`` first, so the test can count it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys

READ_BYTES = 65536
REQUEST_LINE = re.compile(rb"(?:GET|PUT|POST|HEAD|DELETE) \S+ HTTP/1\.1")
TAIL_BYTES = 2048
"""Bytes of the previous read kept to find a request line split across two reads."""


class Link:
    """One client connection and its upstream connection."""

    def __init__(self, lose: re.Pattern[bytes] | None) -> None:
        self.lose = lose
        self.armed: bytes | None = None
        """The matching request line once it went upstream: its answer is to be lost."""

    async def client_to_server(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        tail = b""
        while data := await source.read(READ_BYTES):
            if self.lose is not None and self.armed is None:
                window = tail + data
                for line in REQUEST_LINE.finditer(window):
                    if self.lose.search(line.group(0)):
                        self.armed = line.group(0)
                tail = window[-TAIL_BYTES:]
            sink.write(data)
            await sink.drain()

    async def server_to_client(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        while data := await source.read(READ_BYTES):
            if self.armed is not None:
                sys.stdout.write(f"lost response of {self.armed.decode(errors='replace')}\n")
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            sink.write(data)
            await sink.drain()


async def serve(listen_port: int, target_port: int, lose: re.Pattern[bytes] | None) -> None:
    async def link(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            writer.transport.abort()
            return
        pipes = Link(lose)

        async def pipe(run: object, sink: asyncio.StreamWriter) -> None:
            try:
                await run  # type: ignore[misc]
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(
            pipe(pipes.client_to_server(reader, up_writer), up_writer),
            pipe(pipes.server_to_client(up_reader, writer), writer),
        )

    server = await asyncio.start_server(link, "127.0.0.1", listen_port, reuse_address=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("listen_port", type=int)
    parser.add_argument("target_port", type=int)
    parser.add_argument("--lose-response-of", default=None)
    args = parser.parse_args()
    lose = re.compile(args.lose_response_of.encode()) if args.lose_response_of else None
    asyncio.run(serve(args.listen_port, args.target_port, lose))


if __name__ == "__main__":
    main()
