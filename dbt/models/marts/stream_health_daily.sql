-- Per UTC day: volumes, drops (backpressure) and capture-to-gateway latency of the chunks.
with chunks as (
    select
        ingest_date as day,
        count(*) as chunks_landed,
        count(distinct session_id) as sessions_with_chunks,
        quantile_cont(ingest_latency_ms, 0.5) as ingest_latency_ms_p50,
        quantile_cont(ingest_latency_ms, 0.99) as ingest_latency_ms_p99
    from {{ ref('stg_audio_chunks') }}
    group by 1
),
sessions as (
    select
        session_date as day,
        count(*) as sessions_closed,
        sum(chunks) as chunks_reported,
        sum(dropped_chunks) as dropped_chunks
    from {{ ref('stg_sessions') }}
    group by 1
),
dead as (
    select ingest_date as day, count(*) as dead_letters
    from {{ ref('stg_dead_letters') }}
    group by 1
),
days as (
    select day from chunks union select day from sessions union select day from dead
)
select
    days.day,
    coalesce(chunks.chunks_landed, 0) as chunks_landed,
    coalesce(chunks.sessions_with_chunks, 0) as sessions_with_chunks,
    coalesce(sessions.sessions_closed, 0) as sessions_closed,
    coalesce(sessions.dropped_chunks, 0) as dropped_chunks,
    case when coalesce(sessions.chunks_reported, 0) + coalesce(sessions.dropped_chunks, 0) > 0
        then sessions.dropped_chunks::double
            / (sessions.chunks_reported + sessions.dropped_chunks) end as drop_rate,
    chunks.ingest_latency_ms_p50,
    chunks.ingest_latency_ms_p99,
    coalesce(dead.dead_letters, 0) as dead_letters
from days
left join chunks on chunks.day = days.day
left join sessions on sessions.day = days.day
left join dead on dead.day = days.day
