"""The training fixtures (token shards, a tokenizer), shared with the operator tests."""

from tests.training.conftest import data_home  # noqa: F401  (a pytest fixture, used by name)
