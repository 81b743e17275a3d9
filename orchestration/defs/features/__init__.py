"""Per-event summary features (gold.audio_features), daily partitions on event date."""
