# docs/examples/scale_out_definitions.py: recon_pipeline's code location on another executor.
"""recon_pipeline's definitions, unchanged, with the executor named by RECON_EXECUTOR.

Ship this file in the project's image (e.g. as `recon_scale_out.py` next to the package) and
load it instead of `recon_pipeline.definitions`:
`dagster code-server start -m recon_scale_out --location-name recon_pipeline -h 0.0.0.0 -p 4000`.
Every step then reconstructs the job from this module, wherever it runs. Scheduled and sensor
runs get the same executor settings as launched ones: they are fixed here, not in run config.
"""

import os

import dagster as dg

from recon_pipeline.definitions import defs as recon_defs

CELERY = {
    "broker": {"env": "DAGSTER_CELERY_BROKER_URL"},
    "backend": {"env": "DAGSTER_CELERY_BACKEND_URL"},
}
# What a step needs, passed from the Celery worker's environment into the step's container.
STEP_ENV = [
    "DAGSTER_POSTGRES_USER",
    "DAGSTER_POSTGRES_PASSWORD",
    "DAGSTER_POSTGRES_HOST",
    "DAGSTER_POSTGRES_PORT",
    "DAGSTER_POSTGRES_DB",
    "DATABASE_URL",
    "STRIPE_SECRET_KEY",
    "DISCORD_BOT_TOKEN",
    "DISCORD_GUILD_ID",
    "SMTP_PASSWORD",
]


def _executor() -> dg.ExecutorDefinition:
    kind = os.environ.get("RECON_EXECUTOR", "")
    if kind == "k8s":
        # Pod settings (namespace, env_secrets, ...) come from the K8sRunLauncher's config.
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if kind == "celery":
        from dagster_celery import celery_executor

        return celery_executor.configured(CELERY)
    if kind == "celery-docker":
        # The steps' image: the code server's --container-image.
        from dagster_celery_docker import celery_docker_executor

        return celery_docker_executor.configured({**CELERY, "docker": {"env_vars": STEP_ENV}})
    raise ValueError(f"RECON_EXECUTOR={kind!r}: expected k8s, celery or celery-docker")


defs = dg.Definitions.merge(recon_defs, dg.Definitions(executor=_executor()))
