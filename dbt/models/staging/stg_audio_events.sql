-- One row per detected event, with the ground truth folded into the model's label set.
select
    event_id,
    session_id,
    device_id,
    start_time,
    end_time,
    duration_s,
    rms_dbfs,
    peak_dbfs,
    clipping_ratio,
    snr_db,
    speech_ratio,
    predicted_label,
    score,
    model_version,
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
    sample_rate,
    feature_version,
    event_date
from {{ source('silver', 'audio_events') }}
