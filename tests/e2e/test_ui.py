"""The LLMOps view and access control on the session's stack: through the REST API with each
role's token, then in a real headless Chromium (Debian's, driven by Playwright).

Runs after the lifecycle, monitor and retraining tests, so the page shows their data: data
cards, training runs, two registered versions, drift checks and retraining decisions.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.e2e.test_retrain import RETRAIN, decision, finish, wait_idle, wait_new_run

ROLLBACK = "llmops_rollback"
CHROMIUM = Path("/usr/bin/chromium")
PLUGIN_ROUTES = (("GET", "/llmops/"), ("GET", "/llmops/api/summary"), ("GET", "/llmops/reports/llmops_train/x/y.png"),
                 ("POST", "/llmops/api/actions/retrain"), ("POST", "/llmops/api/actions/rollback"))


def token(lifecycle, user: str) -> str:
    return lifecycle.stack.client(user=user).token()


def call(lifecycle, method: str, path: str, *, user: str | None = None, cookie_user: str | None = None,
         origin: str | None = None, json: object = None) -> requests.Response:
    """One request to the stack's API server as ``user`` (Bearer), as ``cookie_user`` (the UI's
    ``_token`` cookie) or anonymous."""
    headers = {"Accept": "application/json"}
    if user:
        headers["Authorization"] = f"Bearer {token(lifecycle, user)}"
    if cookie_user:
        headers["Cookie"] = f"_token={token(lifecycle, cookie_user)}"
    if origin:
        headers["Origin"] = origin
    return requests.request(method, lifecycle.stack.api_url + path, headers=headers, json=json, timeout=60)


def test_every_plugin_route_refuses_anonymous_callers(lifecycle):
    answers = {f"{method} {path}": call(lifecycle, method, path).status_code for method, path in PLUGIN_ROUTES}
    assert set(answers.values()) == {401}, answers


def test_viewer_reads_the_page_and_may_trigger_nothing(lifecycle):
    from llmops.registry.model_registry import CHAMPION, version_for

    page = call(lifecycle, "GET", "/llmops/", user="viewer")
    assert page.status_code == 200 and "LLMOps" in page.text and "signed in as viewer" in page.text
    summary = call(lifecycle, "GET", "/llmops/api/summary", user="viewer")
    assert summary.status_code == 200
    assert summary.json()["registry"]["champion"] == version_for(lifecycle.cfg, "llmops", CHAMPION)
    refused = {
        "trigger llmops_data": call(lifecycle, "POST", "/api/v2/dags/llmops_data/dagRuns", user="viewer",
                                    json={"logical_date": None}),
        "trigger llmops_rollback": call(lifecycle, "POST", f"/api/v2/dags/{ROLLBACK}/dagRuns", user="viewer",
                                        json={"logical_date": None}),
        "retrain action": call(lifecycle, "POST", "/llmops/api/actions/retrain", user="viewer", json={}),
        "rollback action": call(lifecycle, "POST", "/llmops/api/actions/rollback", user="viewer", json={}),
    }
    assert {what: r.status_code for what, r in refused.items()} == dict.fromkeys(refused, 403)


def test_a_cookie_without_the_sites_own_origin_is_refused(lifecycle):
    for origin in ("https://evil.example", None):
        answer = call(lifecycle, "POST", "/llmops/api/actions/retrain", cookie_user="op", origin=origin, json={})
        assert answer.status_code == 403 and "origin" in answer.text.lower(), (origin, answer.text)


def test_op_triggers_a_retraining_from_the_view_as_an_audited_run(lifecycle):
    wait_idle(lifecycle)
    answer = call(lifecycle, "POST", "/llmops/api/actions/retrain", user="op", json={})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["dag_id"] == RETRAIN and body["triggered_by"] == "op"
    run = lifecycle.client.dag_run(RETRAIN, body["run_id"])
    assert run.run_type == "manual" and run.conf == {}
    state, tis = finish(lifecycle, RETRAIN, body["run_id"])
    # The site has not changed since the champion's data: the run says so and starts nothing.
    assert state == "success" and tis["publish"] == "skipped", tis
    reason = decision(lifecycle, body["run_id"]).reason
    assert reason.startswith("no new data since data card"), reason


def _two_versions(lifecycle) -> tuple[str, str]:
    """(champion, the version it replaced). After the retraining tests that is v2 and v1; run
    alone, the champion's weights with one tensor changed are registered as passed and deployed
    (no second training)."""
    from safetensors.torch import load_file, save_file

    from llmops.registry import model_registry as registry, tracking
    from llmops.serving.deploy import deploy

    cfg = lifecycle.cfg
    champion = registry.version_for(cfg, "llmops", registry.CHAMPION)
    previous = registry.version_tags(cfg, champion).get(registry.PREVIOUS_CHAMPION_TAG)
    if previous:
        return champion, previous
    model = registry.download(cfg, f"models:/llmops/{champion}", lifecycle.tmp / "ui-second-version")
    weights = load_file(model / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] * 1.001
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    client = tracking.connect(tracking.tracking_uri(cfg))
    run = client.create_run(tracking.ensure_experiment(cfg, client), run_name="ui-test-second-version")
    client.set_terminated(run.info.run_id)
    tags = {k: v for k, v in registry.version_tags(cfg, champion).items() if k in ("gate_result", "data_card_hash")}
    second = registry.register_model(cfg, model, run.info.run_id, tags=tags)
    deploy(cfg, f"models:/llmops/{second}")
    return second, champion


def _login(browser, lifecycle, user: str):
    import json

    password = json.loads(Path(lifecycle.stack.password_file).read_text())[user]
    page = browser.new_page(viewport={"width": 1400, "height": 2400})  # tall: the screenshots show most sections
    page.goto(lifecycle.stack.api_url + "/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/" not in url, timeout=60_000)
    return page


def _open_view(page, lifecycle):
    """The LLMOps page inside the Airflow UI (its navigation entry renders it in an iframe)."""
    page.goto(lifecycle.stack.api_url + "/plugin/llmops")
    frame = page.frame_locator("iframe")
    frame.locator("h1", has_text="LLMOps").wait_for(timeout=60_000)
    return frame


def _served(lifecycle) -> str:
    from llmops.serving.client import generate

    return generate("What is the for statement?", url=f"127.0.0.1:{lifecycle.cfg.serving.http_port}",
                    max_tokens=2).model_version


@pytest.mark.skipif(not CHROMIUM.exists(), reason="make browser installs Debian's chromium (make test runs it)")
def test_in_chromium_op_rolls_back_from_the_view_and_viewer_is_refused(lifecycle, capsys):
    from playwright.sync_api import sync_playwright

    from llmops.chain import wait_for_dags
    from llmops.records.data import DataCard
    from llmops.records.serving import DeployResult
    from llmops.registry import model_registry as registry

    wait_for_dags(lifecycle.client, lifecycle.printer(), dag_ids=(ROLLBACK,))
    wait_idle(lifecycle)
    champion, previous = _two_versions(lifecycle)
    assert _served(lifecycle) == champion
    shots = lifecycle.home / "reports" / "ui"
    shots.mkdir(parents=True, exist_ok=True)
    known = {r.run_id for r in lifecycle.client.dag_runs(ROLLBACK)}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = _login(browser, lifecycle, "op")
            view = _open_view(page, lifecycle)
            # The page shows the session's data: the champion, Triton serving it, every section.
            assert view.locator(".glance").inner_text().count(f"v{champion}") >= 2
            for section in ("Data runs", "Training runs", "Registry and gate", "Deployment", "Drift and retraining"):
                assert view.get_by_role("heading", name=section).is_visible()
            # The first lifecycle's data card, as the data run wrote it: its key and PII counts per type.
            text = view.locator("body").inner_text()
            key = registry.version_tags(lifecycle.cfg, "1")["data_card_hash"]
            card = DataCard.read(lifecycle.cfg.layout.stage_output("data_card", key) / DataCard.NAME)
            assert key in text and card.pii.pii_counts_by_type
            assert all(f"{kind} {count:,}" in text for kind, count in card.pii.pii_counts_by_type.items()), text[:3000]
            page.screenshot(path=str(shots / "op-before-rollback.png"), full_page=True)

            button = view.locator("#rollback")
            button.click()
            button.click()  # the page asks for a second click to confirm
            view.locator("#action-result", has_text="created (by op)").wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "op-rollback-triggered.png"), full_page=True)
            run = wait_new_run(lifecycle, ROLLBACK, known)
            state, tis = finish(lifecycle, ROLLBACK, run.run_id, timeout_s=300)
            assert state == "success", tis
            assert _served(lifecycle) == previous
            assert registry.version_for(lifecycle.cfg, "llmops", registry.CHAMPION) == previous
            # The rollback's own deploy report (the retraining cooldown counts from it) and its log.
            latest = DeployResult.read(lifecycle.cfg.layout.latest_report("llmops_deploy"))
            assert (latest.status, latest.version, latest.previous) == ("rolled back", int(previous), int(champion))
            client = lifecycle.client
            plan_log = "\n".join(client.task_log(t) for t in client.task_instances(ROLLBACK, run.run_id)
                                 if t.task_id == "plan")
            assert f"rollback: llmops version {champion} -> {previous}" in plan_log, plan_log[-2000:]
            announced = client.asset_events(uri="llmops://champion", source_run_id=run.run_id)
            assert [(e.extra or {}).get("version") for e in announced] == [int(previous)]
            view = _open_view(page, lifecycle)
            assert f"v{previous}" in view.locator(".glance").inner_text()
            page.screenshot(path=str(shots / "op-after-rollback.png"), full_page=True)

            page = _login(browser, lifecycle, "viewer")
            view = _open_view(page, lifecycle)
            assert view.locator("#rollback").is_disabled() and view.locator("#retrain").is_disabled()
            refused = view.locator("body").evaluate(
                """async () => { const r = await fetch(document.body.dataset.mount + "/api/actions/rollback",
                     {method: "POST", credentials: "same-origin", headers: {"Content-Type": "application/json"},
                      body: "{}"}); return r.status; }""")
            assert refused == 403
            page.screenshot(path=str(shots / "viewer-refused.png"), full_page=True)
        finally:
            browser.close()
    assert len({r.run_id for r in lifecycle.client.dag_runs(ROLLBACK)} - known) == 1  # viewer started none
    assert {r.run_type for r in lifecycle.client.dag_runs("llmops_deploy")} == {"asset_triggered"}
    with capsys.disabled():
        print(f"\nUI screenshots: {', '.join(str(p) for p in sorted(shots.glob('*.png')))}")
