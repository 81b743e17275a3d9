-- MLflow's backend store: a database of its own (MLflow and Dagster both have a runs table).
CREATE DATABASE mlflow;
