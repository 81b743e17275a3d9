-- Live accuracy per UTC day and model version: the gateway's predictions against ground truth.
select
    event_date,
    model_version,
    count(*) as labelled_events,
    count(*) filter (where is_correct) as correct,
    avg(case when is_correct then 1.0 else 0.0 end) as accuracy,
    avg(score) as avg_score
from {{ ref('stg_audio_events') }}
where is_correct is not null and model_version is not null
group by 1, 2
