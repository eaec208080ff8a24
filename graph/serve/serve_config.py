"""Serve's declarative config as the carrier of live weights.

Knows how to deploy the graph the way KubeRay does (`import_path` + `args`,
so a later change of only a deployment's `user_config` is applied in place:
Serve calls `reconfigure` on every replica, restarts none) and how to change
the ingress's user_config, and park (scale to zero) the deployments only
retired releases use, in the running application from inside the graph.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graph.config import DeploymentConfig, RagServingArgs

logger = logging.getLogger("ragserve.serve_config")

IMPORT_PATH = "graph.serve.builder:build_app"
INGRESS = "ingress"


def deploy_declaratively(
    app_name: str, args: dict[str, Any], timeout_s: float = 900.0
) -> None:
    """Deploy `graph.serve.builder:build_app` with `args`, as `serve deploy` and
    KubeRay do, and wait until the application runs.

    Raises:
        RuntimeError: the application failed to deploy (Serve's message).
    """
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    from graph.config import RagServingArgs

    scales = node_scales(RagServingArgs.load(args))
    config = ServeDeploySchema.model_validate(
        {
            "applications": [
                {
                    "name": app_name,
                    "route_prefix": "/",
                    "import_path": IMPORT_PATH,
                    "args": args,
                    # Every step deployment's scale, listed from the start, so
                    # parking one later is an in-place update (plan_update).
                    "deployments": [
                        {"name": name, **scale} for name, scale in scales.items()
                    ],
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


def scale_entry(node: DeploymentConfig) -> dict[str, Any]:
    """A step deployment's scale as a Serve config `deployments:` entry gives
    it. Always an `autoscaling_config` (a fixed count is min = max): Serve
    hashes which deployments carry one into the application's code version,
    so parking one later must not add the first."""
    if node.num_replicas is not None:
        n = node.num_replicas
        fixed = {"min_replicas": n, "max_replicas": n, "initial_replicas": n}
        return {"num_replicas": "auto", "autoscaling_config": fixed}
    return {"autoscaling_config": node.autoscaling.model_dump(exclude_none=True)}


def node_scales(cfg: RagServingArgs) -> dict[str, dict[str, Any]]:
    """`scale_entry` of every step deployment `build_app(cfg)` binds, by name."""
    from graph.routing.served import NODES, deployment_names, load_served

    served = load_served(cfg, verify=False)
    names = deployment_names(served)
    return {
        names[r.name][node]: scale_entry(getattr(r.args.deployments, node))
        for r in served
        for node in NODES
    }


async def apply_ingress_user_config(
    app_name: str,
    user_config: dict[str, Any],
    parked: set[str] | None = None,
    scales: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Give the ingress of `app_name` a new user_config and park exactly the
    deployments in `parked` (scaled to zero; the others at their `scales`),
    in one Serve update that keeps every other setting of every declaratively
    deployed application and restarts no replica.

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
            data["deployments"] = plan_update(
                data, user_config, parked or set(), scales or {}
            )
        apps.append(data)
    await controller.apply_config.remote(
        ServeDeploySchema.model_validate({"applications": apps})
    )


def plan_update(
    app: dict[str, Any],
    user_config: dict[str, Any],
    parked: set[str],
    scales: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """The app's new `deployments:` list: the ingress's user_config, and the
    step deployments at their scales with `parked` at PARKED_SCALE, unless
    that would change the app's code version (Serve would then rebuild it and
    restart every replica: a config that never listed the step deployments'
    autoscaling, as a hand-written serveConfigV2): then the user_config only."""
    from ray.serve._private.deploy_utils import get_app_code_version
    from ray.serve.schema import ServeApplicationSchema

    current = list(app.get("deployments", []))
    planned = deployment_overrides(current, user_config, parked, scales)
    version = get_app_code_version(ServeApplicationSchema.model_validate(app))
    new = ServeApplicationSchema.model_validate({**app, "deployments": planned})
    if get_app_code_version(new) == version:
        return planned
    if parked:
        logger.warning(
            "not parking %s: Serve would rebuild the application (list each "
            "step deployment's autoscaling_config in the Serve config to allow it)",
            ", ".join(sorted(parked)),
        )
    return deployment_overrides(current, user_config, set(), {})


def deployment_overrides(
    current: list[dict[str, Any]],
    user_config: dict[str, Any],
    parked: set[str],
    scales: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """`current` with the ingress's new user_config and each deployment in
    `scales` at its scale, or at PARKED_SCALE when in `parked`; every other
    setting of every entry is kept."""
    out: dict[str, dict[str, Any]] = {e["name"]: copy.deepcopy(e) for e in current}
    for name, scale in scales.items():
        entry = out.setdefault(name, {"name": name})
        entry.pop("num_replicas", None)
        entry.pop("autoscaling_config", None)
        entry.update(copy.deepcopy(scale))
        if name in parked:
            entry["autoscaling_config"] = dict(PARKED_SCALE)
    out.setdefault(INGRESS, {"name": INGRESS})["user_config"] = user_config
    return [e for e in out.values() if len(e) > 1]
