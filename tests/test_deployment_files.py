"""The compose file and Dockerfile are for users' machines (no Docker engine here): parse them."""

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_compose_has_the_production_airflow_services():
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    services = compose["services"]
    for name in ("postgres", "redis", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer", "airflow-worker"):
        assert name in services, name
    env = services["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    # workers crawl the demo-site service, not their own loopback
    assert env["LLMOPS_DATA__SEED_URL"].startswith("http://demo-site:")
    assert "demo-site" in services


def test_dockerfile_pins_the_same_airflow_as_requirements():
    requirements = (REPO / "requirements.txt").read_text().splitlines()
    airflow = next(line for line in requirements if line.startswith("apache-airflow=="))
    version = airflow.split("==")[1]
    assert f"FROM apache/airflow:{version}-python3.11" in (REPO / "Dockerfile").read_text()


def test_requirements_are_exact_pins_with_numpy_below_2():
    lines = [l for l in (REPO / "requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    assert all("==" in l for l in lines), [l for l in lines if "==" not in l]
    pins = dict(l.split("==") for l in lines)
    assert int(pins["numpy"].split(".")[0]) < 2  # the Triton python backend needs numpy<2
    for pkg in ("transformers", "peft", "tokenizers", "torch", "deepspeed", "apache-airflow", "mlflow"):
        assert pkg in pins, pkg
