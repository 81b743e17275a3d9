"""Arrow tables as bytes: the compact form every table takes between pipeline stages.

``pa.Table`` pickles the whole buffers of a slice's parent; the IPC stream writer writes only
the slice's rows. Reading back is zero-copy over the bytes.
"""

from __future__ import annotations

import pyarrow as pa


def ipc_bytes(table: pa.Table) -> bytes:
    """A table (or a slice of one: only its rows are written) as Arrow IPC stream bytes."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def table_from_ipc(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()
