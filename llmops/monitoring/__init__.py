"""Monitoring: the served model's inference log, Triton's metrics and the drift check."""
