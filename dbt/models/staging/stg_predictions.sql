-- One row per result the gateway sent (run_id 'live') or a reprocess run derived, with the
-- ground truth folded into the model's label set.
select
    run_id || ':' || prediction_id as prediction_key,
    run_id,
    prediction_id,
    session_id,
    device_id,
    utterance,
    event_id,
    is_final,
    speech_final,
    start_s,
    duration_s,
    start_time,
    predicted_label,
    score,
    model_version,
    role,
    latency_ms,
    label as true_label,
    case
        when label is null then null
        when label in {{ in_list(var('model_labels')) }} then label
        else '_unknown_'
    end as true_class,
    case
        when label is null or predicted_label is null then null
        else predicted_label = (
            case when label in {{ in_list(var('model_labels')) }} then label else '_unknown_' end
        )
    end as is_correct,
    prediction_date
from {{ source('gold', 'predictions') }}
