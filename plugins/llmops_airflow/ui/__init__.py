"""The LLMOps view in the Airflow UI: ``plugin`` (the ``llmops`` AirflowPlugin, the only module
defining one), ``app`` (its FastAPI app at ``/llmops``: the page, the summary JSON, report files
and the retrain / rollback actions) and ``templates/`` (the page). Its data comes from
``llmops.ui`` (no airflow there). Nothing is imported here: Airflow imports every file under
``plugins/`` by itself."""
