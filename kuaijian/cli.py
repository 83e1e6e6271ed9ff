"""`kuaijian` console script: builds the argparse tree from each package's CLI module.

Each CLI module exposes ``register(subparsers)`` that adds its verbs and sets ``func`` on them; a verb's
function takes the parsed namespace and returns a process exit code. CLI modules import their heavy
dependencies inside the verb functions so `kuaijian --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from kuaijian_schema.version import software_version

# (module, group): group None registers top-level verbs, otherwise verbs under `kuaijian <group>`.
_REGISTRY: tuple[tuple[str, str | None], ...] = (
    ("gateway.interpret.cli", None),  # kuaijian interpret gold|enzyme FILE
    ("gateway.cli", "gateway"),  # kuaijian gateway run|status|...
    ("drivers.cli", "gateway"),  # kuaijian gateway scan
    ("firmware_sim.cli_gold", "sim"),  # kuaijian sim gold
    ("firmware_sim.cli_enzyme", "sim"),  # kuaijian sim enzyme
    ("cloud.cli", "cloud"),  # kuaijian cloud serve|enrol-station|import-grid|...
    ("kuaijian.demo_cli", None),  # kuaijian demo
    ("kuaijian.fleet", None),  # kuaijian fleet
)

_GROUP_HELP = {
    "gateway": "station gateway: run the service, scan for analyzers",
    "sim": "simulated analyzers on real ptys / TCP ports",
    "cloud": "cloud service: serve, enrol stations, import the grid",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kuaijian", description="快检 rapid-test gateway and cloud")
    parser.add_argument("--version", action="version", version=f"kuaijian {software_version()}")
    top = parser.add_subparsers(dest="verb", metavar="VERB")
    top.required = True
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for module_name, group in _REGISTRY:
        module = importlib.import_module(module_name)
        if group is None:
            module.register(top)
            continue
        if group not in groups:
            gp = top.add_parser(group, help=_GROUP_HELP[group], description=_GROUP_HELP[group])
            sub = gp.add_subparsers(dest=f"{group}_verb", metavar="VERB")
            sub.required = True
            groups[group] = sub
        module.register(groups[group])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
