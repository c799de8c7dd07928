"""Helpers shared by the ``mriseg`` command modules."""

from __future__ import annotations

import argparse


def add_command(sub, name: str, help_: str, example: str) -> argparse.ArgumentParser:
    """A sub-command whose ``--help`` shows its purpose and an example."""
    return sub.add_parser(name, help=help_, description=f"{help_}\n\nexample:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
