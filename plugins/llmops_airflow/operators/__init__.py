"""Airflow operators of llmops. Each one only wires an llmops stage into a task."""

from llmops_airflow.operators.subprocess_job import ProcessGroupOperator

__all__ = ["ProcessGroupOperator"]
