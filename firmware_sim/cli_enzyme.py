"""CLI verbs (placeholder: filled in by the owning package)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add this module's verbs to `subparsers`."""
