"""Serve's declarative config as the carrier of live weights.

Knows how to deploy the graph the way KubeRay does (`import_path` + `args`,
so a later change of only a deployment's `user_config` is applied in place:
Serve calls `reconfigure` on every replica, restarts none) and how to change
the ingress's user_config, and park (scale to zero) the deployments only
retired releases use, in the running application from inside the graph.
"""

from __future__ import annotations

import time
from typing import Any

IMPORT_PATH = "graph.builder:build_app"
INGRESS = "ingress"


def deploy_declaratively(
    app_name: str, args: dict[str, Any], timeout_s: float = 900.0
) -> None:
    """Deploy `graph.builder:build_app` with `args`, as `serve deploy` and
    KubeRay do, and wait until the application runs.

    Raises:
        RuntimeError: the application failed to deploy (Serve's message).
    """
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(
        {
            "applications": [
                {
                    "name": app_name,
                    "route_prefix": "/",
                    "import_path": IMPORT_PATH,
                    "args": args,
                }
            ]
        }
    )
    _get_global_client().deploy_apps(config)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get(app_name)
        status = str(app.status) if app else "NOT_STARTED"
        if status.endswith("RUNNING"):
            return
        if status.endswith("DEPLOY_FAILED"):
            message = (app.message if app else "").strip().splitlines()
            raise RuntimeError(
                f"the graph failed to deploy: {message[-1] if message else status}"
            )
        time.sleep(1)
    raise RuntimeError(f"the graph did not start within {timeout_s:.0f} s")


#: A parked deployment's scale: none, and back to none soon after a stray call.
PARKED_SCALE: dict[str, Any] = {
    "min_replicas": 0,
    "max_replicas": 1,
    "initial_replicas": 0,
    "downscale_delay_s": 0.0,
    "downscale_to_zero_delay_s": 0.0,
    "upscale_delay_s": 0.0,
}


async def apply_ingress_user_config(
    app_name: str, user_config: dict[str, Any], parked: set[str] | None = None
) -> None:
    """Give the ingress of `app_name` a new user_config and park exactly the
    deployments in `parked` (scaled to zero; one parked before and not named
    now goes back to the scale its code gives it), in one Serve update that
    keeps every other setting of every declaratively deployed application.

    Raises:
        RuntimeError: the application was not deployed from a config (it was
            started with `serve.run`), so Serve cannot update it in place.
    """
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    from ray.serve.schema import ServeDeploySchema

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    configs = await controller.get_app_configs.remote()
    if app_name not in configs:
        raise RuntimeError(
            f"application {app_name!r} was not deployed from a config; weights "
            "change live only for graphs served with --release (or KubeRay)"
        )
    apps = []
    for name, app in configs.items():
        data = app.model_dump(exclude_unset=True)
        if name == app_name:
            data["deployments"] = deployment_overrides(
                [d.model_dump(exclude_unset=True) for d in app.deployments],
                user_config,
                parked or set(),
            )
        apps.append(data)
    await controller.apply_config.remote(
        ServeDeploySchema.model_validate({"applications": apps})
    )


def deployment_overrides(
    current: list[dict[str, Any]], user_config: dict[str, Any], parked: set[str]
) -> list[dict[str, Any]]:
    """The app's `deployments:` list with the ingress's new user_config and
    exactly `parked` at PARKED_SCALE; other overrides are kept as they are."""
    out: dict[str, dict[str, Any]] = {}
    for entry in current:
        entry = dict(entry)
        if entry.get("autoscaling_config") == PARKED_SCALE:  # ours: unpark
            entry.pop("autoscaling_config")
            entry.pop("num_replicas", None)
        out[entry["name"]] = entry
    for name in sorted(parked):
        out.setdefault(name, {"name": name}).update(
            num_replicas="auto", autoscaling_config=dict(PARKED_SCALE)
        )
    out.setdefault(INGRESS, {"name": INGRESS})["user_config"] = user_config
    return [e for e in out.values() if len(e) > 1]
