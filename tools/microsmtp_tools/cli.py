"""Entry point of the ``microsmtp`` command.

Each subcommand lives in its own module with an ``add_parser(subcommands)`` function
that registers its options and sets ``handler``, a function that takes the parsed
arguments and returns the exit status.
"""

import argparse
import sys

from . import bench, certs, deploy, firmware, flash, send, sim, testserver

EX_USAGE = 2


def build_parser():
    parser = argparse.ArgumentParser(
        prog="microsmtp",
        description="Host tools for microsmtp, the SMTP client for MicroPython boards and CPython.",
        allow_abbrev=False,
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    subcommands.required = True
    send.add_parser(subcommands)
    sim.add_parser(subcommands)
    certs.add_parser(subcommands)
    deploy.add_parser(subcommands)
    flash.add_parser(subcommands)
    firmware.add_parser(subcommands)
    bench.add_parser(subcommands)
    testserver.add_parser(subcommands)
    return parser


def main(argv=None):
    """Run the command with argv (default: sys.argv[1:]); return the exit status."""
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser()
    problem = send.check_secret_arguments(argv)
    if problem is not None:
        parser.print_usage(sys.stderr)
        print("microsmtp: error: %s" % problem, file=sys.stderr)
        return EX_USAGE
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("microsmtp: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
