"""Each stream's hand-off to the spool writer, and what a failed write undoes.

A stream keeps at most ONE group commit in flight: a chunk that arrives while its stream's
previous write is being fsync'd waits in the stream's queue and goes, with whatever else
queued meanwhile, in the next submission. So chunks are stored in order and the acknowledged
watermark is simply "the last chunk written". The hand-off is driven by events, not by a task
per stream: :func:`hand_off` submits the queue when nothing is in flight, and
:func:`_written` — called by the spool writer once the group is fsync'd — has the session
registry record the durable watermark, then moves the Ack and submits what queued meanwhile.
Per chunk that costs a list append; per group commit one callback and one short task (the
registry's write, which marks of all streams share).

A failed write must never be acknowledged and must not poison the session: the chunks after
the last Ack are forgotten, so that a resend after a resume is stored again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from streaming.gateway import protocol as proto
from streaming.gateway.metrics import GatewayMetrics
from streaming.gateway.outbox import spawn
from streaming.gateway.registry import SessionRegistry
from streaming.gateway.stream import Stream
from streaming.spool import SpoolRecord, SpoolWriter

log = logging.getLogger("sonolake.gateway")


async def spool_loop(
    stream: Stream, spool: SpoolWriter, metrics: GatewayMetrics, registry: SessionRegistry
) -> None:
    """Connect the stream to the spool writer; return once its writes are over.

    A group is acknowledged only once it is fsync'd *and* the session registry holds its
    watermark, so a resume in any process on the host knows at least what the client was
    told is stored.

    Runs from an attach until the stream is closing with nothing queued or in flight, or
    until a write fails (then a resume starts it again, and what queued meanwhile goes out).
    """
    stream.spool_sink = functools.partial(hand_off, stream, spool, metrics, registry)
    while True:
        hand_off(
            stream, spool, metrics, registry
        )  # whatever queued before this attach or meanwhile
        if stream.spool_failed and not stream.spool_in_flight:
            return
        if stream.spool_closing and not stream.spool_in_flight and not stream.spool_queue:
            return
        stream.spool_wakeup.clear()
        await stream.spool_wakeup.wait()


def hand_off(
    stream: Stream, spool: SpoolWriter, metrics: GatewayMetrics, registry: SessionRegistry
) -> None:
    """Submit the stream's queued records as one group, unless one is already in flight."""
    queue = stream.spool_queue
    if stream.spool_in_flight or not queue or stream.spool_failed:
        return
    batch = list(queue)
    queue.clear()
    stream.spool_in_flight = len(batch)
    stream.spool_in_flight_bytes, stream.spool_queued_bytes = stream.spool_queued_bytes, 0
    records = [record for record, _ in batch]
    try:
        spool.submit(records, functools.partial(_written, stream, spool, metrics, registry, batch))
    except Exception as exc:  # the writer is closed: as good as a failed write
        _written(stream, spool, metrics, registry, batch, exc)


def _written(
    stream: Stream,
    spool: SpoolWriter,
    metrics: GatewayMetrics,
    registry: SessionRegistry,
    batch: list[tuple[SpoolRecord, float]],
    error: BaseException | None,
) -> None:
    """The group commit holding ``batch`` is over: record its watermark, then Ack it.

    The group stays in flight until the registry has the watermark, so a later group can
    never be acknowledged ahead of what the registry knows.
    """
    if error is not None:
        _spool_failed(stream, metrics, error)
        _group_over(stream)
        return
    session = stream.session
    durable_at = time.perf_counter()
    observe = metrics.spool_lag_seconds.observe
    for record, received_s in batch:
        observe(durable_at - received_s)
        session.mark_durable(record.seq)
    spawn(_note_then_ack(stream, spool, metrics, registry))


async def _note_then_ack(
    stream: Stream, spool: SpoolWriter, metrics: GatewayMetrics, registry: SessionRegistry
) -> None:
    try:
        await registry.note_durable(stream.session.session_id, stream.durable_mark(time.time()))
    except Exception as exc:
        _spool_failed(stream, metrics, exc)
        _group_over(stream)
        return
    _group_over(stream)
    stream.want_ack()
    hand_off(stream, spool, metrics, registry)
    stream.check_spool_room()
    if stream.spool_closing:
        stream.spool_wakeup.set()  # spool_loop may be done


def _group_over(stream: Stream) -> None:
    stream.spool_in_flight = 0
    stream.spool_in_flight_bytes = 0
    stream.check_spool_room()
    if stream.spool_closing or stream.spool_failed:
        stream.spool_wakeup.set()


def _spool_failed(stream: Stream, metrics: GatewayMetrics, exc: BaseException) -> None:
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
