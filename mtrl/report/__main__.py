"""`python -m mtrl.report <run dirs or sweep dirs> [--out DIR] [--group-by KEY ...]`: tables and figures."""

from __future__ import annotations

import argparse
import sys
import warnings

from mtrl.errors import UserError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mtrl.report",
        description="Aggregate training runs: mean success and IQM over seeds with 95%% bootstrap CIs (rliable), "
        "final and best, per-task success, learning curves, heat map, balancer weights.",
    )
    parser.add_argument("paths", nargs="+", help="run directories and/or directories holding runs (a sweep)")
    parser.add_argument(
        "--out", default=None, help="output directory (default: <path>/report for one path, else ./report)"
    )
    parser.add_argument(
        "--group-by",
        nargs="+",
        default=None,
        metavar="KEY",
        help="config keys that define a method, e.g. balancer encoder (default: the keys whose "
        "values differ between runs, seed excluded)",
    )
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("default", UserWarning)
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    try:
        from mtrl.report import write_report

        report = write_report(args.paths, args.out, args.group_by, args.reps, args.seed, not args.no_figures)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f'error: the report needs {err.name} (pip install -e ".[report]")', file=sys.stderr)
        return 2
    print(report.markdown)
    print("wrote " + ", ".join(str(path) for path in report.files.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
