"""The compose file and Dockerfile are for users' machines (no Docker engine here): parse them."""

import re
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
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    assert all("==" in line for line in lines), [line for line in lines if "==" not in line]
    pins = dict(line.split("==") for line in lines)
    assert int(pins["numpy"].split(".")[0]) < 2  # the Triton python backend needs numpy<2
    for pkg in ("transformers", "peft", "tokenizers", "torch", "deepspeed", "apache-airflow", "mlflow"):
        assert pkg in pins, pkg


# ---- Triton: the production image and the compose service ------------------------------

TRITON_DOCKERFILE = REPO / "docker" / "triton" / "Dockerfile"


def _compose_services() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yaml").read_text())["services"]


def _pins() -> dict[str, str]:
    lines = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and not line.startswith("#")]
    return {name.lower(): version for name, version in (line.split("==") for line in lines)}


def _flags(command: list[str]) -> dict[str, list[str]]:
    flags: dict[str, list[str]] = {}
    for arg in command[1:]:
        name, _, value = arg.partition("=")
        flags.setdefault(name, []).append(value)
    return flags


def test_triton_image_is_ngc_2_51_with_the_requirements_pins():
    text = TRITON_DOCKERFILE.read_text()
    # NGC 24.10 carries Triton 2.51, the server of the embedded stack (nvidia-pytriton 0.7.0).
    assert "FROM nvcr.io/nvidia/tritonserver:24.10-py3" in text.splitlines()
    # the stub comes from the same nvidia-pytriton as the embedded server's (Makefile)
    pytriton = re.search(r"^PYTRITON_VERSION := (\S+)$", (REPO / "Makefile").read_text(), re.MULTILINE).group(1)
    assert f"nvidia-pytriton=={pytriton}" in text
    pins = _pins()
    for pkg in ("torch", "transformers", "safetensors", "tokenizers", "numpy"):
        assert f" {pkg}=={pins[pkg]}" in text, f"{pkg} is not pinned to requirements.txt's {pins[pkg]}"
    assert int(pins["numpy"].split(".")[0]) < 2
    # requirements.txt is the constraints file, so the dependencies get its pins as well
    assert "COPY requirements.txt" in text and "-c /tmp/requirements.txt" in text
    # the python backend stub matches the venv's Python: 3.11, linked via symlink (RPATH $ORIGIN)
    assert "python3.11 python3.11-venv libpython3.11" in text
    assert "python_backend_stubs/3.11/triton_python_backend_stub" in text and "ln -sf" in text
    assert "curl" in text  # the compose healthcheck runs it


def test_triton_build_context_sends_only_requirements():
    ignore = [line for line in (TRITON_DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    assert ignore == ["*", "!requirements.txt"]


def test_compose_triton_service_serves_the_shared_repository_on_a_gpu():
    services = _compose_services()
    triton = services["triton"]
    assert triton["build"] == {"context": ".", "dockerfile": "docker/triton/Dockerfile"}
    assert (REPO / triton["build"]["dockerfile"]).is_file()
    assert set(triton["ports"]) == {"8000:8000", "8001:8001", "8002:8002"}

    flags = _flags(triton["command"])
    assert triton["command"][0] == "tritonserver"
    assert flags["--model-control-mode"] == ["explicit"]
    assert flags["--strict-readiness"] == ["false"]
    assert flags["--load-model"] == ["llmops"]  # the served name; never the staging one

    # The repository: one named volume, written by the workers, read-only for Triton.
    repo_in_triton = flags["--model-repository"][0]
    volume, _target, mode = next(v.split(":") for v in triton["volumes"] if v.split(":")[1] == repo_in_triton)
    assert mode == "ro"
    assert volume in yaml.safe_load((REPO / "docker-compose.yaml").read_text())["volumes"]
    worker = services["airflow-worker"]
    worker_repo = worker["environment"]["LLMOPS_SERVING__REPOSITORY"]
    assert f"{volume}:{worker_repo}" in worker["volumes"]

    reservation = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in reservation)
    assert triton.get("shm_size")  # the python backend's tensors go through /dev/shm

    test = triton["healthcheck"]["test"]
    assert test[0] == "CMD" and "http://localhost:8000/v2/health/ready" in test


def test_compose_triton_restricts_the_admin_apis_as_the_embedded_server_does():
    from llmops.config import load_config

    serving = load_config(environ={}).serving
    triton = _compose_services()["triton"]
    flags = _flags(triton["command"])
    key = "${LLMOPS_SERVING__ADMIN_KEY:?set LLMOPS_SERVING__ADMIN_KEY}"
    expected = f"{','.join(serving.restricted_apis)}:{serving.admin_header}={key}"
    assert flags["--http-restricted-api"] == [expected]
    assert flags["--grpc-restricted-protocol"] == [expected]
    assert "model-repository" in serving.restricted_apis


def test_compose_workers_reach_triton_with_the_same_key_and_repository():
    services = _compose_services()
    for name in ("airflow-worker", "airflow-scheduler", "airflow-dag-processor"):
        env = services[name]["environment"]
        assert env["LLMOPS_SERVING__HOST"] == "triton", name
        assert env["LLMOPS_SERVING__ADMIN_KEY"] == "${LLMOPS_SERVING__ADMIN_KEY:?set LLMOPS_SERVING__ADMIN_KEY}"
        assert env["LLMOPS_SERVING__DEVICE"] == "gpu"  # config.pbtxt asks for KIND_GPU instances
    # the variable names are the config's: they must load into ServingConfig
    from llmops.config import load_config

    env = services["airflow-worker"]["environment"]
    cfg = load_config(environ={k: v for k, v in env.items() if k.startswith("LLMOPS_SERVING__")}
                      | {"LLMOPS_SERVING__ADMIN_KEY": "k"})
    assert cfg.serving.host == "triton" and cfg.serving.device == "gpu"
    assert str(cfg.serving.repository) == env["LLMOPS_SERVING__REPOSITORY"]
    # the repository volume is writable by the workers (uid 50000) before they start
    init = services["volumes-init"]
    assert init["user"] == "0:0" and env["LLMOPS_SERVING__REPOSITORY"] in init["command"][0]
    assert services["airflow-init"]["depends_on"]["volumes-init"]["condition"] == "service_completed_successfully"


def test_compose_shares_the_inference_log_between_triton_and_the_workers():
    """The model writes its log where config.pbtxt says (the workers' monitor.log_dir default,
    built from their LLMOPS_HOME); the drift check on the workers reads the same volume."""
    from llmops.config import load_config

    services = _compose_services()
    home = services["airflow-worker"]["environment"]["LLMOPS_HOME"]
    log_dir = str(load_config(environ={"LLMOPS_HOME": home}).layout.inference_log)
    mounts = {service: [v for v in services[service]["volumes"] if v.split(":")[1] == log_dir]
              for service in ("triton", "airflow-worker")}
    assert mounts["triton"] and mounts["triton"][0].split(":")[0] == mounts["airflow-worker"][0].split(":")[0]
    assert not mounts["triton"][0].endswith(":ro")  # Triton writes it
    assert "py3langid==" in (REPO / "docker" / "triton" / "Dockerfile").read_text()  # the model imports it
