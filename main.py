"""Headmap entry point: ``python main.py`` opens the window; export flags run headless.

See ``python main.py --help``. This file only parses the arguments and picks the headless CLI
(``analysis.cli``) or the window (``gui.app``).
"""

import sys

from analysis.cli import build_parser, headless_main, is_headless


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if is_headless(args):
        return headless_main(args)
    from gui.app import run_window

    return run_window(args)


if __name__ == "__main__":
    sys.exit(main())
