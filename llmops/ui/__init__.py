"""The LLMOps view's data and pictures, built from ``$LLMOPS_HOME`` without Airflow.

``summary.build_summary(cfg)`` reads every section (data cards, training reports and loss
curves, the registry and the gate, Triton, drift checks and retraining decisions) into one
``llmops.records.ui.Summary``; ``charts`` draws its series as inline SVG. The Airflow plugin
(``plugins/llmops_airflow/ui``) serves both behind Airflow's authentication and adds the two
actions; this package never imports airflow.
"""
