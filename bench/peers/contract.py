"""The command line every contender app takes (the contract in ``bench/contenders.py``).

The apps run as scripts from their own virtualenvs, so this module sits beside them and is
imported by file location, not as part of a package.
"""

from __future__ import annotations

import argparse

__all__ = ["contract_parser"]


def contract_parser(description: str, *, state_dir_help: str | None = None,
                    partitions_help: str = "unused: part of the common contract",
                    partitions_required: bool = False) -> argparse.ArgumentParser:
    """A parser with the contract's arguments; an app adds its own options to it."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--state-dir", required=True, help=state_dir_help)
    p.add_argument("--window-ms", type=int, default=60_000)
    p.add_argument("--grace-ms", type=int, default=10_000)
    p.add_argument("--commit-interval", type=float, default=1.0)
    p.add_argument("--partitions", type=int, required=partitions_required, help=partitions_help)
    return p
