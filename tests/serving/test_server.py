"""The embedded Triton server: admin key on the control APIs only, lifecycle, clear errors.

Every server here is a real ``tritonserver`` (the nvidia-pytriton wheel's) on free
ports; the model is a tiny python-backend echo written by the test (numpy only).
"""

from __future__ import annotations

import json
import os
import socket
import stat
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from pydantic import SecretStr
from tritonclient.utils import InferenceServerException

from llmops.cli import main
from llmops.serving.server import PortInUse, ServerAlreadyRunning, ServerError, TritonServer
from tests.serving.conftest import serving_config

ECHO_CONFIG = """\
backend: "python"
max_batch_size: 0
input [ { name: "INPUT", data_type: TYPE_FP32, dims: [ -1 ] } ]
output [
  { name: "OUTPUT", data_type: TYPE_FP32, dims: [ -1 ] },
  { name: "PREFIX", data_type: TYPE_STRING, dims: [ 1 ] }
]
instance_group [ { kind: KIND_CPU, count: 1 } ]
"""

# PREFIX reports the stub interpreter's sys.prefix: it must be this venv, or models could
# not import torch/transformers from it.
ECHO_MODEL = textwrap.dedent('''\
    import sys

    import numpy as np
    import triton_python_backend_utils as pb_utils


    class TritonPythonModel:
        def execute(self, requests):
            responses = []
            for request in requests:
                data = pb_utils.get_input_tensor_by_name(request, "INPUT").as_numpy()
                prefix = np.array([sys.prefix.encode()], dtype=np.object_)
                responses.append(pb_utils.InferenceResponse(
                    [pb_utils.Tensor("OUTPUT", data), pb_utils.Tensor("PREFIX", prefix)]))
            return responses
    ''')


def write_echo(repository: Path, name: str) -> Path:
    model = repository / name
    (model / "1").mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(ECHO_CONFIG)
    (model / "1" / "model.py").write_text(ECHO_MODEL)
    return model


@pytest.fixture(scope="module")
def echo(triton: TritonServer) -> str:
    write_echo(triton.repository, "echo")
    triton.load_model("echo")
    return "echo"


def _cli_env(monkeypatch: pytest.MonkeyPatch, server: TritonServer) -> None:
    """Point ``llmops`` (load_config) at ``server``'s home, ports and key source."""
    for name in [k for k in os.environ if k.startswith("LLMOPS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LLMOPS_HOME", str(server.cfg.home))
    for key in ("http_port", "grpc_port", "metrics_port", "startup_timeout_s"):
        monkeypatch.setenv(f"LLMOPS_SERVING__{key.upper()}", str(getattr(server.serving, key)))


# ---- the shared server: what is open, what needs the key -----------------------------


def test_inference_health_metadata_metrics_need_no_key(triton, echo):
    data = np.arange(4, dtype=np.float32)
    http = httpclient.InferenceServerClient(triton.http_address)
    try:
        assert http.is_server_live() and http.is_server_ready() and http.is_model_ready(echo)
        assert http.get_server_metadata()["version"] == "2.51.0"
        assert http.get_model_metadata(echo)["name"] == echo
        inp = httpclient.InferInput("INPUT", [4], "FP32")
        inp.set_data_from_numpy(data)
        result = http.infer(echo, [inp])
        np.testing.assert_array_equal(result.as_numpy("OUTPUT"), data)
        # the python backend runs in this venv: models import what the venv has
        assert result.as_numpy("PREFIX")[0].decode() == sys.prefix
    finally:
        http.close()
    grpc = grpcclient.InferenceServerClient(triton.grpc_address)
    try:
        assert grpc.is_server_ready() and grpc.get_model_metadata(echo).name == echo
        inp = grpcclient.InferInput("INPUT", [4], "FP32")
        inp.set_data_from_numpy(data)
        np.testing.assert_array_equal(grpc.infer(echo, [inp]).as_numpy("OUTPUT"), data)
    finally:
        grpc.close()
    import urllib.request

    with urllib.request.urlopen(triton.metrics_url, timeout=5) as resp:
        assert b'nv_inference_request_success{model="echo"' in resp.read()


def test_model_repository_api_over_http_needs_the_key(triton):
    write_echo(triton.repository, "echo_http")
    client = triton.http_client()
    try:
        for headers in (None, {triton.serving.admin_header: "wrong-key"}):
            with pytest.raises(InferenceServerException, match="restricted"):
                client.load_model("echo_http", headers=headers)
            with pytest.raises(InferenceServerException, match="restricted"):
                client.get_model_repository_index(headers=headers)
            with pytest.raises(InferenceServerException, match="restricted"):  # model-config too
                client.get_model_config("echo_http", headers=headers)
        assert not client.is_model_ready("echo_http")
        client.load_model("echo_http", headers=triton.admin_headers())
        assert client.is_model_ready("echo_http")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model("echo_http")
        triton.unload_model("echo_http")
    finally:
        client.close()
    states = {m.name: m.state for m in triton.repository_index()}
    assert states["echo_http"] != "READY"


def test_model_repository_api_over_grpc_needs_the_key(triton):
    write_echo(triton.repository, "echo_grpc")
    client = triton.grpc_client()
    try:
        # over gRPC the metadata key is the header with Triton's prefix; the bare header is not enough
        for headers in (None, {triton.serving.admin_header: triton.admin_key},
                        {f"triton-grpc-protocol-{triton.serving.admin_header}": "wrong-key"}):
            with pytest.raises(InferenceServerException, match="restricted"):
                client.load_model("echo_grpc", headers=headers)
            with pytest.raises(InferenceServerException, match="restricted"):
                client.get_model_repository_index(headers=headers)
        assert not client.is_model_ready("echo_grpc")
        client.load_model("echo_grpc", headers=triton.admin_headers("grpc"))
        assert client.is_model_ready("echo_grpc")
        index = client.get_model_repository_index(headers=triton.admin_headers("grpc"), as_json=True)
        assert {"name": "echo_grpc", "version": "1", "state": "READY"} in index["models"]
        client.unload_model("echo_grpc", headers=triton.admin_headers("grpc"))
    finally:
        client.close()
    triton.wait_unloaded("echo_grpc")  # the server reports not ready while a model unloads


def test_key_stays_out_of_log_status_and_pid_file(triton, echo, monkeypatch, capsys):
    key = triton.admin_key
    assert len(key) >= 32
    assert triton.key_file.read_text().strip() == key
    assert stat.S_IMODE(triton.key_file.stat().st_mode) == 0o600
    st = triton.status()
    assert st.running and st.ready and st.pid == triton.pid, st
    assert ("echo", "1", "READY") in {(m.name, m.version, m.state) for m in st.models}
    _cli_env(monkeypatch, triton)
    assert main(["serve", "status"]) == 0
    text = capsys.readouterr().out
    assert "echo" in text and "READY" in text and triton.http_url in text and str(triton.key_file) in text
    assert main(["serve", "status", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["running"] and doc["pid"] == st.pid and {"name": "echo", "version": "1", "state": "READY",
                                                        "reason": ""} in doc["models"]
    for text in (triton.log_path.read_text(), json.dumps(st.dump()), json.dumps(doc), repr(triton),
                 triton.pid_file.read_text(), repr(triton.cfg)):
        assert key not in text


def test_second_start_is_refused(triton, monkeypatch, capsys):
    pid = triton.pid
    for server in (triton, TritonServer(triton.cfg)):  # the state is the pid file, not the object
        with pytest.raises(ServerAlreadyRunning, match=rf"already running \(pid {pid}\).*{triton.http_url}"):
            server.start()
    _cli_env(monkeypatch, triton)
    assert main(["serve", "start"]) == 1
    err = capsys.readouterr().err
    assert f"pid {pid}" in err and triton.admin_key not in err
    assert triton.pid == pid and triton.ready()


def test_status_with_the_wrong_key_reports_instead_of_raising(triton):
    other = TritonServer(triton.cfg.model_copy(update={"serving": triton.serving.model_copy(
        update={"admin_key": SecretStr("not-the-key")})}))
    st = other.status()
    assert st.running and st.ready and not st.models
    assert "restricted" in st.error and "not-the-key" not in st.error


# ---- lifecycle on servers of their own ----------------------------------------------


def _group_alive(pgid: int) -> list[int]:
    out = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def test_cli_start_status_stop_with_a_stale_pid_file(tmp_path, monkeypatch, capsys):
    """start detaches and loads the repository's models (not the staging one); stop leaves nothing."""
    server = TritonServer(serving_config(tmp_path / "home"))
    write_echo(server.repository, "served")
    write_echo(server.repository, server.serving.staging_model_name)
    # a crashed server's pid file whose pid now belongs to another process (pid reuse)
    server.pid_file.write_text(json.dumps({"pid": os.getpid(), "started": 1.0, "http_port": 1, "grpc_port": 2,
                                           "metrics_port": 3}))
    assert server.status().running is False and not server.pid_file.exists()
    server.pid_file.write_text("{not json")
    _cli_env(monkeypatch, server)
    try:
        assert main(["serve", "start"]) == 0
        out = capsys.readouterr().out
        assert "running" in out and "served" in out and server.grpc_url in out
        pid = server.pid
        assert pid and json.loads(server.pid_file.read_text())["pid"] == pid
        assert os.getsid(pid) == pid  # its own session: it outlives the command that started it
        states = {m.name: m.state for m in server.repository_index()}
        assert states == {"served": "READY", server.serving.staging_model_name: ""}
        assert _group_alive(pid)  # tritonserver and its python stub
    finally:
        assert main(["serve", "stop", "--timeout", "30"]) == 0
    assert f"stopped Triton (pid {pid})" in capsys.readouterr().out
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert _group_alive(pid) == [] and not server.pid_file.exists()
    assert main(["serve", "stop"]) == 0  # stopping a stopped server is fine
    assert "not running" in capsys.readouterr().out
    assert main(["serve", "status"]) == 3
    assert server.stop() is False


def test_a_taken_port_is_a_clear_error(tmp_path):
    server = TritonServer(serving_config(tmp_path / "home"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", server.serving.grpc_port))
        busy.listen()
        with pytest.raises(PortInUse, match=rf"port {server.serving.grpc_port} \(serving.grpc_port\) is already "
                                            r"in use.*LLMOPS_SERVING__GRPC_PORT"):
            server.start()
    assert not server.pid_file.exists() and not server.log_path.exists()  # nothing was spawned


def test_a_server_dying_at_startup_shows_the_log(tmp_path):
    server = TritonServer(serving_config(tmp_path / "home"))
    broken = server.repository / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text('backend: "no_such_backend"\n')
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"(?s)exited during startup.*broken"):
        server.start()
    assert time.monotonic() - t0 < 60
    assert not server.is_running() and not server.pid_file.exists()


def test_configured_key_and_bad_restricted_api(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMOPS_SERVING__ADMIN_KEY", "from-the-environment")
    server = TritonServer(serving_config(tmp_path / "home"))  # a config built without the environment
    assert server.admin_key == "from-the-environment" and server.admin_headers("grpc") == {
        "triton-grpc-protocol-llmops-admin-key": "from-the-environment"}
    assert "LLMOPS_SERVING__ADMIN_KEY" not in server.environment()
    assert not server.key_file.exists()
    bad = TritonServer(serving_config(tmp_path / "home2", restricted_apis=["model-repository", "everything"]))
    with pytest.raises(ServerError, match="unknown API"):
        bad.command()


@pytest.mark.parametrize("action", ["start", "stop", "status"])
def test_serve_help(action, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", action, "--help"])
    assert exc.value.code == 0
    assert len(capsys.readouterr().out) > 100
