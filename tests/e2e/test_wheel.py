"""The built wheel, installed like a user would, outside the source tree.

1. Full install (the `all` extra): `freqcap demo` in an empty directory exits 0 and leaves its key outputs.
2. Base install (serving only): none of the pipeline's libraries is there, yet `freqcap serve` answers
   `POST /v1/decide` (fail-open `degraded`, since no features were ever written), and a pipeline command says
   which extra it needs instead of failing with a traceback.

Both install the locked versions (`uv export --frozen`) into fresh virtualenvs under a temporary directory; the
commands run with the empty directory as cwd and an environment without PYTHONPATH, so nothing of the checkout can
leak in. uv's cache makes an install take seconds; the demo takes minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

PIPELINE_MODULES = ("airflow", "mlflow", "great_expectations", "evidently", "xgboost", "matplotlib")


def _uv() -> list[str]:
    if found := shutil.which("uv"):
        return [found]
    try:
        from uv import find_uv_bin  # the `uv` package from PyPI, as `make setup` installs it when missing

        return [find_uv_bin()]
    except ImportError:
        pytest.fail("uv is required to build and install the wheel (make setup installs it)")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _clean_env(venv: Path) -> dict[str, str]:
    """This process's environment minus anything pointing at the checkout or configuring Python, Airflow, MLflow
    or freqcap (the test session sets several), with the venv's bin first on PATH."""
    dropped = ("PYTHON", "AIRFLOW", "FREQCAP", "MLFLOW", "VIRTUAL_ENV", "UV_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        {
            "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONDONTWRITEBYTECODE": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "GX_ANALYTICS_ENABLED": "False",
            "FEAST_USAGE": "False",
            "OMP_WAIT_POLICY": "PASSIVE",  # XGBoost's threads sleep instead of spinning on a small box
        }
    )
    return env


def _outside_checkout(path: Path) -> Path:
    assert not path.resolve().is_relative_to(REPO_ROOT.resolve()), f"{path} is inside the source tree"
    return path


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = _outside_checkout(tmp_path_factory.mktemp("dist"))
    _run([*_uv(), "build", "--wheel", "--out-dir", str(dist), str(REPO_ROOT)], cwd=dist)
    (built,) = dist.glob("freqcap-*.whl")
    return built


def _install(wheel: Path, root: Path, *extras: str) -> Path:
    """A fresh venv under `root` with the locked dependencies of the base install (+ `extras`) and the wheel."""
    venv = _outside_checkout(root / "venv")
    requirements = root / "requirements.txt"
    extra_args = [arg for extra in extras for arg in ("--extra", extra)]
    export = _run(
        [*_uv(), "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", *extra_args],
        cwd=REPO_ROOT,
    )
    requirements.write_text(export.stdout)
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    _run([*_uv(), "venv", "--quiet", "--python", python, str(venv)], cwd=root)
    spec = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    _run([*_uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-r", str(requirements), spec])
    return venv


def _empty_dir(root: Path) -> Path:
    work = _outside_checkout(root / "empty")
    work.mkdir()
    return work


def _installed_freqcap(venv: Path, cwd: Path) -> Path:
    """Where `import freqcap` resolves in the venv: its site-packages, never the checkout."""
    done = _run(
        [str(venv / "bin" / "python"), "-c", "import freqcap; print(freqcap.__file__)"], cwd=cwd, env=_clean_env(venv)
    )
    location = Path(done.stdout.strip())
    assert location.is_relative_to(venv), location
    # The wheel carries the stream worker's compiled row codec (hatch_build.py), imported from the venv too.
    codec = (
        "from freqcap.adapters.feast.native import row_codec_name as n; import freqcap.adapters.feast._rowcodec as m"
    )
    done = _run([str(venv / "bin" / "python"), "-c", f"{codec}; print(n(), m.__file__)"], cwd=cwd, env=_clean_env(venv))
    name, path = done.stdout.split()
    assert name == "native" and Path(path).is_relative_to(venv), done.stdout
    return location


@pytest.mark.timeout(1500)
def test_full_install_runs_the_demo_in_an_empty_directory(wheel, tmp_path):
    venv = _install(wheel, tmp_path, "all")
    work = _empty_dir(tmp_path)
    _installed_freqcap(venv, work)

    started = time.monotonic()
    done = subprocess.run(
        [str(venv / "bin" / "freqcap"), "demo"], cwd=work, env=_clean_env(venv), capture_output=True, text=True
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"freqcap demo exited {done.returncode}:\n{output[-6000:]}"
    print(f"freqcap demo (installed wheel): {time.monotonic() - started:.0f} s")

    data = work / "demo" / "data"
    for step in ("=== summary ===", "=== training ===", "serving now runs policy", "on-call page"):
        assert step in output, step
    (run,) = (data / "runs").iterdir()
    assert {p.name for p in (run / "features").glob("*.parquet")} >= {
        "user.parquet",
        "user_advertiser.parquet",
        "user_campaign.parquet",
        "user_ad.parquet",
    }
    assert (data / "feast" / "registry.db").is_file()
    assert (data / "mlflow" / "mlflow.db").is_file()
    (curves,) = (data / "curves").iterdir()
    assert yaml.safe_load((curves / "policy.yaml").read_text())["version"]
    assert any((data / "publish").rglob("guardrails.json"))
    assert any((data / "decision_log").rglob("part-*.jsonl"))
    assert (data / "monitoring" / "oncall.html").is_file()
    # Quiet by default: no library's deprecation warnings between freqcap's steps.
    assert "DeprecationWarning" not in output
    # Everything the demo wrote is under the empty directory it ran in.
    assert sorted(p.name for p in work.iterdir()) == ["demo"]


SERVING_POLICY = {
    "version": "wheel-serving",
    "created_at": "2026-10-01T00:00:00Z",
    "penalty": {"onset": 1.0, "at_cap": 0.5, "floor": 0.05},
    "defaults": [
        {"level": "advertiser", "caps": [{"window": "28d", "max": 12}]},
        {"level": "campaign", "caps": [{"window": "7d", "max": 9}]},
        {"level": "ad", "caps": [{"window": "24h", "max": 2}]},
    ],
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_serving_only_install_serves_decisions_without_the_pipeline(wheel, tmp_path):
    venv = _install(wheel, tmp_path)
    work = _empty_dir(tmp_path)
    env = _clean_env(venv)
    _installed_freqcap(venv, work)

    probe = "import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m) is not None for m in %r}))"
    found = json.loads(
        _run([str(venv / "bin" / "python"), "-c", probe % (PIPELINE_MODULES,)], cwd=work, env=env).stdout
    )
    assert not any(found.values()), f"the serving-only install has {[m for m, f in found.items() if f]}"

    # A pipeline command names the missing extra instead of a traceback.
    refused = subprocess.run(
        [str(venv / "bin" / "freqcap"), "demo", "--users", "50", "--days", "1"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "freqcap[all]" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr

    policy = work / "policy.yaml"
    policy.write_text(yaml.safe_dump(SERVING_POLICY))
    port = _free_port()
    log = (work / "serve.log").open("w")
    server = subprocess.Popen(
        [str(venv / "bin" / "freqcap"), "serve", "--dev", "--port", str(port), "--policy", str(policy)],
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (work / "serve.log").read_text()
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "freqcap serve did not come up:\n" + (work / "serve.log").read_text()
            time.sleep(0.5)
        assert httpx.get(url + "/readyz", timeout=10).json() == {"ready": True, "policy_version": "wheel-serving"}
        body = {
            "user_id": "u0000001",
            "context": {"format": "feed", "ts": "2026-10-15T00:00:00+00:00"},
            "candidates": [
                {"ad_id": "ad-1", "campaign_id": "cmp-1", "advertiser_id": "adv-1"},
                {"ad_id": "ad-2", "campaign_id": "cmp-1", "advertiser_id": "adv-1"},
            ],
        }
        resp = httpx.post(url + "/v1/decide", json=body, timeout=30)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()

    assert resp.status_code == 200, resp.text
    decision = resp.json()
    assert set(decision) == {"policy_version", "degraded", "degraded_reason", "anonymous", "decisions"}
    assert decision["policy_version"] == "wheel-serving"
    # No features were ever materialized: the lookup fails and the answer fails open (no penalty).
    assert decision["degraded"] is True and decision["degraded_reason"]
    assert [d["ad_id"] for d in decision["decisions"]] == ["ad-1", "ad-2"]
    for d in decision["decisions"]:
        assert set(d) == {"ad_id", "eligible", "penalty", "distance_to_cap", "binding", "reason"}
        assert d["eligible"] is True and d["penalty"] == 1.0
