"""The ``cityid`` command line: a thin click group over the packages.

Command groups of one area live in ``cli_<area>.py`` beside this file and are added here.
"""

from __future__ import annotations

import importlib

import click


@click.group()
def main() -> None:
    """cityid — the city's identity provider."""


for _name in ("cli_pki",):
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        if _exc.name != _name:
            raise
        continue
    for _cmd in _mod.COMMANDS:
        main.add_command(_cmd)


if __name__ == "__main__":
    main()
