"""The closed loop: retraining the serving champion on new data (guards, incremental data, lineage, before/after)."""
