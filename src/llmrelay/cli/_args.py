"""argparse types the commands share: a bad value is argparse's one-line error (exit 2), not a
traceback or a silent zero."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..observability.records import status_filter


def port(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks a free one)")
    return int(text)


def at_least(low: int) -> Callable[[str], int]:
    """A whole number no smaller than ``low``."""

    def whole(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least {low}")
        return value

    return whole


def call_status(text: str) -> str:
    try:
        return status_filter(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
