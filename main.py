"""Headmap entry point: ``python main.py`` opens the window; export flags run headless.

See ``python main.py --help``. The installed ``headmap`` command is the same
(:func:`headmap.main`): it parses the arguments and picks the headless CLI (``analysis.cli``) or
the window (``gui.app``).
"""

import sys

from headmap import main as _main


def main(argv=None) -> int:
    return _main(argv, prog="python main.py")


if __name__ == "__main__":
    sys.exit(main())
