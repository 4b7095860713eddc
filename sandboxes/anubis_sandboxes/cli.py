"""The `anubis-sandbox` command: the stand-ins the demo and the tests talk to.

anubis-sandbox list                   one line per configured integration type with a sandbox:
                                      type, port and the flags the demo starts it with
anubis-sandbox serve TYPE [flags]     serve TYPE's sandbox until SIGINT/SIGTERM (`serve TYPE -h`)
anubis-sandbox webhook-sink           a local Slack-compatible webhook that prints the alerts
anubis-sandbox orders -n N -o FILE    realistic demo paid orders from the four marketplaces

Sandboxes are found by convention, not named here: the integrations file lists the types, and the
sandbox of type `x` is the module `anubis_sandboxes.x` with `SANDBOX`, `DEMO_FLAGS` and `main`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType


def sandbox_module(integration_type: str) -> ModuleType | None:
    """The sandbox module of an integration type, or None when it has none."""
    try:
        return importlib.import_module(f"anubis_sandboxes.{integration_type}")
    except ModuleNotFoundError as error:
        if error.name != f"anubis_sandboxes.{integration_type}":
            raise  # the module exists but one of its imports is missing: show it
        return None


def configured_sandboxes() -> list[tuple[str, ModuleType]]:
    """(type, module) of every integration type in the integrations file that has a sandbox."""
    from anubis_dagster.config.integrations import load_integrations

    types = sorted({integration.type for integration in load_integrations().integrations})
    found = [(kind, sandbox_module(kind)) for kind in types]
    return [(kind, module) for kind, module in found if module is not None]


def _cmd_list(_args: argparse.Namespace) -> int:
    for kind, module in configured_sandboxes():
        flags = " ".join(module.DEMO_FLAGS)
        print(f"{kind} {module.SANDBOX.default_port} {flags}".rstrip())
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    module = sandbox_module(args.type)
    if module is None:
        print(f"anubis-sandbox: no sandbox for type {args.type!r}", file=sys.stderr)
        return 1
    return int(module.main(args.sandbox_args) or 0)


def _cmd_webhook_sink(args: argparse.Namespace) -> int:
    from anubis_sandboxes.webhook_sink import main as serve

    return serve(["--port", str(args.port), "--host", args.host])


def _cmd_orders(args: argparse.Namespace) -> int:
    from anubis_sandboxes.demo.orders import generate_orders, write_jsonl

    orders = generate_orders(args.count, seed=args.seed, start_time=args.start_time)
    write_jsonl(orders, Path(args.out))
    print(f"wrote {len(orders)} orders to {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anubis-sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="configured sandboxes: type port flags").set_defaults(
        func=_cmd_list
    )
    serve = sub.add_parser("serve", help="serve an IES sandbox over HTTP", add_help=False)
    serve.add_argument("type", help="integration type, e.g. kroton")
    serve.add_argument("sandbox_args", nargs=argparse.REMAINDER)
    serve.set_defaults(func=_cmd_serve)
    sink = sub.add_parser("webhook-sink", help="a local Slack-compatible webhook that prints")
    sink.add_argument("--port", type=int, default=8790)
    sink.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    sink.set_defaults(func=_cmd_webhook_sink)
    orders = sub.add_parser("orders", help="write demo paid orders as JSON Lines")
    orders.add_argument("-o", "--out", required=True)
    orders.add_argument("-n", "--count", type=int, default=60)
    orders.add_argument("--seed", type=int, default=42)
    orders.add_argument(
        "--start-time",
        type=datetime.fromisoformat,
        default=None,
        help="updated_at (payment time) of the first order, ISO 8601 (default: a fixed time, "
        "so that a seed always gives the same file)",
    )
    orders.set_defaults(func=_cmd_orders)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
