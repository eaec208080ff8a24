"""The commands that change or read a running graph through its admin routes:
`release promote | rollback | restore` and `traffic set | show`.

    ragserve release promote NAME [--force]   (checks stored evals against
                            the stable release's, `releases.quality`)
    ragserve release rollback | restore NAME [--wait-s S]
    ragserve traffic set A=90 B=10 [--shadow B=10] | show

They talk to `--address` (default `$RAGSERVE_URL` or http://127.0.0.1:8000),
which applies each change through the ingress's Serve user_config.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from graph.cli.args import at_least
from graph.cli.releases import ReleaseCLIError, audit, registry_flag, registry_of

DEFAULT_URL = "http://127.0.0.1:8000"


def _admin(ns: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    import httpx

    url = (ns.address or os.environ.get("RAGSERVE_URL") or DEFAULT_URL).rstrip("/")
    headers = {}
    key = os.environ.get("RAGSERVE_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        response = httpx.request(
            method, url + path, json=body, headers=headers, timeout=ns.timeout
        )
    except httpx.HTTPError as exc:
        raise ReleaseCLIError(
            f"cannot reach the graph at {url} ({type(exc).__name__}); is "
            "`ragserve serve` running there? (--address URL)"
        ) from None
    try:
        data = response.json()
    except json.JSONDecodeError:
        data = {}
    if response.status_code >= 400:
        message = (data.get("error") or {}).get("message") or response.text[:200]
        raise ReleaseCLIError(message)
    return data


def _print_traffic(data: dict[str, Any], changed: bool = False) -> None:
    applied = data.get("last_change_s")
    if changed and applied is not None:
        print(f"applied to the running graph in {applied:.2f} s")
    print(f"revision {data.get('revision')}  stable {data.get('stable')}")
    print(f"{'RELEASE':<20} {'WEIGHT':>6} {'SHADOW':>6}  {'STATE':<10} FINGERPRINT")
    for r in data.get("releases", []):
        print(
            f"{r['name']:<20} {r['weight']:>5}% {r['shadow']:>5}%  {r['state']:<10} "
            f"{r['fingerprint']}"
        )
        if r.get("reason"):
            print(f"{'':<20} weight taken away: {r['reason']}")
        if r.get("retires_at") is not None:
            left = max(0.0, r["retires_at"] - time.time())
            print(f"{'':<20} no traffic: retires in {left:.0f} s")


def cmd_traffic_set(ns: argparse.Namespace) -> int:
    from releases.traffic import parse_assignments

    weights = parse_assignments(ns.weights)
    shadow = parse_assignments(ns.shadow or [], "shadow share")
    data = _admin(ns, "POST", "/admin/traffic", {"weights": weights, "shadow": shadow})
    _print_traffic(data, changed=True)
    return 0


def cmd_traffic_show(ns: argparse.Namespace) -> int:
    _print_traffic(_admin(ns, "GET", "/admin/traffic"))
    return 0


def cmd_release_promote(ns: argparse.Namespace) -> int:
    from graph.cli.args import load_args
    from releases.quality import breaches

    args = load_args(ns)
    stable = _admin(ns, "GET", "/admin/traffic").get("stable")
    found: list[str] = []
    if stable and stable != ns.name:
        registry = registry_of(ns, args)
        found = breaches(
            args.releases.quality, registry.evals(stable), registry.evals(ns.name)
        )
    if found and not ns.force:
        raise ReleaseCLIError(
            f"release {ns.name} answers worse than stable {stable}: {found[0]}"
            + (f" (and {len(found) - 1} more)" if len(found) > 1 else "")
            + "; see `ragserve release diff`, or pass --force (audited)"
        )
    data = _admin(ns, "POST", "/admin/promote", {"release": ns.name})
    if found:
        audit(
            args,
            "release.promote.force",
            {"stable": stable, "breaches": found},
            {"release": ns.name},
        )
        print(f"promoted despite: {'; '.join(found)} (audited)")
    _print_traffic(data, True)
    return 0


def cmd_release_rollback(ns: argparse.Namespace) -> int:
    _print_traffic(_admin(ns, "POST", "/admin/rollback", {}), True)
    return 0


def cmd_release_restore(ns: argparse.Namespace) -> int:
    data = _admin(ns, "POST", "/admin/restore", {"release": ns.name})
    deadline = time.monotonic() + ns.wait_s
    while _state(data, ns.name) != "warm" and time.monotonic() < deadline:
        time.sleep(1.0)
        data = _admin(ns, "GET", "/admin/traffic")
    _print_traffic(data, changed=True)
    state = _state(data, ns.name)
    if state != "warm":
        raise ReleaseCLIError(
            f"release {ns.name!r} is restored but not warm after {ns.wait_s:.0f} s "
            f"({state}); `ragserve traffic show` tells when it is"
        )
    return 0


def _state(traffic: dict[str, Any], name: str) -> str:
    return next(
        (r["state"] for r in traffic.get("releases", []) if r["name"] == name), "?"
    )


def _address_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        help=f"the graph's URL (default $RAGSERVE_URL or {DEFAULT_URL})",
    )
    p.add_argument(
        "--timeout", type=at_least(0.001, float), default=60.0, help=argparse.SUPPRESS
    )


def add_live_commands(sub: Any, rel: Any, add_config_flags: Any) -> None:
    """Register the live commands: under `release` (`rel`) and as `traffic`."""
    promote = rel.add_parser("promote", help="a live release to 100%%")
    promote.add_argument("name")
    promote.add_argument(
        "--force",
        action="store_true",
        help="promote even when its stored eval is worse than the stable "
        "release's beyond releases.quality (an audit record says so)",
    )
    _address_flag(promote)
    registry_flag(promote)
    add_config_flags(promote)
    promote.set_defaults(func=cmd_release_promote)
    rollback = rel.add_parser("rollback", help="the previous stable release to 100%%")
    _address_flag(rollback)
    rollback.set_defaults(func=cmd_release_rollback)

    restore = rel.add_parser(
        "restore", help="a retired release deployed and warm again"
    )
    restore.add_argument("name")
    restore.add_argument(
        "--wait-s",
        type=at_least(0.0, float),
        default=600.0,
        help="how long to wait for it to be warm (0: do not wait)",
    )
    _address_flag(restore)
    restore.set_defaults(func=cmd_release_restore)

    traffic = sub.add_parser("traffic", help="live weights").add_subparsers(
        dest="traffic_command", required=True
    )
    tset = traffic.add_parser("set", help="e.g. A=90 B=10 [--shadow C=10]")
    tset.add_argument("weights", nargs="+", metavar="NAME=PERCENT")
    tset.add_argument("--shadow", action="append", metavar="NAME=PERCENT")
    _address_flag(tset)
    registry_flag(tset)
    tset.set_defaults(func=cmd_traffic_set)
    tshow = traffic.add_parser("show", help="weights, states, canary verdicts")
    _address_flag(tshow)
    registry_flag(tshow)
    tshow.set_defaults(func=cmd_traffic_show)
