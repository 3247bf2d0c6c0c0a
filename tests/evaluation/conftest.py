"""The evaluation tests reuse the training fixtures' tokenizer (with its chat template)."""

from tests.training.conftest import data_home  # noqa: F401  (a pytest fixture, used by name)
