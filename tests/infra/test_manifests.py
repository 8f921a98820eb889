"""The deployment under infra/ described and checked: Kubernetes manifests (kustomize), the Airflow Helm values and the
Dockerfile. No cluster and no container engine: schemas (kubernetes-validate, strict), cross-references (selectors,
ports, Secrets) and — the point — the commands the cluster runs are the ones the local stack runs
(`freqcap.cli.stack.components.components`), so `make up` keeps exercising what production starts.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

import freqcap
from freqcap.cli.stack.components import airflow_environment, components, freqcap_environment
from freqcap.config import load_settings
from freqcap.resources import dags_folder

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
HELM_VALUES = REPO / "infra" / "helm" / "airflow-values.yaml"
DOCKER = REPO / "infra" / "docker"
K8S_VERSION = "1.37"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
# Env var names that hold credentials: their values must come from a Secret.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|KEY", re.IGNORECASE)
# Settings keys that would hold a credential (`key_ttl_seconds`, `stream_key` are no credentials).
SECRET_SETTING = re.compile(r"token|secret|password|passwd|credential|(?:api|access|private)_?key", re.IGNORECASE)
# Programs the image's entry point runs as themselves (infra/docker/entrypoint.sh); anything else goes to freqcap.
PASSTHROUGH = ("airflow", "mlflow", "evidently", "feast", "celery", "python", "python3", "bash", "sh")

cli_main = importlib.import_module("freqcap.cli.main")  # the module (`freqcap.cli.main` is also the function)


def _load_all(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


MANIFESTS = [(path.name, doc) for path in _manifest_files() for doc in _load_all(path)]


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in MANIFESTS if doc["kind"] == kind]


def _named(kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in _by_kind(kind) if d["metadata"]["name"] == name]
    return doc


def _workloads() -> list[dict[str, Any]]:
    return [doc for _, doc in MANIFESTS if doc["kind"] in WORKLOADS]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


HELM = yaml.safe_load(HELM_VALUES.read_text())
CLUSTER_SETTINGS_TEXT = _named("ConfigMap", "freqcap-settings")["data"]["settings.yaml"]
CLUSTER_SETTINGS = yaml.safe_load(CLUSTER_SETTINGS_TEXT)


# --- schemas -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "doc"), MANIFESTS, ids=[f"{n}:{d['kind']}/{d['metadata']['name']}" for n, d in MANIFESTS]
)
def test_every_manifest_validates_against_the_kubernetes_schema_strictly(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_rejects_an_unknown_field():
    """Guards the check above: a misspelt field (here in a probe) must fail, not pass silently."""
    doc = copy.deepcopy(_named("Deployment", "freqcap-serving"))
    _container(doc)["readinessProbe"]["httpGett"] = {"path": "/readyz", "port": "http"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_and_nothing_missing():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert sorted(listed) == [p.name for p in _manifest_files()]
    assert not list(K8S.glob("*.yml")), "use .yaml: the .yml files are neither listed nor checked"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
def test_kustomize_renders_every_document():
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True)
    rendered = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"]) for _, d in MANIFESTS
    )
    images = {
        c["image"] for d in rendered if d["kind"] in WORKLOADS for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example.com/freqcap:0.1.0"}  # one image, set in one place


# --- serving -----------------------------------------------------------------------------------------------------
def test_serving_is_replicated_probed_bounded_and_unprivileged():
    deployment = _named("Deployment", "freqcap-serving")
    container = _container(deployment)
    assert deployment["spec"]["replicas"] >= 2
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in container["env"]}
    assert env["FREQCAP__SERVING__ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
    assert env["FREQCAP_CONFIG"]["value"].startswith(_mount_path(deployment, "freqcap-settings"))


def _mount_path(workload: dict[str, Any], config_map: str) -> str:
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"]["volumes"]}
    (name,) = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == config_map]
    (mount,) = [m for m in _container(workload)["volumeMounts"] if m["name"] == name]
    return mount["mountPath"]


def test_hpa_and_pdb_cover_serving():
    deployment = _named("Deployment", "freqcap-serving")
    hpa = _named("HorizontalPodAutoscaler", "freqcap-serving")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    pdb = _named("PodDisruptionBudget", "freqcap-serving")
    assert pdb["apiVersion"] == "policy/v1"
    assert _selects(pdb["spec"]["selector"]["matchLabels"], deployment["spec"]["template"]["metadata"]["labels"])
    # The HPA's CPU target is a share of the request: without a CPU request it never scales.
    assert "cpu" in _container(deployment)["resources"]["requests"]


# --- cross-references: every selector selects, every reference resolves ---------------------------------------
def test_workload_selectors_match_their_own_pod_templates():
    for workload in _workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert _selects(workload["spec"]["selector"]["matchLabels"], labels), workload["metadata"]["name"]


def test_every_service_selects_pods_that_expose_its_target_ports():
    for service in _by_kind("Service"):
        targets = [
            w
            for w in _workloads()
            if _selects(service["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(targets) == 1, f"Service {service['metadata']['name']} selects {len(targets)} workloads"
        ports = {p["name"]: p["containerPort"] for p in _container(targets[0])["ports"]}
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in ports or target in ports.values(), (service["metadata"]["name"], target)


def test_every_pdb_selects_a_workload():
    for pdb in _by_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(_selects(selector, w["spec"]["template"]["metadata"]["labels"]) for w in _workloads())


def test_every_hpa_targets_an_existing_workload():
    for hpa in _by_kind("HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        target = _named(ref["kind"], ref["name"])
        assert target["apiVersion"] == ref["apiVersion"]


def test_every_referenced_config_map_and_claim_exists():
    config_maps = {d["metadata"]["name"] for d in _by_kind("ConfigMap")}
    claims = {d["metadata"]["name"] for d in _by_kind("PersistentVolumeClaim")}
    accounts = {d["metadata"]["name"] for d in _by_kind("ServiceAccount")}
    for workload in _workloads():
        spec = workload["spec"]["template"]["spec"]
        assert spec.get("serviceAccountName", "default") in accounts | {"default"}
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    for volume in HELM["volumes"]:
        if "configMap" in volume:
            assert volume["configMap"]["name"] in config_maps
        if "persistentVolumeClaim" in volume:
            assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_every_pod_runs_as_non_root_without_privilege_escalation():
    for workload in _workloads():
        spec = workload["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert "resources" in container and container["resources"]["requests"]
    assert HELM["securityContexts"]["pod"]["runAsNonRoot"] is True


# --- no literal secrets ------------------------------------------------------------------------------------------
def _all_env() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _, doc in MANIFESTS:
        if doc["kind"] in WORKLOADS:
            for container in doc["spec"]["template"]["spec"]["containers"]:
                out += [(doc["metadata"]["name"], e) for e in container.get("env", [])]
    return out


def test_credentials_come_from_secrets_never_from_literals():
    assert not _by_kind("Secret"), "Secrets are created out of band (docs/operations/kubernetes.md), never committed"
    checked = 0
    for owner, env in _all_env():
        if SECRET_NAME.search(env["name"]):
            assert "value" not in env, f"{owner}: {env['name']} has a literal value"
            assert env["valueFrom"]["secretKeyRef"]["name"], f"{owner}: {env['name']} is not from a Secret"
            checked += 1
    assert checked >= 3  # the admin token, the object store's keys
    for env in HELM["env"]:
        assert not SECRET_NAME.search(env["name"]), f"helm env {env['name']}: use `secret:` (a Secret reference)"
    assert {s["envName"] for s in HELM["secret"]} >= {"FREQCAP__SERVING__ADMIN_TOKEN", "FREQCAP__FEAST__REGISTRY"}
    for key in ("fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey"):
        assert not HELM.get(key), f"helm {key}: reference an existing Secret ({key}Name) instead"
    assert {"fernetKeySecretName", "jwtSecretName", "apiSecretKeySecretName"} <= set(HELM)
    assert HELM["data"]["metadataSecretName"] and "metadataConnection" not in HELM["data"]


def test_no_credentials_in_config_maps_or_urls():
    userinfo = re.compile(r"://[^/\s:@]+:[^/\s@]+@")  # scheme://user:password@host
    for config_map in _by_kind("ConfigMap"):
        for key, text in config_map["data"].items():
            parsed = yaml.safe_load(text)
            for path, value in _leaves(parsed):
                assert not SECRET_SETTING.search(path.rsplit(".", 1)[-1]), f"{key}: {path} belongs in a Secret"
                assert not userinfo.search(str(value)), f"{key}: {path} carries a password"
    for path, value in _leaves(HELM):
        assert not userinfo.search(str(value)), f"helm values {path} carries a password"


def _leaves(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(node, list):
        return [leaf for i, v in enumerate(node) for leaf in _leaves(v, f"{prefix}[{i}]")]
    return [(prefix, node)]


# --- the image ---------------------------------------------------------------------------------------------------
DOCKERFILE = (DOCKER / "Dockerfile").read_text()


def _instructions(name: str) -> list[str]:
    return re.findall(rf"^{name}\s+(.+)$", DOCKERFILE, flags=re.MULTILINE)


def test_dockerfile_builds_from_the_wheel_with_the_locked_versions():
    assert len(_instructions("FROM")) >= 2, "multi-stage: build tools stay out of the runtime image"
    assert "uv build --wheel" in DOCKERFILE
    assert "uv export --frozen" in DOCKERFILE and "--constraint" in DOCKERFILE
    assert re.search(r"pip install --constraint \S+ \\\s+\"\$\(ls /dist/freqcap-\*\.whl\)", DOCKERFILE)
    extras = re.search(r"^ARG EXTRAS=(\S+)$", DOCKERFILE, flags=re.MULTILINE).group(1).split(",")
    pyproject = (REPO / "pyproject.toml").read_text()
    for extra in extras:
        assert re.search(rf"^{extra} = \[", pyproject, flags=re.MULTILINE), extra
        assert f"--extra {extra}" in DOCKERFILE  # the constraints cover what is installed
    copied = [line.split()[0] for line in _instructions("COPY") if not line.startswith("--from")]
    assert "." not in copied, "copy what the wheel needs, not the whole checkout"
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    # The wheel's build hook compiles the row codec: its script is in the context and copied, a compiler is
    # installed in the build stage, and the build fails if the installed package lacks the codec.
    assert "!hatch_build.py" in ignore and any("hatch_build.py" in line.split() for line in _instructions("COPY"))
    assert re.search(r"apt-get install [^\n]*\bgcc\b", DOCKERFILE.split("AS runtime")[0])
    assert "row_codec_name" in DOCKERFILE.split("AS runtime")[1]
    assert ignore[ignore.index("*") :][0] == "*"  # deny by default
    assert "3.11" in re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, flags=re.MULTILINE).group(1)


def test_dockerfile_runs_as_non_root_and_holds_no_secret():
    users = _instructions("USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user == str(HELM["uid"])  # the Helm chart runs the same image with its `uid`
    for line in _instructions("ENV") + _instructions("ARG"):
        name = line.split("=")[0].strip()
        assert not SECRET_NAME.search(name), f"{name}: secrets come from the environment at run time"
    assert "ENTRYPOINT" in DOCKERFILE


def test_entrypoint_runs_freqcap_by_default_and_named_programs_as_themselves():
    script = (DOCKER / "entrypoint.sh").read_text()
    cases = re.search(r"^\s+([a-z0-9|]+)\)\s*$", script, flags=re.MULTILINE).group(1).split("|")
    assert tuple(cases) == PASSTHROUGH
    assert 'exec freqcap "$@"' in script
    # freqcap's subcommands never collide with a passed-through program.
    subcommands = set(cli_main.build_parser()._subparsers._group_actions[0].choices)
    assert not subcommands & set(PASSTHROUGH)


def test_airflow_dags_folder_is_the_installed_packages_dags_folder_in_the_image():
    venv = re.search(r"python -m venv (\S+)", DOCKERFILE).group(1)
    site_packages = f"{venv}/lib/python3.11/site-packages"
    relative = dags_folder().relative_to(Path(freqcap.__file__).parent.parent)  # freqcap/dags
    expected = f"{site_packages}/{relative.as_posix()}"
    env = {e["name"]: e["value"] for e in HELM["env"]}
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == expected
    assert HELM["config"]["core"]["dags_folder"] == expected
    assert f"AIRFLOW__CORE__DAGS_FOLDER={expected}" in DOCKERFILE
    assert 'test "$(freqcap dags-folder)" = "$AIRFLOW__CORE__DAGS_FOLDER"' in DOCKERFILE  # checked at build time
    assert not HELM["dags"]["persistence"]["enabled"] and not HELM["dags"]["gitSync"]["enabled"]


def test_helm_images_are_the_freqcap_image():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert HELM["images"]["airflow"]["repository"] == image["newName"]
    assert HELM["images"]["airflow"]["tag"] == image["newTag"]
    assert HELM["images"]["useDefaultImageForMigration"] is False
    assert HELM["postgresql"]["enabled"] is False


# --- the commands: the cluster runs what `make up` runs ----------------------------------------------------------
LOCAL = {c.name: c.argv for c in components(load_settings(REPO / "infra" / "production.yaml", environ={}))}

# Values that differ by design (flag names and subcommands never do): bind addresses (loopback on a workstation,
# all interfaces in a pod), URIs and paths of the backing stores (local database and folders vs Secrets, an object
# store and the shared volume), MLflow's worker count (a pod has more cores than a share of a laptop).
VALUES_BY_DESIGN = {
    "mlflow": {"--host", "--backend-store-uri", "--artifacts-destination", "--workers"},
    "evidently-ui": {"--host", "--workspace"},
    "serving": {"--host"},
    "stream-worker": {"--metrics-host"},
}
# Flags the local stack adds that the cluster leaves out by design: with stack.log_servers false nothing reads
# task logs over HTTP on one machine; in the cluster the api-server fetches them from the workers' log servers.
FLAGS_LOCAL_ONLY = {"--skip-serve-logs"}
HELM_COMPONENT = {
    "airflow-api-server": "apiServer",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dagProcessor",
    "airflow-triggerer": "triggerer",
    "airflow-celery-worker": "workers",
}
K8S_COMPONENT = {
    "mlflow": "mlflow",
    "serving": "freqcap-serving",
    "stream-worker": "freqcap-stream",
    "evidently-ui": "evidently-ui",
}


def _parse(argv: list[str] | tuple[str, ...]) -> tuple[str, tuple[str, ...], dict[str, str | None]]:
    """(program basename, subcommands, {flag: value or None})."""
    program, rest = Path(argv[0]).name, list(argv[1:])
    subcommands: list[str] = []
    flags: dict[str, str | None] = {}
    i = 0
    while i < len(rest):
        token = rest[i]
        if token.startswith("--"):
            has_value = i + 1 < len(rest) and not rest[i + 1].startswith("--")
            flags[token] = rest[i + 1] if has_value else None
            i += 2 if has_value else 1
        else:
            assert not flags, f"positional {token!r} after flags in {argv}"
            subcommands.append(token)
            i += 1
    return program, tuple(subcommands), flags


def _container_argv(container: dict[str, Any]) -> list[str]:
    """What the container executes: `command` + `args`, or the image's entry point (infra/docker/entrypoint.sh)."""
    argv = [*container.get("command", []), *container.get("args", [])]
    if not container.get("command") and argv[0] not in PASSTHROUGH:
        argv = ["freqcap", *argv]
    return _unwrap_shell(argv)


def _unwrap_shell(argv: list[str]) -> list[str]:
    """The Helm chart's `bash -c "exec airflow …"` → `airflow …`."""
    if argv[:2] == ["bash", "-c"]:
        argv = shlex.split(argv[2])
        if argv[0] == "exec":
            argv = argv[1:]
    return argv


def _assert_same_command(name: str, local: tuple[str, ...], deployed: list[str], values_by_design: set[str]):
    program, subcommands, flags = _parse(local)
    d_program, d_subcommands, d_flags = _parse(deployed)
    assert d_program == program, f"{name}: runs {d_program}, the local stack runs {program}"
    assert d_subcommands == subcommands, f"{name}: {d_subcommands} vs local {subcommands}"
    local_flags = {f: v for f, v in flags.items() if f not in FLAGS_LOCAL_ONLY}
    assert set(d_flags) == set(local_flags), f"{name}: flags {sorted(d_flags)} vs local {sorted(local_flags)}"
    for flag, value in local_flags.items():
        if flag not in values_by_design:
            assert d_flags[flag] == value, f"{name}: {flag} {d_flags[flag]} vs local {value}"


def test_every_local_component_is_deployed():
    assert set(LOCAL) == set(K8S_COMPONENT) | set(HELM_COMPONENT)


@pytest.mark.parametrize("name", sorted(K8S_COMPONENT))
def test_manifest_commands_are_the_local_stacks(name):
    container = _container(_named("Deployment", K8S_COMPONENT[name]))
    _assert_same_command(name, LOCAL[name], _container_argv(container), VALUES_BY_DESIGN[name])


@pytest.mark.parametrize("name", sorted(HELM_COMPONENT))
def test_airflow_chart_commands_are_the_local_stacks(name):
    section = HELM[HELM_COMPONENT[name]]
    assert section.get("enabled", True) is not False, f"{name} is disabled in the Helm values"
    assert section.get("command") is None  # the image's entry point passes `bash` through
    _assert_same_command(name, LOCAL[name], _unwrap_shell(section["args"]), set())


def test_airflow_configuration_matches_the_local_stacks():
    local = airflow_environment(load_settings(REPO / "infra" / "production.yaml", environ={}))
    env = {e["name"]: e["value"] for e in HELM["env"]}
    assert HELM["executor"] == local["AIRFLOW__CORE__EXECUTOR"]
    assert str(HELM["config"]["celery"]["worker_concurrency"]) == local["AIRFLOW__CELERY__WORKER_CONCURRENCY"]
    assert HELM["config"]["core"]["simple_auth_manager_users"] == local["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    for key in (
        "AIRFLOW__CORE__LOAD_EXAMPLES",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK",
    ):
        assert env[key] == local[key], key
    # Secrets and database URLs the local stack sets in the environment come from Secrets here.
    secret_env = {s["envName"] for s in HELM["secret"]}
    assert (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" in local
        and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" in secret_env
    )
    for component in ("apiServer", "dagProcessor", "triggerer"):
        assert HELM[component]["enabled"] is True


def test_commands_wire_the_services_and_settings_together():
    """The URLs in freqcap's cluster settings name Services that exist, on the ports the containers serve."""
    services = {s["metadata"]["name"]: s for s in _by_kind("Service")}

    def port_of(url: str) -> None:
        host, port = re.match(r"https?://([^:/]+):(\d+)", url).groups()
        assert host in services, f"{url}: no Service {host}"
        assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, url

    port_of(CLUSTER_SETTINGS["tracking"]["tracking_uri"])
    port_of(CLUSTER_SETTINGS["publish"]["serving_url"])
    assert services[re.match(r"https?://([^:/]+)", CLUSTER_SETTINGS["publish"]["serving_url"]).group(1)]["spec"].get(
        "publishNotReadyAddresses"
    ), "the first policy must reach a serving that is not ready yet (it has no policy)"
    evidently = _parse(_container_argv(_container(_named("Deployment", "evidently-ui"))))[2]
    assert evidently["--workspace"] == CLUSTER_SETTINGS["monitoring"]["workspace_dir"]
    serving = _parse(_container_argv(_container(_named("Deployment", "freqcap-serving"))))[2]
    assert int(serving["--port"]) == CLUSTER_SETTINGS["serving"]["port"]


def test_the_cluster_points_freqcap_at_everything_the_local_stack_does():
    """Every `FREQCAP__…` override `freqcap stack` sets is set in the cluster too: in the settings or from a Secret."""
    local = freqcap_environment(load_settings(REPO / "infra" / "production.yaml", environ={}))
    from_secrets = {e["name"] for _, e in _all_env() if "valueFrom" in e} | {s["envName"] for s in HELM["secret"]}
    for key in local:
        path = key.removeprefix("FREQCAP__").lower().split("__")
        node: Any = CLUSTER_SETTINGS
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        assert node is not None or key in from_secrets, f"{key} is not set for the cluster"


# Depend on the serving-service branch (serving.policy_store, `freqcap serve --workers`): they pass once it is merged.


def test_cluster_settings_load(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text(CLUSTER_SETTINGS_TEXT)
    settings = load_settings(path, environ={"FREQCAP__FEAST__REGISTRY": "postgresql+psycopg://u:p@pg/freqcap_feast"})
    assert settings.feast.online.kind == "redis" and settings.stream.enabled


@pytest.mark.parametrize("name", ["serving", "stream-worker"])
def test_freqcap_accepts_the_deployed_commands(name):
    argv = _container_argv(_container(_named("Deployment", K8S_COMPONENT[name])))
    assert Path(argv[0]).name == "freqcap"
    with contextlib.redirect_stderr(io.StringIO()):
        cli_main.build_parser().parse_args(argv[1:])


# --- Feast ---------------------------------------------------------------------------------------------------------
def test_feast_config_map_is_a_redis_cluster_repo_config_consistent_with_freqcaps(monkeypatch):
    from feast.repo_config import RepoConfig

    from freqcap.adapters.feast.store import repo_config_dict

    text = _named("ConfigMap", "feast-feature-store")["data"]["feature_store.yaml"]
    url = "postgresql+psycopg://feast:pw@pg:5432/freqcap_feast"
    monkeypatch.setenv("FEAST_REGISTRY_URL", url)
    raw = yaml.safe_load(os.path.expandvars(text))  # what Feast's load_repo_config does with the file
    config = RepoConfig(**raw)
    assert config.online_store.type == "redis"
    assert config.online_store.redis_type.name == "redis_cluster"
    nodes = config.online_store.connection_string.split(",")
    assert len(nodes) >= 3 and all(re.fullmatch(r"[\w.-]+:\d+", n) for n in nodes)
    assert config.registry.registry_type == "sql" and config.registry.path == url
    # The rest is what freqcap writes for itself (adapters.feast.store) with a SQL registry and Redis.
    settings = load_settings(
        REPO / "infra" / "production.yaml",
        environ={"FREQCAP__FEAST__REGISTRY": url, "FREQCAP__FEAST__ONLINE__KIND": "redis"},
    )
    ours = repo_config_dict(settings, Path("/unused"))
    assert {k: v for k, v in raw.items() if k not in ("registry", "online_store")} == {
        k: v for k, v in ours.items() if k not in ("registry", "online_store")
    }
    assert raw["registry"] == ours["registry"]
    assert raw["online_store"]["key_ttl_seconds"] == ours["online_store"]["key_ttl_seconds"]
