"""``llmrelay simulate``: the simulated upstream on its own (see docs/simulator.md)."""

from __future__ import annotations

import argparse
import sys

from ._args import port


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="run the simulated OpenAI/Anthropic upstream (faults, latency, rules)"
    )
    p.add_argument("--config", help="simulator YAML file (rules, latency, faults)")
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port, default=None, help="port to listen on (default 8100)")
    p.add_argument("--seed", type=int, default=None, help="seed for fault sampling")


def run(args: argparse.Namespace) -> int:
    from ..simulator import SimulatorSettings
    from ..simulator import run as run_simulator

    overrides = {
        k: v for k, v in (("host", args.host), ("port", args.port), ("seed", args.seed)) if v is not None
    }
    # Validated, so --port 99999 is refused, not wrapped around to another port.
    settings = (
        SimulatorSettings.load(args.config, **overrides)
        if args.config
        else SimulatorSettings.from_overrides(**overrides)
    )
    print(f"llmrelay simulator on http://{settings.host}:{settings.port}", file=sys.stderr, flush=True)
    run_simulator(settings)
    return 0
