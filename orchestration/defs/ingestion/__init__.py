"""Sidecar tables (bronze, silver) as observed assets, with their quality checks."""
