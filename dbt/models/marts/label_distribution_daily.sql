-- Ground-truth label mix per UTC day (events whose client sent a Label), with each label's share.
with labelled as (
    select event_date, true_label, true_class
    from {{ ref('stg_audio_events') }}
    where true_label is not null
)
select
    event_date,
    true_label,
    true_class,
    count(*) as events,
    count(*)::double / sum(count(*)) over (partition by event_date) as share_of_day
from labelled
group by 1, 2, 3
