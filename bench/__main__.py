"""python -m bench [NAME...] [--list] [--json] [--runs N] [--quick] [--markdown FILE [--merge]]"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from bench.harness import BenchContext, Figure, machine, selected
from bench.report import write_markdown
from libs import logs
from libs.scratch_db import create_database, drop_database, server_url


async def run_all(names: list[str], runs: int, quick: bool, database_url: str) -> tuple[list[Figure], dict[str, str]]:
    """Every selected benchmark in turn; one that fails is reported and the others still run."""
    figures: list[Figure] = []
    failed: dict[str, str] = {}
    context = BenchContext(database_url=database_url, runs=runs, quick=quick)
    for bench in selected(names):
        print(f"# {bench.name} ...", file=sys.stderr, flush=True)
        try:
            figures.extend(await bench.run(context))
        except Exception as error:  # noqa: BLE001 - reported below and in the markdown
            failed[bench.name] = f"{type(error).__name__}: {error}"[:300]
            print(f"# {bench.name} FAILED: {failed[bench.name]}", file=sys.stderr, flush=True)
    return figures, failed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run Loom's benchmarks and print figures.")
    parser.add_argument("names", nargs="*", help="benchmark or figure names (prefixes); all when none")
    parser.add_argument("--list", action="store_true", help="list benchmarks and their figures")
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of lines")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure; the median is reported")
    parser.add_argument("--quick", action="store_true", help="small workloads, for a smoke run")
    parser.add_argument("--markdown", metavar="FILE", help="also write a markdown table with the machine noted")
    parser.add_argument("--merge", action="store_true", help="with --markdown: keep FILE's figures this run did not measure")
    args = parser.parse_args()
    if args.list:
        for bench in selected(args.names):
            print(bench.name)
            for figure in bench.figures:
                print(f"  {figure}")
        return
    logs.configure(service="bench", level="warning", redaction_key="bench")
    admin_url = server_url()
    database_url = create_database(admin_url, prefix="loom_bench")
    try:
        figures, failed = asyncio.run(run_all(args.names, args.runs, args.quick, database_url))
    finally:
        drop_database(admin_url, database_url)
    if args.json:
        print(json.dumps([f.as_dict() for f in figures], indent=2))
    else:
        print("\n".join(f.line() for f in figures))
    if args.markdown:
        write_markdown(args.markdown, figures, machine(), runs=args.runs, quick=args.quick, failed=failed, merge=args.merge)
    if failed:
        raise SystemExit(f"{len(failed)} benchmark(s) failed: {', '.join(sorted(failed))}")


main()
