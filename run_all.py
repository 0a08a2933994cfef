#!/usr/bin/env python
"""Run the CXR study as a resumable job graph of papermill notebooks: ``python run_all.py --help``."""

import sys

from cxrlib.runner import main

if __name__ == "__main__":
    sys.exit(main())
