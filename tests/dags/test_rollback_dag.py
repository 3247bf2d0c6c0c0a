"""``llmops_rollback``: by hand only, one optional ``to_version``, plan then swap, and nothing
it announces starts another DAG (``llmops_deploy`` runs only for registered challengers)."""

from __future__ import annotations

import pytest


def test_rollback_dag_runs_by_hand_only_and_plans_before_it_swaps(dagbag):
    from airflow.sdk.definitions.timetables.simple import NullTimetable

    dag = dagbag.dags["llmops_rollback"]
    assert isinstance(dag.timetable, NullTimetable)  # schedule=None: a person's decision
    assert dag.max_active_runs == 1 and "serving" in dag.tags
    assert {t.task_id for t in dag.tasks} == {"plan", "rollback"}
    assert dag.get_task("rollback").upstream_task_ids == {"plan"}
    assert not dag.get_task("plan").outlets
    assert {o.uri for o in dag.get_task("rollback").outlets} == {"llmops://champion/"}
    assert set(dag.params) == {"to_version"} and dag.params["to_version"] is None


def test_what_a_rollback_announces_starts_no_dag(dagbag):
    """``llmops://champion`` records what Triton serves; were a DAG scheduled on it, every
    rollback would start that DAG too. ``llmops_deploy`` stays on ``llmops://challenger``."""
    for dag_id, dag in dagbag.dags.items():
        condition = getattr(dag.timetable, "asset_condition", None)
        assert "llmops://champion/" not in repr(condition), f"{dag_id} is scheduled on llmops://champion"
    assert "llmops://challenger/" in repr(dagbag.dags["llmops_deploy"].timetable.asset_condition)


@pytest.mark.parametrize("value", [None, "", "3", " 12 "])
def test_to_version_accepts_nothing_or_a_version_number(dagbag, value):
    param = dagbag.dags["llmops_rollback"].params.get_param("to_version")
    assert param.resolve(value) == value


@pytest.mark.parametrize("value", ["0", "v2", "2.0", "-1", 3])
def test_to_version_refuses_anything_else_in_the_trigger_form(dagbag, value):
    param = dagbag.dags["llmops_rollback"].params.get_param("to_version")
    with pytest.raises(ValueError):
        param.resolve(value)
