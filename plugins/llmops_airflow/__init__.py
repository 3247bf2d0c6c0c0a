"""Airflow-facing code of llmops: the shared Assets, DAG Params turned into the llmops
configuration, llmops error kinds turned into task retries, and the operators that run
multi-process jobs. DAG files import from here; the core library (``llmops``) never
imports airflow."""
