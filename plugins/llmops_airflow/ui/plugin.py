"""The ``llmops`` Airflow plugin: the LLMOps view, mounted at ``/llmops`` in the API server and
linked from the UI's navigation (the page renders inside the UI, in an iframe).

The only module that defines an ``AirflowPlugin``: Airflow imports every ``.py`` file under
``plugins/`` and registers each ``AirflowPlugin`` subclass it finds in a module's namespace, so
nothing else may import this class (a second module holding it would register it twice).

Every Airflow process loads plugins (a task does, for its template context), so loading this
one imports nothing heavy: the FastAPI app is built only when the API server (or ``airflow
plugins``) asks for :attr:`LlmopsPlugin.fastapi_apps`.
"""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

MOUNT = "/llmops"
"""``llmops_airflow.ui.app.MOUNT``, spelt out so that loading the plugin imports nothing else."""


def _base_path() -> str:
    """``[api] base_url``'s path: where the UI (and so ``/llmops``) lives behind a proxy."""
    base_url = conf.get("api", "base_url", fallback="") or ""
    return (urlsplit(base_url).path if "://" in base_url else base_url).rstrip("/")


@functools.cache
def _app() -> Any:
    from llmops_airflow.ui.app import create_app

    return create_app()


class LlmopsPlugin(AirflowPlugin):
    """The LLMOps view: data runs, training, the registry and the gate, the deployment, drift and
    retraining, with the retrain and rollback actions."""

    name = "llmops"
    external_views = [{
        "name": "LLMOps",
        "href": f"{_base_path()}{MOUNT}/",
        "destination": "nav",
        "url_route": "llmops",  # the page renders inside the UI at /plugin/llmops
        "nav_top_level": True,
    }]

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:
        """Built on first access: only the API server and ``airflow plugins`` ask."""
        return [{"app": _app(), "url_prefix": MOUNT, "name": "LLMOps view"}]

    @fastapi_apps.setter
    def fastapi_apps(self, value: list[Any]) -> None:
        raise AttributeError("the llmops plugin's fastapi_apps are built from llmops_airflow.ui.app")
