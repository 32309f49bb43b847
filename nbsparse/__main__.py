"""Command line: ``python -m nbsparse [check]``."""

import argparse
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nbsparse", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("check", help="run every op once, compare with the NumPy reference, "
                                      "print compile and call times (the default)")
    args = parser.parse_args(argv)
    if args.command in (None, "check"):
        from . import _selfcheck

        return 0 if _selfcheck.run() else 1
    parser.error(f"unknown command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
