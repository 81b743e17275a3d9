"""Each stream's spool writer, and what a failed write undoes.

One task per stream hands its queued chunks to the :class:`~streaming.spool.SpoolWriter` as
one group commit and, once they are fsync'd, moves the session's durable watermark (the Ack).
A failed write must never be acknowledged and must not poison the session: the chunks after
the last Ack are forgotten, so that a resend after a resume is stored again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from streaming.gateway import protocol as proto
from streaming.gateway.metrics import GatewayMetrics
from streaming.gateway.outbox import spawn
from streaming.gateway.registry import SessionRegistry
from streaming.gateway.stream import Stream
from streaming.spool import SpoolWriter

log = logging.getLogger("sonolake.gateway")


async def spool_loop(
    stream: Stream, spool: SpoolWriter, metrics: GatewayMetrics, registry: SessionRegistry
) -> None:
    """The stream's spool writer: queued chunks → one group commit → durable → registry → Ack.

    The registry's watermark is written before the Ack goes out, so a resume in any
    process on the host knows at least what the client was told is stored.

    When a write fails nothing after the last Ack counts as stored: the queue is dropped,
    the session forgets those seqs (a resend is stored, not taken for a duplicate), the
    client gets ``internal`` and close 1011, and this writer ends until a resume.
    """
    session = stream.session
    queue = stream.spool_queue
    while True:
        if not queue:
            if stream.spool_closing or stream.spool_failed:
                return  # closing: set once the last decision of the session is queued
            stream.spool_wakeup.clear()
            await stream.spool_wakeup.wait()
            continue
        batch = list(queue)
        queue.clear()
        stream.spool_in_flight = len(batch)
        stream.spool_in_flight_bytes, stream.spool_queued_bytes = stream.spool_queued_bytes, 0
        try:
            if len(batch) == 1:
                await spool.append(batch[0][0])
            else:
                await asyncio.gather(*(spool.append(record) for record, _ in batch))
        except Exception as exc:
            _spool_failed(stream, metrics, exc)
            return
        finally:
            stream.spool_in_flight = 0
            stream.spool_in_flight_bytes = 0
            stream.check_spool_room()
        durable_at = time.perf_counter()
        for record, received_s in batch:
            metrics.spool_lag_seconds.observe(durable_at - received_s)
            session.mark_durable(record.seq)
        try:
            await registry.note_durable(session.session_id, stream.durable_mark(time.time()))
        except Exception as exc:
            _spool_failed(stream, metrics, exc)
            return
        stream.want_ack()


def _spool_failed(stream: Stream, metrics: GatewayMetrics, exc: Exception) -> None:
    log.error("spool write failed for %s: %s", stream.session.session_id, exc)
    metrics.spool_failures += 1
    metrics.client_errors["internal"] += 1
    stream.spool_failed = True
    stream.spool_queue.clear()
    stream.spool_queued_bytes = 0
    stream.session.forget_unstored()
    stream.spool_room.set()  # wake a receive loop waiting for room: it sees the failure
    ws = stream.ws
    if ws is not None:
        stream.send(
            proto.error_message(
                "internal",
                "could not store audio durably; chunks after the last Ack were not stored: "
                "resume and send them again",
            )
        )
        spawn(_close_after_flush(stream, ws))


async def _close_after_flush(stream: Stream, ws: ServerConnection) -> None:
    outbox = stream.outbox
    if outbox is not None:
        await outbox.flush()
    with contextlib.suppress(ConnectionClosed):
        await ws.close(proto.CLOSE_INTERNAL, "spool write failed")
