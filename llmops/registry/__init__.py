"""MLflow tracking and registry, data cards and model cards."""
