"""``alignet``: the desktop application."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    from alignet_engine import __version__

    parser = argparse.ArgumentParser(prog="alignet", description="AligNet Studio")
    parser.add_argument("project", nargs="?", help="a .alignet project to open")
    parser.add_argument("--version", action="version", version=f"AligNet Studio {__version__}")
    parser.add_argument(
        "-v",
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="how much the log shows (default: %(default)s)",
    )
    parser.add_argument(
        "--quit-after",
        type=float,
        default=None,
        help="close the window after this many seconds (smoke tests)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level), format="%(levelname)s %(name)s: %(message)s"
    )

    from alignet_app.application import run

    return run(args.project, quit_after=args.quit_after)


if __name__ == "__main__":
    sys.exit(main())
