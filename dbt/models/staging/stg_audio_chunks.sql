-- Chunk-level facts without the audio bytes: what analysts need for volumes and latency.
-- A table, because its source (bronze.audio_chunks, read as a view) lives only for the run.
{{ config(materialized='table') }}

select
    session_id,
    device_id,
    seq,
    event_time,
    received_at,
    sample_rate,
    encoding,
    num_samples,
    label as true_label,
    ingest_date,
    -- capture (session start + offset) to arrival at the gateway, in milliseconds
    (epoch_us(received_at) - epoch_us(event_time)) / 1000.0 as ingest_latency_ms
from {{ source('bronze', 'audio_chunks') }}
