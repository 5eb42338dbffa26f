"""Headmap entry point: ``python main.py`` opens the window; export flags run headless.

See ``python main.py --help``.
"""

import sys

from analysis.cli import main

if __name__ == "__main__":
    sys.exit(main())
