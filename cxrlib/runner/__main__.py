"""``python -m cxrlib.runner``: the same command line as ``run_all.py`` (cluster tasks call this)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
