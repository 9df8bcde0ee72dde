"""``python -m rnnrs train|evaluate|generate ...`` — see :mod:`rnnrs.cli` and ``docs/cli.md``."""

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
