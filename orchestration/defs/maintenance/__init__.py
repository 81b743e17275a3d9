"""Lake maintenance: compaction, vacuum and retention, one writer per table at a time."""
