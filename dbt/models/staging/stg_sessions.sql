select
    session_id,
    device_id,
    encoding,
    sample_rate,
    started_at,
    ended_at,
    chunks,
    dropped_chunks,
    audio_s,
    speech_s,
    events,
    case when chunks + dropped_chunks > 0
        then dropped_chunks::double / (chunks + dropped_chunks) end as drop_rate,
    session_date
from {{ source('silver', 'sessions') }}
