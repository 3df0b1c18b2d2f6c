"""``llmrelay`` command line: one module per command group."""

from __future__ import annotations

import argparse
import sqlite3
import sys

from ..errors import ConfigError
from . import batch, bench, costs, evals, keys, logs, router, serve, simulate, worker

COMMANDS = {
    "serve": serve,
    "simulate": simulate,
    "logs": logs,
    "costs": costs,
    "keys": keys,
    "router": router,
    "eval": evals,
    "bench": bench,
    "worker": worker,
    "batch": batch,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llmrelay", description="A production layer for LLM calls.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command].run(args) or 0
    except ConfigError as exc:
        print(f"llmrelay: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, sqlite3.Error) as exc:
        # A file, directory, port or database the command could not use (an output path under a
        # file, PostgreSQL down, a port taken): one line naming it, not a traceback.
        print(f"llmrelay {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
