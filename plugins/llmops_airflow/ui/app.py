"""The LLMOps view: a FastAPI app the ``llmops`` plugin mounts at ``/llmops`` in Airflow's API server.

Routes (every one needs an authenticated Airflow user: anonymous callers get 401):

* ``GET /llmops/``: the page (server-rendered HTML, charts as inline SVG), shown inside the
  Airflow UI through the plugin's external view;
* ``GET /llmops/api/summary``: the same data as JSON (``llmops.records.ui.Summary``);
* ``GET /llmops/reports/<kind>/<name>/<file>``: a file of ``$LLMOPS_HOME/reports`` (data funnels,
  evaluation and drift reports), nothing outside it;
* ``POST /llmops/api/actions/retrain`` and ``/rollback``: trigger ``llmops_retrain`` /
  ``llmops_rollback`` as a DAG run of the calling user, through Airflow's own trigger route.

Reading needs read access to the runs of the llmops DAGs; an action needs the DAG-run
permission on its DAG (``requires_access_dag("POST", RUN, dag_id)``: SimpleAuthManager's
``user`` role and above, FAB's "can create DAG Runs"). Both come from Airflow's own security
dependencies, which read the ``Authorization: Bearer`` token or the UI's ``_token`` cookie.
A cookie goes with every request a browser sends to this origin, even one another site
makes it send, so an action authenticated by the cookie must also come from this origin
(``Origin`` present and equal to the request's own); a Bearer token cannot be sent by
another site's page without the holder's help, so it needs no such check.

Nothing heavy is imported when Airflow loads plugins (every task process loads them): this
module imports only the standard library at the top, and :func:`create_app` brings in
FastAPI, Airflow's API modules and llmops when the API server asks for the app. No
``from __future__ import annotations``: FastAPI reads the routes' annotations, and they
name classes imported inside :func:`create_app`.
"""

import functools
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

log = logging.getLogger(__name__)

MOUNT = "/llmops"
"""Where the API server mounts the app (the plugin's ``url_prefix``)."""
TEMPLATES = Path(__file__).resolve().parent / "templates"
Action = Literal["retrain", "rollback"]
ACTIONS: dict[Action, str] = {"retrain": "llmops_retrain", "rollback": "llmops_rollback"}
"""Each action and the DAG it triggers."""
_DEFAULT_PORTS = {"http": 80, "https": 443}


# ---- the origin rule -------------------------------------------------------------------------


def normalise_origin(value: str | None) -> str | None:
    """``scheme://host:port`` with the scheme and host in lower case and the default port
    spelt out, or None for anything that is not an http(s) origin (``null``, a bare host)."""
    if not value:
        return None
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return f"{scheme}://{parts.hostname.lower()}:{port or _DEFAULT_PORTS[scheme]}"


def origin_refusal(*, authorization: str | None, origin: str | None, request_origin: str,
                   trusted: Iterable[str] = ()) -> str | None:
    """Why an action request must be refused (a sentence for the 403), or None to go ahead.

    A request that authenticated with ``Authorization: Bearer`` goes ahead (Airflow reads the
    token before the cookie; another site cannot attach it). Otherwise it authenticated with
    the UI's cookie, and its ``Origin`` must be present and equal to ``request_origin`` (this
    server as the request reached it: scheme, host and port) or to one of ``trusted`` (the
    configured ``[api] base_url``).
    """
    if authorization and authorization.strip().split(" ", 1)[0].lower() == "bearer":
        return None
    if not origin:
        return ("refused: an action authenticated by the session cookie must come from this site's own pages "
                "(the request has no Origin header); scripts use an Authorization: Bearer token")
    allowed = {o for o in (normalise_origin(request_origin), *map(normalise_origin, trusted)) if o}
    if normalise_origin(origin) not in allowed:
        return (f"refused: cross-origin request (Origin {origin} is not {request_origin}): actions authenticated "
                f"by the session cookie are accepted from this site's own pages only")
    return None


# ---- links -------------------------------------------------------------------------------------


def ui_base(root_path: str) -> str:
    """The Airflow UI's base path (``[api] base_url``'s path, usually empty) from the app's root path."""
    return root_path.removesuffix(MOUNT).rstrip("/")


def run_url(base: str, dag_id: str, run_id: str) -> str:
    """A DAG run's page in the Airflow 3 UI (``/dags/<dag_id>/runs/<run_id>``)."""
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


# ---- the page ------------------------------------------------------------------------------------


@functools.cache
def _templates() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_num, when=_when, q=lambda s: quote(str(s), safe=""),
                       path=lambda s: quote(str(s), safe="/"), counts=_counts)
    return env


def _num(value: float | int | None, digits: int = 4) -> str:
    """A number as people read it: thousands separated, floats to ``digits`` significant digits."""
    if value is None:
        return "–"
    if isinstance(value, int):  # bool too
        return f"{value:,}"
    return f"{value:,.0f}" if abs(value) >= 10 ** digits else f"{value:.{digits}g}"


def _when(value: Any) -> str:
    """A Unix time or datetime as ``2026-12-05 08:36:21 UTC``."""
    import datetime as dt

    if value is None:
        return "–"
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _counts(counts: Mapping[str, int] | None) -> str:
    """``{"http_404": 2, "timeout": 1}`` as ``http_404 2, timeout 1`` (largest first), or ``none``."""
    if not counts:
        return "none"
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _chart(draw: Callable[..., str]) -> Callable[..., Any]:
    """A chart function for the template: its SVG as markup, or a line saying why it failed
    (a picture must not take the page down)."""
    from markupsafe import Markup, escape

    def safe(*args: Any) -> Any:
        try:
            return Markup(draw(*args))  # matplotlib's SVG: it escapes the text it draws
        except Exception as exc:  # noqa: BLE001
            log.warning("LLMOps view: a chart failed: %s", exc, exc_info=True)
            return Markup('<p class="note error">chart failed: {}</p>').format(escape(f"{type(exc).__name__}: {exc}"))

    return safe


def render_page(summary: Any, *, base: str = "", mount: str = MOUNT, user: str = "",
                can_act: Mapping[str, bool] | None = None) -> str:
    """The page for ``summary`` (a :class:`llmops.records.ui.Summary`). ``base`` is the Airflow
    UI's base path, ``mount`` this app's path; ``can_act`` says which actions the user may take
    (the buttons of the others are disabled; the routes check again)."""
    from llmops.ui import charts

    return _templates().get_template("page.html").render(
        s=summary, base=base, mount=mount, user=user, can_act={a: False for a in ACTIONS} | dict(can_act or {}),
        actions=ACTIONS,
        run_url=lambda run: run_url(base, run.dag_id, run.run_id),
        loss_chart=_chart(charts.loss_chart), signal_chart=_chart(charts.signal_chart),
        traffic_chart=_chart(charts.traffic_chart))


# ---- the app -----------------------------------------------------------------------------------


def _trusted_origins() -> list[str]:
    from airflow.configuration import conf

    base_url = conf.get("api", "base_url", fallback="") or ""
    return [base_url] if base_url.startswith(("http://", "https://")) else []


def create_app() -> Any:
    """The FastAPI app of the view (built once, when the API server mounts the plugin)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.common.db.common import SessionDep
    from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
    from fastapi import Body, Depends, FastAPI, HTTPException, Request
    from fastapi.responses import FileResponse, HTMLResponse

    from llmops.config import load_config
    from llmops.records.ui import ActionResult, RetrainRequest, RollbackRequest, Summary
    from llmops.ui.summary import VIEW_DAGS, ReportPathError, build_summary, report_file

    # No docs or OpenAPI routes: every route of the view needs a user.
    app = FastAPI(title="LLMOps view", docs_url=None, redoc_url=None, openapi_url=None)

    def may_read(request: Request, user: GetUserDep) -> BaseUser:
        """Read access to the runs of every DAG the view shows."""
        for dag_id in VIEW_DAGS:
            requires_access_dag("GET", DagAccessEntity.RUN, dag_id)(request, user)
        return user

    def same_origin(request: Request, user: GetUserDep) -> None:
        reason = origin_refusal(authorization=request.headers.get("authorization"),
                                origin=request.headers.get("origin"),
                                request_origin=f"{request.url.scheme}://{request.url.netloc}",
                                trusted=_trusted_origins())
        if reason:
            raise HTTPException(403, reason)

    def can_act(user: BaseUser) -> dict[str, bool]:
        manager = get_auth_manager()
        return {action: manager.is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                                  details=DagDetails(id=dag_id), user=user)
                for action, dag_id in ACTIONS.items()}

    def summary_for(request: Request, session: Any) -> Summary:
        from airflow.models.dagrun import DagRun
        from sqlalchemy import select

        rows = session.execute(select(DagRun.dag_id, DagRun.run_id).where(DagRun.dag_id.in_(VIEW_DAGS))
                               .order_by(DagRun.id.desc()).limit(5000))
        runs: dict[str, list[str]] = {}
        for dag_id, run_id in rows:
            runs.setdefault(dag_id, []).append(run_id)
        return build_summary(load_config(), airflow_runs=runs, host=request.url.hostname or "127.0.0.1")

    reader = Depends(may_read)

    @app.get("/", response_class=HTMLResponse)
    def page(request: Request, session: SessionDep, user: BaseUser = reader) -> HTMLResponse:
        summary = summary_for(request, session)
        root = request.scope.get("root_path", "")
        return HTMLResponse(render_page(summary, base=ui_base(root), mount=root, user=user.get_name(),
                                        can_act=can_act(user)))

    @app.get("/api/summary")
    def summary(request: Request, session: SessionDep, user: BaseUser = reader) -> dict[str, Any]:
        return summary_for(request, session).dump()

    @app.get("/reports/{path:path}")
    def report(path: str, user: BaseUser = reader) -> FileResponse:
        try:
            target = report_file(load_config().layout, path)
        except ReportPathError as exc:
            raise HTTPException(404, str(exc)) from None
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
        if target.suffix in (".html", ".htm", ".svg"):
            # A report is a document, never a script on this origin; same-origin still, so the
            # session cookie goes with its pictures (beside it under the reports).
            headers["Content-Security-Policy"] = "sandbox allow-same-origin"
        return FileResponse(target, headers=headers)

    def trigger(action: Action, conf: dict[str, str | bool], request: Request, user: BaseUser,
                session: Any) -> ActionResult:
        """A DAG run of ``action``'s DAG, created by Airflow's own trigger route as ``user``."""
        from airflow.api_fastapi.core_api.datamodels.dag_run import TriggerDAGRunPostBody
        from airflow.api_fastapi.core_api.routes.public.dag_run import trigger_dag_run
        from airflow.models.dag import DagModel
        from airflow.models.log import Log
        from sqlalchemy import select

        dag_id = ACTIONS[action]
        dag = session.scalar(select(DagModel).where(DagModel.dag_id == dag_id))
        if dag is None or dag.is_stale:
            raise HTTPException(404, f"DAG {dag_id} is not in Airflow: the dag-processor has not parsed "
                                     f"dags/{dag_id}.py (see the import errors in the Airflow UI)")
        if dag.is_paused:
            raise HTTPException(409, f"DAG {dag_id} is paused: unpause it in the Airflow UI, then try again")
        body = TriggerDAGRunPostBody(logical_date=None, conf=dict(conf),
                                     note=f"{action} from the LLMOps view by {user.get_name()}")
        # Typed as the route's response model; it returns the DagRun it created.
        run: Any = trigger_dag_run(dag_id=dag_id, body=body, dag_bag=_dag_bag(app), user=user, session=session,
                              request=request)
        # The run records who triggered it; the audit log (Browse → Audit Log) records the action too.
        session.add(Log(event=f"llmops_view.{action}", owner=user.get_name(), owner_display_name=user.get_name(),
                        dag_id=dag_id, run_id=run.run_id, extra=json.dumps({"conf": conf})))
        root = request.scope.get("root_path", "")
        return ActionResult(action=action, dag_id=dag_id, run_id=run.run_id,
                            url=run_url(ui_base(root), dag_id, run.run_id), conf=conf,
                            triggered_by=user.get_name())

    def registry_refusal(check: Callable[[], None]) -> None:
        """Run a registry check; its refusal is a 409, an unreachable registry a 503."""
        from llmops.errors import PermanentError, TransientError

        try:
            check()
        except PermanentError as exc:
            raise HTTPException(409, str(exc)) from None
        except TransientError as exc:
            raise HTTPException(503, f"the registry did not answer: {exc}") from None

    @app.post("/api/actions/retrain",
              dependencies=[Depends(requires_access_dag("POST", DagAccessEntity.RUN, ACTIONS["retrain"])),
                            Depends(same_origin)])
    def retrain(request: Request, session: SessionDep, user: GetUserDep,
                body: Annotated[RetrainRequest | None, Body()] = None) -> dict[str, Any]:
        cfg = load_config()
        registry_refusal(lambda: _require_champion(cfg))
        conf: dict[str, str | bool] = {"clear_failed_gate": True} if body and body.clear_failed_gate else {}
        if body and body.cooldown is not None:
            conf["cooldown"] = body.cooldown.strip()
        return trigger("retrain", conf, request, user, session).dump()

    @app.post("/api/actions/rollback",
              dependencies=[Depends(requires_access_dag("POST", DagAccessEntity.RUN, ACTIONS["rollback"])),
                            Depends(same_origin)])
    def rollback(request: Request, session: SessionDep, user: GetUserDep,
                 body: Annotated[RollbackRequest | None, Body()] = None) -> dict[str, Any]:
        cfg = load_config()
        wanted = (body.to_version or "").strip() if body else ""
        registry_refusal(lambda: _plan_rollback(cfg, wanted or None))
        conf: dict[str, str | bool] = {"to_version": wanted} if wanted else {}
        return trigger("rollback", conf, request, user, session).dump()

    return app


def _dag_bag(app: Any) -> Any:
    """Airflow's DAG bag for the trigger route: the API server keeps its own on its root app,
    which a mounted app cannot reach, so the view keeps one (a cached read of the serialized DAGs)."""
    bag = getattr(app.state, "dag_bag", None)
    if bag is None:
        from airflow.api_fastapi.common.dagbag import create_dag_bag

        bag = app.state.dag_bag = create_dag_bag()
    return bag


def _require_champion(cfg: Any) -> None:
    """A retraining continues the champion: refuse when there is none (the DAG would skip)."""
    from llmops.errors import PermanentError
    from llmops.ui.summary import registry_store_missing

    name = cfg.serving.model_name
    if registry_store_missing(cfg) is None:
        from llmops.registry import model_registry as reg

        if reg.version_for(cfg, name, reg.CHAMPION) is not None:
            return
    raise PermanentError(f"{name} has no champion yet: nothing to retrain (trigger llmops_data; the first model "
                         f"becomes champion when llmops_deploy serves it)")


def _plan_rollback(cfg: Any, to_version: str | None) -> None:
    """The rollback DAG's own plan (``llmops.serving.deploy.plan_rollback``), checked before its run
    is created, so a refusal answers at once instead of as a failed run."""
    from llmops.errors import PermanentError
    from llmops.ui.summary import registry_store_missing

    if registry_store_missing(cfg) is not None:
        raise PermanentError(f"{cfg.serving.model_name} has no champion: nothing to roll back")
    from llmops.serving.deploy import plan_rollback

    plan_rollback(cfg, to_version)
