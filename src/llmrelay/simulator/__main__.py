"""``python -m llmrelay.simulator [--config FILE] [--host H] [--port P] [--seed N] [--fixed-reply TEXT]``"""

from __future__ import annotations

import argparse
import contextlib

from . import run
from .settings import SimulatorSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llmrelay.simulator", description=__doc__)
    parser.add_argument("--config", help="simulator YAML file")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--fixed-reply", help="benchmark mode: always answer this text")
    args = parser.parse_args(argv)
    overrides = {"host": args.host, "port": args.port, "seed": args.seed, "fixed_reply": args.fixed_reply}
    if args.config:
        settings = SimulatorSettings.load(args.config, **overrides)
    else:
        settings = SimulatorSettings(**{k: v for k, v in overrides.items() if v is not None})
    with contextlib.suppress(KeyboardInterrupt):
        run(settings)


if __name__ == "__main__":
    main()
