-- What clients were told (role 'champion') and what the challenger answered on the side (role
-- 'shadow'), per UTC day, run, model version and role: results, final results, live accuracy
-- of final results where ground truth exists, and result latency (ms).
select
    prediction_date,
    run_id,
    coalesce(model_version, '-') as model_version,
    role,
    count(*) as results,
    count(*) filter (where is_final) as final_results,
    count(*) filter (where is_final and is_correct is not null) as labelled_finals,
    avg(case when is_correct then 1.0 else 0.0 end) filter (
        where is_final and is_correct is not null
    ) as live_accuracy,
    quantile_cont(latency_ms, 0.5) as latency_ms_p50,
    quantile_cont(latency_ms, 0.95) as latency_ms_p95
from {{ ref('stg_predictions') }}
group by 1, 2, 3, 4
