-- Every device seen in sessions or events, with when it was first and last active.
with seen as (
    select device_id, started_at as seen_at from {{ ref('stg_sessions') }}
    union all
    select device_id, ended_at as seen_at from {{ ref('stg_sessions') }}
    union all
    select device_id, start_time as seen_at from {{ ref('stg_audio_events') }}
)
select
    device_id,
    min(seen_at) as first_seen_at,
    max(seen_at) as last_seen_at
from seen
group by device_id
