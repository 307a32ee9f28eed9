"""`sparkle-fast selftest [--json] [--quick] [--out FILE]`: check this node before a long run (driver/selftest.py).

Exit status 1 when any check failed (a parity mismatch, a kernel that raised, a sanitizer error), else 0; checks that
cannot run here are reported as skipped, with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys

NAME = "selftest"
HELP = "check the build, every op's parity on every backend present, decode, a quick bench and the sanitizers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON (default: one line per check)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes only and fewer timed calls (seconds, not minutes)")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument("--op", action="append", metavar="NAME",
                        help="only this op's parity and bench checks (repeatable), e.g. --op vote_and_pack")


def run(args: argparse.Namespace) -> int:
    from sparkle_fast._io import atomic_write
    from sparkle_fast.driver.selftest import run_selftest

    log = None if args.json else (lambda line: print(line, flush=True))
    report = run_selftest(quick=args.quick, log=log, only_ops=set(args.op or ()))
    text = json.dumps(report, indent=2)
    if args.out:
        with atomic_write(args.out) as handle:
            handle.write(text.encode())
    if args.json:
        print(text)
    else:
        s = report["summary"]
        print(f"{report['device']}: {s['pass']} passed, {s['fail']} failed, {s['skip']} skipped "
              f"({report['seconds']:.1f} s)", file=sys.stderr)
    return 0 if report["ok"] else 1
