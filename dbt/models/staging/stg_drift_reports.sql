select
    report_id,
    created_at,
    reference_model_version,
    window_start,
    window_end,
    n_reference,
    n_current,
    drift_share,
    drifted_columns,
    dataset_drift,
    html_uri,
    report_date
from {{ source('monitoring', 'drift_reports') }}
