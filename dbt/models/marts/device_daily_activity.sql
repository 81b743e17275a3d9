-- Per device and UTC day: how much it streamed, how much was speech, and its audio quality.
with sessions as (
    select
        device_id,
        session_date as activity_date,
        count(*) as sessions,
        sum(chunks) as chunks,
        sum(dropped_chunks) as dropped_chunks,
        sum(audio_s) as audio_s,
        sum(speech_s) as speech_s
    from {{ ref('stg_sessions') }}
    group by 1, 2
),
events as (
    select
        device_id,
        event_date as activity_date,
        count(*) as events,
        avg(duration_s) as avg_event_duration_s,
        avg(rms_dbfs) as avg_rms_dbfs,
        max(peak_dbfs) as max_peak_dbfs,
        avg(snr_db) as avg_snr_db,
        max(clipping_ratio) as max_clipping_ratio,
        avg(speech_ratio) as avg_speech_ratio,
        count(distinct sample_rate) as sample_rates
    from {{ ref('stg_audio_events') }}
    group by 1, 2
)
select
    coalesce(s.device_id, e.device_id) as device_id,
    coalesce(s.activity_date, e.activity_date) as activity_date,
    coalesce(s.sessions, 0) as sessions,
    coalesce(s.chunks, 0) as chunks,
    coalesce(s.dropped_chunks, 0) as dropped_chunks,
    coalesce(s.audio_s, 0) as audio_s,
    coalesce(s.speech_s, 0) as speech_s,
    coalesce(e.events, 0) as events,
    e.avg_event_duration_s,
    e.avg_rms_dbfs,
    e.max_peak_dbfs,
    e.avg_snr_db,
    e.max_clipping_ratio,
    e.avg_speech_ratio,
    e.sample_rates
from sessions s
full outer join events e
    on s.device_id = e.device_id and s.activity_date = e.activity_date
