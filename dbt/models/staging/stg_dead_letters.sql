select
    source,
    record_index,
    session_id,
    seq,
    reason,
    quarantined_at,
    ingest_date
from {{ source('bronze', 'dead_letters') }}
