"""Airflow-facing code of llmops: shared Assets, task helpers, and later hooks,
operators, sensors and the UI plugin. DAG files import from here; the core library
(``llmops``) never imports airflow."""
