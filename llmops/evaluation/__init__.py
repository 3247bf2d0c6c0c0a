"""Evaluation: generation metrics, language-model metrics, leakage and behaviour checks, the gate."""
