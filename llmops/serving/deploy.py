"""Deploy a registered model version to the running Triton server, verified, with rollback.

``deploy`` takes a ``models:/llmops/<version>`` or ``models:/llmops@<alias>`` URI:

1. **Resolve** the version in the MLflow registry; refuse one whose ``gate_result`` tag
   is not ``passed`` (a model that failed the gate never reaches users).
2. **Stage**: download exactly the registered artifacts, build them as version N of
   ``serving.staging_model_name``, load that, and smoke-test it through tritonclient
   over HTTP *and* gRPC (real generations: well-formed, answering as version
   N, not every answer empty). Staging is unloaded and removed afterwards, pass or fail.
3. **Swap**: add version N to the served model, point its ``version_policy`` at N and
   reload. Triton's explicit model control loads N while the old version keeps serving,
   then moves traffic and unloads the old one when its in-flight requests are done, so
   no request fails; a version that fails to load leaves the old one serving.
4. **Verify** live answers come from N, then set MLflow ``champion`` to N (recording the
   previous champion on it) and remove the old version directory.

If staging or the swap fails, the old version keeps serving, the new directory is
removed, ``champion`` is unchanged, and ``DeployFailed`` says why. ``rollback`` serves
the champion's predecessor, or a chosen earlier version that passed the gate, through the
same verified path and moves ``champion`` to it.

A broken model, a failed smoke test or a version that did not pass the gate is permanent
(``DeployFailed``): a retry cannot mend it. Triton not ready (``ServerUnavailable``), the
deployment lock held by another deployment and an unreachable registry are transient
(``DeployBlocked``): nothing was changed, and a later try may succeed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmops import artifacts
from llmops.config import LlmopsConfig
from llmops.errors import PermanentError, TransientError, is_transient
from llmops.records.events import ChampionEvent
from llmops.records.serving import Answer, DeployResult, Protocol, RegistryFacts, SmokeAnswer
from llmops.registry import model_registry as registry
from llmops.serving import repository
from llmops.serving.client import generate

log = logging.getLogger(__name__)

SMOKE_QUESTIONS = ("What does the assert statement do?", "What is the for statement?")
"""Smoke-test prompts (the first behavioural cases the gate already checked on this model)."""
SMOKE_MAX_TOKENS = 24
LIVE_CHECKS = 3
"""Live requests that must come from the new version before ``champion`` moves."""
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")

Progress = Callable[[str], None]


class DeployFailed(PermanentError, RuntimeError):
    """The version was not deployed; the previous one keeps serving and ``champion`` is unchanged."""

    def __str__(self) -> str:
        return f"{super().__str__()}; the previous version keeps serving and champion is unchanged"


class DeployBlocked(TransientError, DeployFailed):
    """Not deployed *yet*: another deployment holds the lock, or the registry or Triton did not
    answer. Nothing was changed; a later try may succeed."""


def resolve(cfg: LlmopsConfig, model_uri: str) -> tuple[str, int, Any]:
    """``(name, version, ModelVersion)`` of a ``models:/name/N`` or ``models:/name@alias`` URI."""
    from mlflow.exceptions import MlflowException

    match = _URI.match(model_uri.strip())
    if not match:
        raise DeployFailed(f"{model_uri!r} is not a registered model URI: use models:/<name>/<version> or "
                           f"models:/<name>@<alias>")
    name = match["name"]
    client = registry.tracking.connect(registry.tracking.tracking_uri(cfg))
    try:
        if match["version"]:
            mv = client.get_model_version(name, match["version"])
        else:
            mv = client.get_model_version_by_alias(name, match["alias"])
    except MlflowException as exc:
        reason = str(exc).splitlines()[0]
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            raise DeployFailed(f"{model_uri}: not in the registry ({reason})") from None
        raise DeployBlocked(f"{model_uri}: the registry did not answer ({reason})") from None
    return name, int(mv.version), mv


def model_info(model_uri: str, mv: Any) -> RegistryFacts:
    """The ``model_info.json`` facts of a registered version ``mv`` (an MLflow ``ModelVersion``),
    shown by the server and ``serve status``."""
    tags = dict(mv.tags or {})
    return RegistryFacts(model_uri=model_uri, registered_name=mv.name, version=str(mv.version), run_id=mv.run_id,
                         data_card_hash=tags.get("data_card_hash"), tokenizer_hash=tags.get("tokenizer_hash"),
                         gate_result=tags.get("gate_result"), code_version=tags.get("code_version"))


def smoke_test(server: Any, name: str, version: int, *, questions: tuple[str, ...] = SMOKE_QUESTIONS
               ) -> list[SmokeAnswer]:
    """Real generations over HTTP and gRPC; raises ``DeployFailed`` on any malformed answer, or
    when no answer has any text.

    The smoke test proves the serving path (the version loads, both protocols answer, as
    version N, with generated tokens); how good the answers are is the gate's verdict. A model
    that ends one answer at once (end of sequence first: an empty text) is serving; a model
    whose every answer is empty is not, and is refused."""
    rows = []
    endpoints: tuple[tuple[Protocol, str], ...] = (("http", server.http_address), ("grpc", server.grpc_address))
    for protocol, url in endpoints:
        for question in questions:
            try:
                answer = generate(question, url=url, protocol=protocol, model=name, max_tokens=SMOKE_MAX_TOKENS)
            except Exception as exc:  # tritonclient raises its own exception types per protocol
                if _unanswered(exc):  # the network or a busy server: a later try may pass
                    raise DeployBlocked(f"smoke test over {protocol}: {question!r}: the server did not "
                                        f"answer: {exc}") from None
                raise DeployFailed(f"smoke test over {protocol}: {question!r} was refused: {exc}") from None
            problems = _answer_problems(answer, version)
            if problems:
                raise DeployFailed(f"smoke test over {protocol}: {question!r}: {'; '.join(problems)} "
                                   f"(answer {answer.text!r:.120})")
            rows.append(SmokeAnswer(protocol=protocol, question=question, **answer.model_dump()))
    if not any(row.text.strip() for row in rows):
        raise DeployFailed(f"smoke test: every answer was empty ({len(rows)} over HTTP and gRPC): the model "
                           f"generates no text")
    return rows


def _unanswered(exc: Exception) -> bool:
    """A connection error or timeout (HTTP), or gRPC's UNAVAILABLE / DEADLINE_EXCEEDED: no
    verdict on the model. A refusal (HTTP 4xx, INVALID_ARGUMENT) or an error the model
    returned is one."""
    text = str(exc)
    return (isinstance(exc, OSError | TimeoutError) or "UNAVAILABLE" in text or "DEADLINE_EXCEEDED" in text
            or "timed out" in text.lower())


def _answer_problems(answer: Answer, version: int) -> list[str]:
    problems = []
    if answer.model_version != str(version):
        problems.append(f"answered as version {answer.model_version!r}, expected {version}")
    if answer.completion_tokens < 1 or answer.prompt_tokens < 1:
        problems.append(f"token counts {answer.prompt_tokens}/{answer.completion_tokens}")
    return problems


def served_version(server: Any, name: str) -> int | None:
    """The version of ``name`` Triton has READY (the highest if several), or None."""
    ready = [int(m.version) for m in server.repository_index() if m.name == name and m.state == "READY"
             and m.version.isdigit()]
    return max(ready) if ready else None


def _wait_while(server: Any, name: str, state: str, timeout: float) -> bool:
    """Poll the repository index until no version of ``name`` is in ``state``; False on timeout."""
    deadline = time.monotonic() + timeout
    while any(m.name == name and m.state == state for m in server.repository_index()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _settled(server: Any, name: str, timeout: float = 60.0) -> None:
    """Wait until no version of ``name`` is UNLOADING, so the next deployment (or a restart)
    starts from a settled server rather than one still tearing the old version down."""
    if not _wait_while(server, name, "UNLOADING", timeout):
        log.warning("%s: an old version was still unloading after %.0f s", name, timeout)


def _require_server(server: Any, wait_s: float = 10.0) -> None:
    # Readiness over HTTP, not the local pid file: in production the server is another
    # host (docker compose's `triton` service) that shares only the model repository.
    from llmops.serving.server import ServerUnavailable

    deadline = time.monotonic() + wait_s
    while not server.ready():
        if time.monotonic() > deadline:
            raise ServerUnavailable(f"Triton is not running or not ready at {server.http_url}: start it with "
                                    f"`llmops serve start` (log: {server.log_path})")
        time.sleep(0.5)


def _stage(cfg: LlmopsConfig, server: Any, hf_dir: Path, version: int, info: RegistryFacts,
           progress: Progress) -> list[SmokeAnswer]:
    staging = cfg.serving.staging_model_name
    with contextlib.suppress(Exception):  # nothing staged: the usual case
        server.unload_model(staging)
    repository.remove_model(cfg, staging)
    repository.build_version(cfg, hf_dir=hf_dir, name=staging, version=version, info=info)
    try:
        progress(f"staging: loading version {version} as {staging!r}")
        try:
            server.load_model(staging)
        except Exception as exc:
            raise DeployFailed(f"version {version} failed to load under {staging!r}: {exc}") from None
        progress("staging: smoke tests over HTTP and gRPC")
        return smoke_test(server, staging, version)
    finally:
        try:
            server.unload_model(staging)
        except Exception as exc:  # never loaded, or already gone
            log.debug("unloading %s: %s", staging, exc)
        repository.remove_model(cfg, staging)


def _live_versions(server: Any, name: str) -> list[str]:
    return [generate(SMOKE_QUESTIONS[0], url=server.http_address, model=name, max_tokens=4).model_version
            for _ in range(LIVE_CHECKS)]


def _restore(cfg: LlmopsConfig, server: Any, name: str, version: int, previous: int | None, had_dir: bool) -> None:
    """Undo a swap to ``version``: the previous version pinned and serving (or nothing, on a
    first deployment), the new directory gone. Every step is attempted; failures are logged."""
    # A client-side load timeout does not stop Triton's background load: wait it out first.
    steps: list[tuple[str, Callable[[], object]]] = [
        ("waiting for Triton's load to settle",
         lambda: _wait_while(server, name, "LOADING", cfg.serving.startup_timeout_s))]
    if previous is not None:
        steps += [("pinning the previous version", lambda: repository.write_config(cfg, name, versions=[previous])),
                  ("reloading the previous version", lambda: server.load_model(name))]
    else:
        steps += [("unloading the failed version", lambda: server.unload_model(name))]
    if not had_dir:
        steps += [("removing the new version directory", lambda: repository.remove_version(cfg, name, version))]
    for what, step in steps:
        try:
            step()
        except Exception as exc:  # keep undoing: each step makes the state safer on its own
            log.error("rollback of the swap to %s version %s: %s failed: %s", name, version, what, exc)
    if previous is None and not repository.served_versions(cfg, name):
        repository.remove_model(cfg, name)


def _swap(cfg: LlmopsConfig, server: Any, hf_dir: Path, version: int, info: RegistryFacts, previous: int | None,
          progress: Progress) -> list[str]:
    name = cfg.serving.model_name
    had_dir = version in repository.served_versions(cfg, name)
    progress(f"swap: loading version {version} of {name!r}"
             + (f" while version {previous} keeps serving" if previous else ""))
    try:
        repository.build_version(cfg, hf_dir=hf_dir, name=name, version=version, info=info)
        repository.write_config(cfg, name, versions=[version])
        server.load_model(name)
        live = _live_versions(server, name)
        if set(live) != {str(version)}:
            raise DeployFailed(f"after the swap {name!r} answered as versions {live}, expected {version}")
        _settled(server, name)
        return live
    except BaseException as exc:
        # Also on a task timeout or SIGTERM (BaseException in Airflow): never leave an
        # unverified version pinned and serving for a retry to find.
        _restore(cfg, server, name, version, previous, had_dir)
        if isinstance(exc, DeployFailed) or not isinstance(exc, Exception):
            raise
        # Undone either way; Triton becoming unreachable mid-swap is worth a later try.
        kind = DeployBlocked if is_transient(exc) else DeployFailed
        raise kind(f"swap to version {version} failed: {exc}") from None


@contextlib.contextmanager
def _deploy_lock(cfg: LlmopsConfig, wait_s: float = 600.0):
    """One deployment at a time per model repository (a DAG run and a CLI call could meet):
    a second one waits for the first, then sees what it left. The lock file sits inside the
    repository (hidden; Triton ignores it), the one directory every deployer shares."""
    root = repository.repository_path(cfg)
    root.mkdir(parents=True, exist_ok=True)
    path = root / ".deploy.lock"
    with open(path, "a") as fh:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DeployBlocked(f"another deployment held {path} for {wait_s:.0f} s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def deploy(cfg: LlmopsConfig, model_uri: str = "models:/llmops@challenger", *, server: Any = None,
           progress: Progress = log.info, promote: bool = True, require_gate: bool = True) -> DeployResult:
    """Stage, smoke-test, swap, verify and promote one registered version (see the module doc)."""
    with _deploy_lock(cfg):
        return _deploy(cfg, model_uri, server=server, progress=progress, promote=promote,
                       require_gate=require_gate)


def _remove_other_versions(cfg: LlmopsConfig, name: str, keep: int) -> None:
    for old in repository.served_versions(cfg, name):
        if old != keep:
            repository.remove_version(cfg, name, old)


def _deploy(cfg: LlmopsConfig, model_uri: str, *, server: Any, progress: Progress, promote: bool,
            require_gate: bool) -> DeployResult:
    from llmops.serving.server import TritonServer

    server = server or TritonServer(cfg)
    name, version, mv = resolve(cfg, model_uri)
    if name != cfg.serving.model_name:
        raise DeployFailed(f"{model_uri}: only the served model {cfg.serving.model_name!r} is deployed "
                           f"(variants are registered as {cfg.serving.model_name}-<variant>)")
    gate = (mv.tags or {}).get("gate_result")
    if require_gate and gate != "passed":
        raise DeployFailed(f"{name} version {version} has gate_result={gate!r}: only versions that passed the "
                           f"evaluation gate are deployed")
    _require_server(server)
    uri = f"models:/{name}/{version}"
    previous = served_version(server, name)
    if previous == version:
        # Served already (a retried task, or a second call): verify it live before the alias
        # moves, and finish what an interrupted deployment may have left undone.
        live = _live_versions(server, name)
        if set(live) != {str(version)}:
            raise DeployFailed(f"{uri} is loaded but {name!r} answered as versions {live}")
        champion = registry.version_for(cfg, name, registry.CHAMPION)
        if promote:
            registry.promote_champion(cfg, str(version), name=name)
        _remove_other_versions(cfg, name, version)
        progress(f"{uri} is already serving")
        return DeployResult(name=name, version=version, model_uri=uri, previous=int(champion) if champion else None,
                            status="already serving", live=live)

    progress(f"downloading {uri} from the registry")
    hf_dir = registry.download(cfg, uri, _download_dir(cfg, name, version))
    info = model_info(uri, mv)
    smoke = _stage(cfg, server, hf_dir, version, info, progress)
    live = _swap(cfg, server, hf_dir, version, info, previous, progress)
    if promote:
        registry.promote_champion(cfg, str(version), name=name)
        progress(f"champion -> {name} version {version}")
    _remove_other_versions(cfg, name, version)
    return DeployResult(name=name, version=version, model_uri=uri, previous=previous, status="deployed",
                        smoke=smoke, live=live)


def _version_number(name: str, value: int | str | None) -> int | None:
    """``to_version`` as a version number; None (or an empty string: a form left blank) is None."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
        raise DeployFailed(f"to_version {value!r} is not a version number: give a registered version of {name} "
                           f"(e.g. 3), or nothing for the version the champion replaced")
    return int(text)


def plan_rollback(cfg: LlmopsConfig, to_version: int | str | None = None) -> tuple[int, int]:
    """``(champion, target)`` of a rollback, or ``DeployFailed`` saying why there is none.

    ``to_version`` None (or empty) means the version the champion replaced (its
    ``llmops.previous_champion`` tag). Refused: no champion; a first champion with nothing
    before it; a ``to_version`` that is not a number, is the champion itself, is not
    registered, or did not pass the gate. Reads the registry only (no Triton, no lock), so
    a refusal is cheap and certain; ``rollback`` plans again under the deployment lock.
    """
    name = cfg.serving.model_name
    wanted = _version_number(name, to_version)
    current = registry.version_for(cfg, name, registry.CHAMPION)
    if current is None:
        raise DeployFailed(f"{name} has no champion: nothing to roll back")
    if wanted is None:
        _, _, champion = resolve(cfg, f"models:/{name}/{current}")
        previous = (champion.tags or {}).get(registry.PREVIOUS_CHAMPION_TAG)
        if not previous:
            raise DeployFailed(f"{name} version {current} is the first champion: there is no earlier one to serve "
                               f"(name a version with to_version)")
        wanted = int(previous)
    if wanted == int(current):
        raise DeployFailed(f"{name} version {wanted} is already the champion: nothing to roll back to")
    _, _, mv = resolve(cfg, f"models:/{name}/{wanted}")  # not registered: DeployFailed
    gate = (mv.tags or {}).get("gate_result")
    if gate != "passed":
        raise DeployFailed(f"{name} version {wanted} has gate_result={gate!r}: only versions that passed the "
                           f"evaluation gate are served")
    return int(current), wanted


def rollback(cfg: LlmopsConfig, *, to_version: int | str | None = None, server: Any = None,
             progress: Progress = log.info) -> DeployResult:
    """Serve an earlier version (verified like a deployment), then move ``champion`` to it.

    ``to_version`` (default: the version the champion replaced) is checked by
    :func:`plan_rollback`. The alias moves as ``registry.rollback_champion`` says: back
    along the deployments by default, recorded like a promotion for a chosen version, so a
    second rollback returns from it. Holds the deployment lock throughout, so no deployment
    can slip in between serving the earlier version and moving the alias to it. The result's
    status is ``rolled back`` and its ``previous`` the champion it replaced."""
    name = cfg.serving.model_name
    with _deploy_lock(cfg):
        current, target = plan_rollback(cfg, to_version)
        progress(f"rolling back: {name} version {current} -> {target}")
        result = _deploy(cfg, f"models:/{name}/{target}", server=server, progress=progress, promote=False,
                         require_gate=True)
        registry.rollback_champion(cfg, name=name, to_version=str(target))
        progress(f"champion -> {name} version {target} (was {current})")
    return result.model_copy(update={"previous": current, "status": "rolled back"})


def ensure_champion_in_repository(cfg: LlmopsConfig, progress: Progress = log.info) -> int | None:
    """Before the server starts: put the MLflow ``champion`` into the repository if it is not there,
    so ``serve start`` serves it. Returns the champion's version (None when there is none)."""
    name = cfg.serving.model_name
    with _deploy_lock(cfg):
        version = registry.version_for(cfg, name, registry.CHAMPION)
        if version is None:
            return None
        if int(version) not in repository.served_versions(cfg, name):
            uri = f"models:/{name}/{version}"
            _, _, mv = resolve(cfg, uri)
            progress(f"adding the champion {uri} to the model repository")
            hf_dir = registry.download(cfg, uri, _download_dir(cfg, name, int(version)))
            repository.build_version(cfg, hf_dir=hf_dir, name=name, version=int(version), info=model_info(uri, mv))
        repository.write_config(cfg, name, versions=[int(version)])
        _remove_other_versions(cfg, name, int(version))
        return int(version)


def _download_dir(cfg: LlmopsConfig, name: str, version: int) -> Path:
    """``cache/serving/<name>-<version>/``: a registered version as downloaded for the repository."""
    return cfg.layout.cache("serving", f"{name}-{version}")


def write_deploy_report(cfg: LlmopsConfig, result: DeployResult) -> artifacts.StageResult:
    """``reports/llmops_deploy/<key>/deploy.json`` (with its manifest) and ``latest.json``, a
    copy of the newest: what is served now and how it was verified.

    A report records an action, so it is keyed by what was done (the version served, the
    one it replaced, how it ended), not by the model's content: the same deployment
    reported again (a task retried after the report was written) finds its report.
    """
    def build(out: Path) -> dict[str, str | int | None]:
        result.write(out / DeployResult.NAME)
        return {"status": result.status, "version": result.version, "previous": result.previous}

    config = {"model_uri": result.model_uri, "previous": result.previous, "status": result.status}
    report = artifacts.build_stage(cfg.home, "deploy", {}, config, build, parent=cfg.layout.reports("llmops_deploy"))
    result.write(cfg.layout.latest_report("llmops_deploy"))
    return report


def report_served(cfg: LlmopsConfig, result: DeployResult, progress: Progress = log.info) -> ChampionEvent:
    """After a deployment or a rollback: its smoke answers and outcome in the log, its deploy
    report written, and the ``llmops://champion`` event that announces what Triton serves now."""
    for row in result.smoke:
        progress(f"  smoke {row.protocol}: {row.question!r} -> {row.text!r}")
    report = write_deploy_report(cfg, result).path / DeployResult.NAME
    progress(f"{result.status}: {result.model_uri} (was version {result.previous}); report {report}")
    return ChampionEvent(path=str(report), hash=str(result.version), model_uri=result.model_uri,
                         version=result.version, previous=result.previous)


__all__ = ["DeployBlocked", "DeployFailed", "DeployResult", "deploy", "plan_rollback", "rollback",
           "ensure_champion_in_repository", "smoke_test", "resolve", "served_version", "write_deploy_report",
           "report_served"]
