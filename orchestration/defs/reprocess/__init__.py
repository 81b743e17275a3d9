"""Re-derived predictions: bronze re-segmented and re-scored by a chosen model, per day."""
