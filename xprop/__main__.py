"""``python -m xprop info``: what a bug report needs (:func:`xprop.show_versions`).

python -m xprop info          # readable text: paste it into the report
python -m xprop info --json   # the same as JSON

Without a command it prints the full help to stderr and exits with status 2, argparse's
status for a usage error (a command is required), as for an unknown command.
"""

from __future__ import annotations

import argparse
import sys

from xprop.info import show_versions


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a bad command, from argparse)."""
    parser = argparse.ArgumentParser(
        prog="python -m xprop",
        description="xprop's command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser(
        "info",
        help="print the versions, devices and settings a bug report needs",
        description="Print Python, the OS, the CPU and GPUs, xprop and its dependencies, "
        "every backend's library with its devices, the selected backend and the XPROP_* "
        "variables in force.",
    )
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    if not (sys.argv[1:] if argv is None else argv):
        # No command: the whole help (the commands and what they do), not argparse's
        # one-line "the following arguments are required"; still a usage error.
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command == "info":
        show_versions(as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
