"""``python -m alignet_engine``: the same command line as ``alignet-cli``."""

import sys

from alignet_engine.cli import main

if __name__ == "__main__":
    sys.exit(main())
