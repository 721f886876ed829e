"""docs/deployment.md and its configuration examples (docs/examples/) load and validate.

dagster-k8s, dagster-celery and dagster-celery-docker are not dependencies of the project, so
their own schemas cannot be loaded here. Instance configs are validated against Dagster's
instance schema (which checks `run_launcher` as module/class/config), and the names and fields
taken from those packages are checked against the lists below, copied from their 0.29.27
releases (`K8sRunLauncher.config_type()`, each executor's `config_schema`).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import types
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.workspace.config_schema import ensure_workspace_config

from recon_pipeline.settings import Settings
from recon_pipeline_tests.test_production.conftest import LOCATION, ROOT

GUIDE = ROOT / "docs" / "deployment.md"
EXAMPLES = ROOT / "docs" / "examples"
EXAMPLE_FILES = sorted(p.name for p in EXAMPLES.iterdir() if p.is_file())

# dagster-k8s 0.29.27
K8S_RUN_LAUNCHERS = {("dagster_k8s", "K8sRunLauncher"), ("dagster_k8s.launcher", "K8sRunLauncher")}
K8S_RUN_LAUNCHER_FIELDS = {
    "dagster_home", "env_config_maps", "env_secrets", "env_vars", "fail_pod_on_run_failure",
    "image_pull_policy", "image_pull_secrets", "instance_config_map", "job_image",
    "job_namespace", "k8s_api_ssl_ca_cert_file", "kubeconfig_file", "labels",
    "load_incluster_config", "only_allow_user_defined_env_vars",
    "only_allow_user_defined_k8s_config_fields", "postgres_password_secret", "resources",
    "run_k8s_config", "scheduler_name", "security_context", "service_account_name",
    "volume_mounts", "volumes",
}  # fmt: skip
K8S_JOB_EXECUTOR_FIELDS = {
    "enable_owner_references", "env_config_maps", "env_secrets", "env_vars",
    "image_pull_policy", "image_pull_secrets", "job_image", "job_namespace", "kubeconfig_file",
    "labels", "load_incluster_config", "max_concurrent", "per_step_k8s_config", "resources",
    "retries", "scheduler_name", "security_context", "service_account_name",
    "step_dependency_config", "step_k8s_config", "tag_concurrency_limits", "volume_mounts",
    "volumes",
}  # fmt: skip
STEP_K8S_CONFIG_FIELDS = {
    "container_config", "pod_template_spec_metadata", "pod_spec_config", "job_config",
    "job_metadata", "job_spec_config",
}  # fmt: skip
# dagster-celery / dagster-celery-docker 0.29.27
CELERY_EXECUTOR_FIELDS = {"broker", "backend", "include", "config_source", "retries"}
CELERY_DOCKER_EXECUTOR_FIELDS = CELERY_EXECUTOR_FIELDS | {"docker"}
CELERY_DOCKER_FIELDS = {"image", "registry", "env_vars", "network", "container_kwargs"}
# RECON_EXECUTOR value -> (module, executor, its config fields)
EXECUTORS = {
    "k8s": ("dagster_k8s", "k8s_job_executor", K8S_JOB_EXECUTOR_FIELDS),
    "celery": ("dagster_celery", "celery_executor", CELERY_EXECUTOR_FIELDS),
    "celery-docker": (
        "dagster_celery_docker",
        "celery_docker_executor",
        CELERY_DOCKER_EXECUTOR_FIELDS,
    ),
}
# What a run cannot do without (README: Configuration; docs/deployment.md §2)
RUN_NEEDS = {
    "DAGSTER_POSTGRES_USER",
    "DAGSTER_POSTGRES_PASSWORD",
    "DAGSTER_POSTGRES_HOST",
    "DAGSTER_POSTGRES_PORT",
    "DAGSTER_POSTGRES_DB",
    "DATABASE_URL",
    "STRIPE_SECRET_KEY",
    "DISCORD_BOT_TOKEN",
    "DISCORD_GUILD_ID",
}

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
_NAMED = re.compile(r"^# docs/examples/([\w.-]+):")


def _load(name: str) -> Any:
    return yaml.safe_load((EXAMPLES / name).read_text())


@pytest.fixture
def dagster_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the examples read from the environment, so `{env: …}` values resolve."""
    values = {
        "DAGSTER_POSTGRES_PORT": "5432",
        "DATABASE_URL": "postgresql://recon@db:5432/membership",
        "DISCORD_GUILD_ID": "1100000000000000001",
    }
    for name in RUN_NEEDS:
        monkeypatch.setenv(name, values.get(name, "x"))
    monkeypatch.setenv("DAGSTER_CELERY_BROKER_URL", "pyamqp://recon:secret@rabbitmq//")
    monkeypatch.setenv("DAGSTER_CELERY_BACKEND_URL", "rpc://")


# --- the guide and the files agree -------------------------------------------------------------


def test_every_config_block_of_the_guide_is_an_example_file_verbatim() -> None:
    shown: list[str] = []
    for lang, body in _FENCE.findall(GUIDE.read_text()):
        if lang not in ("yaml", "python"):
            continue
        named = _NAMED.match(body)
        assert named, f"a {lang} block of docs/deployment.md names no docs/examples file:\n{body}"
        shown.append(named.group(1))
        assert body == (EXAMPLES / named.group(1)).read_text(), named.group(1)
    assert sorted(shown) == EXAMPLE_FILES  # each file shown, once


@pytest.mark.parametrize("name", EXAMPLE_FILES)
def test_example_parses(name: str) -> None:
    text = (EXAMPLES / name).read_text()
    assert text.startswith(f"# docs/examples/{name}:")
    if name.endswith(".py"):
        ast.parse(text, filename=name)
    else:
        assert name.endswith(".yaml")
        assert isinstance(yaml.safe_load(text), dict)


def test_guide_lists_every_environment_variable() -> None:
    guide = GUIDE.read_text()
    scale_out = ["RECON_EXECUTOR", "DAGSTER_CELERY_BROKER_URL", "DAGSTER_CELERY_BACKEND_URL"]
    for name in [*Settings.model_fields, "DAGSTER_HOME", *sorted(RUN_NEEDS), *scale_out]:
        assert f"`{name}`" in guide, name


# --- instance and workspace configs ------------------------------------------------------------


def test_k8s_instance_config_passes_dagsters_instance_schema(
    dagster_env: None, tmp_path: Path
) -> None:
    (tmp_path / "dagster-k8s.yaml").write_text((EXAMPLES / "dagster-k8s.yaml").read_text())

    config, custom_instance_class = dagster_instance_config(str(tmp_path), "dagster-k8s.yaml")

    assert custom_instance_class is None
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) in K8S_RUN_LAUNCHERS
    assert set(launcher["config"]) <= K8S_RUN_LAUNCHER_FIELDS
    assert {"instance_config_map", "dagster_home"} <= set(launcher["config"])


def test_k8s_instance_config_is_the_deployments_plus_a_run_launcher() -> None:
    k8s = _load("dagster-k8s.yaml")
    k8s.pop("run_launcher")
    assert k8s == yaml.safe_load((ROOT / "dagster.yaml").read_text())


def test_grpc_workspace_passes_dagsters_workspace_schema() -> None:
    path = EXAMPLES / "workspace-grpc.yaml"
    config = ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))

    [entry] = config["load_from"]
    assert set(entry) == {"grpc_server"}
    assert entry["grpc_server"]["location_name"] == LOCATION
    assert {"host", "port"} <= set(entry["grpc_server"])


# --- executor configs --------------------------------------------------------------------------


def _reconciliation_job() -> dg.JobDefinition:
    from recon_pipeline.definitions import build_definitions
    from recon_pipeline.settings import load_settings

    return build_definitions(load_settings()).resolve_job_def("reconciliation_job")


def test_k8s_launch_config_fits_the_executor_and_the_job(dagster_env: None) -> None:
    run_config = _load("k8s-run-config.yaml")
    execution = run_config.pop("execution")["config"]

    assert set(execution) <= K8S_JOB_EXECUTOR_FIELDS
    assert set(execution.get("step_k8s_config", {})) <= STEP_K8S_CONFIG_FIELDS
    # The rest is the job's own config, checked by Dagster against the real job.
    dg.validate_run_config(_reconciliation_job(), run_config)


def test_celery_worker_config_is_the_executors_broker_and_backend() -> None:
    execution = _load("celery-worker.yaml")["execution"]["config"]

    assert set(execution) <= CELERY_EXECUTOR_FIELDS
    assert execution == {
        "broker": {"env": "DAGSTER_CELERY_BROKER_URL"},
        "backend": {"env": "DAGSTER_CELERY_BACKEND_URL"},
    }


# --- the scale-out code location ---------------------------------------------------------------


class _FakeExecutor:
    """Stands in for a scale-out executor: a real (never run) executor definition, with
    `configured` recording what it was given."""

    def __init__(self, name: str) -> None:
        self.configured_with: dict[str, Any] | None = None
        self.definition = self._definition(name)

    @staticmethod
    def _definition(name: str) -> dg.ExecutorDefinition:
        @dg.executor(name=name)
        def _executor(_init_context):  # pragma: no cover - never launched
            raise NotImplementedError

        return _executor

    def configured(self, config: dict[str, Any]) -> dg.ExecutorDefinition:
        self.configured_with = config
        return self._definition(f"{self.definition.name}_configured")


def _load_scale_out(monkeypatch: pytest.MonkeyPatch, kind: str) -> tuple[Any, dict[str, Any]]:
    fakes: dict[str, _FakeExecutor] = {}
    for key, (module_name, attribute, _) in EXECUTORS.items():
        fakes[key] = _FakeExecutor(f"fake_{key.replace('-', '_')}")
        module = types.ModuleType(module_name)
        # k8s_job_executor is used as it is; the Celery executors are configured first.
        setattr(module, attribute, fakes[key].definition if key == "k8s" else fakes[key])
        monkeypatch.setitem(sys.modules, module_name, module)
    monkeypatch.setenv("RECON_EXECUTOR", kind)
    spec = importlib.util.spec_from_file_location(
        "recon_scale_out_under_test", EXAMPLES / "scale_out_definitions.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, fakes


@pytest.mark.parametrize("kind", list(EXECUTORS))
def test_scale_out_location_runs_the_jobs_on_the_executor_it_is_told(
    monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    module, fakes = _load_scale_out(monkeypatch, kind)

    job = module.defs.resolve_job_def("reconciliation_job")
    expected = fakes[kind].definition.name + ("" if kind == "k8s" else "_configured")
    assert job.executor_def.name == expected
    assert module.defs.resolve_job_def("verification_job").executor_def.name == expected
    # Everything else is recon_pipeline's own code location.
    from recon_pipeline.definitions import defs as recon_defs

    assert {s.name for s in module.defs.schedules} == {s.name for s in recon_defs.schedules}
    assert {s.name for s in module.defs.sensors} == {s.name for s in recon_defs.sensors}
    fields = EXECUTORS[kind][2]
    configured = fakes[kind].configured_with
    if kind == "k8s":
        assert configured is None
        return
    assert configured is not None and set(configured) <= fields
    assert configured["broker"] == {"env": "DAGSTER_CELERY_BROKER_URL"}
    assert configured["backend"] == {"env": "DAGSTER_CELERY_BACKEND_URL"}
    if kind == "celery-docker":
        assert set(configured["docker"]) <= CELERY_DOCKER_FIELDS
        assert set(configured["docker"]["env_vars"]) >= RUN_NEEDS


def test_scale_out_location_refuses_an_unknown_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="RECON_EXECUTOR='dask'"):
        _load_scale_out(monkeypatch, "dask")
