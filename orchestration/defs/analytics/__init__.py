"""The dbt project for analysts, loaded as assets downstream of the lake tables."""
