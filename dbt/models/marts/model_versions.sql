-- One row per model version: its latest held-out evaluation, gate verdicts and live accuracy.
with evaluations as (
    select
        model_version,
        max(evaluated_at) as last_evaluated_at,
        arg_max(accuracy, evaluated_at) as heldout_accuracy,
        arg_max(macro_f1, evaluated_at) as heldout_macro_f1,
        arg_max(latency_us_p99, evaluated_at) as latency_us_p99,
        max(case when action = 'promote' then evaluated_at end) as promoted_at,
        count(*) filter (where action = 'reject') as rejections,
        count(*) filter (where action = 'rollback') as rollbacks_to
    from {{ ref('stg_model_evaluations') }}
    where model_version <> '-'
    group by 1
),
live as (
    select
        model_version,
        sum(labelled_events)::bigint as live_labelled_events,
        sum(correct)::double / nullif(sum(labelled_events), 0) as live_accuracy
    from {{ ref('model_accuracy_daily') }}
    group by 1
)
select
    coalesce(e.model_version, l.model_version) as model_version,
    e.last_evaluated_at,
    e.heldout_accuracy,
    e.heldout_macro_f1,
    e.latency_us_p99,
    e.promoted_at,
    coalesce(e.rejections, 0) as rejections,
    coalesce(e.rollbacks_to, 0) as rollbacks_to,
    coalesce(l.live_labelled_events, 0) as live_labelled_events,
    l.live_accuracy
from evaluations e
full outer join live l on e.model_version = l.model_version
