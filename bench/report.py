"""The markdown report of a benchmark run: every figure with its ratio, the machine,
and how cost grows with the amount of work for figures measured at several sizes."""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

from bench.harness import Figure

SIZE_LABEL = re.compile(r"^(?P<family>.+)\.(?P<size>\d+(?:\.\d+)?)(?P<scale>[km]?)$")
SCALES = {"": 1, "k": 1_000, "m": 1_000_000}
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def workload_size(name: str) -> tuple[str, int] | None:
    """`batch.orchestrate.100k` -> ("batch.orchestrate", 100000); None for a name without a size."""
    match = SIZE_LABEL.match(name)
    if not match:
        return None
    return match["family"], int(float(match["size"]) * SCALES[match["scale"]])


def growth_rows(figures: list[Figure]) -> list[str]:
    """One row per sized time figure: work, time, time per item, and the exponent of growth
    from the previous size (1.0 = linear, below 1 = better than linear)."""
    families: dict[str, list[tuple[int, Figure]]] = {}
    for figure in figures:
        sized = workload_size(figure.name)
        if sized and figure.unit in TIME_UNITS:
            families.setdefault(sized[0], []).append((sized[1], figure))
    rows = []
    for family, members in sorted(families.items()):
        if len(members) < 2:
            continue
        previous: tuple[int, float] | None = None
        for size, figure in sorted(members, key=lambda m: m[0]):
            seconds = figure.value * TIME_UNITS[figure.unit]
            per_item_us = seconds / size * 1e6
            exponent = "" if previous is None else f"{math.log(seconds / previous[1]) / math.log(size / previous[0]):.2f}"
            rows.append(f"| `{family}` | {size:,} | {seconds:.4g} s | {per_item_us:.3g} us | {exponent} |")
            previous = (size, seconds)
    return rows


TABLE_ROW = re.compile(
    r"^\| `(?P<name>[^`]+)` \| (?P<value>[^|]+) \| (?P<unit>[^|]+) \| (?P<ratio>[^|]*) \| (?P<vs>[^|]*) \|"
    r"(?: (?P<measured>[^|]*) \|)?$"
)
MEASURED = re.compile(r"^Measured (?P<when>.+?) on (?P<machine>.+)\.$")


def cpu_of(machine: str) -> str:
    """`2 cores (AMD EPYC), 24 GiB, ...` -> `2 cores (AMD EPYC)`: what a row needs to be compared."""
    return machine.split(",", 1)[0]


def read_report(path: str) -> tuple[list[Figure], dict[str, str]]:
    """The figures of an earlier report and when and where each was measured (to keep the
    figures a partial run did not measure, with their own provenance)."""
    if not Path(path).exists():
        return [], {}
    header, figures, measured = None, [], {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):  # the figures table comes first; later sections derive from it
            break
        if (match := MEASURED.match(line)) and header is None:
            header = f"{match['when']}, {cpu_of(match['machine'])}"
        elif (row := TABLE_ROW.match(line)) and row["name"] != "figure":
            ratio = row["ratio"].strip()
            figure = Figure(row["name"], float(row["value"]), row["unit"].strip(), float(ratio) if ratio else None,
                            row["vs"].strip())
            figures.append(figure)
            measured[figure.name] = (row["measured"] or "").strip() or header or ""
    return figures, measured


def write_markdown(
    path: str,
    figures: list[Figure],
    machine: str,
    *,
    runs: int | None = None,
    quick: bool = False,
    failed: dict[str, str] | None = None,
    merge: bool = False,
) -> None:
    """Writes the report; with `merge`, figures of the existing report that this run did not
    measure stay, each row saying when and on which machine it was measured."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    heading = f"Measured {when} on {machine}."
    provenance = {f.name: f"{when}, {cpu_of(machine)}" for f in figures}
    if merge:
        earlier, earlier_provenance = read_report(path)
        fresh = {f.name: f for f in figures}
        if any(f.name not in fresh for f in earlier):
            heading = (f"Figures from more than one run: each row says when and on which machine. "
                       f"Latest update {when} on {machine}.")
            provenance = {**earlier_provenance, **provenance}
            runs = None  # the earlier rows may have been medians of another number of runs
            known = {f.name for f in earlier}
            figures = [fresh.get(f.name, f) for f in earlier] + [f for f in figures if f.name not in known]
    how = "a single run" if runs == 1 else f"the median of {runs} runs" if runs else "the median of several runs"
    lines = [
        "# Loom benchmark results",
        "",
        heading,
        "",
        f"Each value is {how}; the ratio compares it with a baseline measured in the same run",
        "on the same machine (`vs`), so a noisy, shared machine moves both sides alike.",
        "Regenerate with `.venv/bin/python -m bench --markdown bench/RESULTS.md`.",
    ]
    if quick:
        lines += ["", "**Quick run**: small workloads (`--quick`); sized figures keep their full-size names."]
    lines += ["", "| figure | value | unit | ratio | vs | measured |", "| --- | ---: | --- | ---: | --- | --- |"]
    for f in figures:
        ratio = "" if f.ratio is None else f"{f.ratio:.3g}"
        lines.append(f"| `{f.name}` | {f.value:.4g} | {f.unit} | {ratio} | {f.vs} | {provenance[f.name]} |")
    growth = [] if quick else growth_rows(figures)
    if growth:
        lines += [
            "",
            "## How cost grows with work",
            "",
            "Figures measured at several sizes (sizes are set per benchmark, e.g. `BENCH_ORCHESTRATE_1M`).",
            "The growth exponent is log(time ratio) / log(size ratio) from the previous size:",
            "1.0 is linear, below 1 means fixed costs still dominate, above 1 means worse than linear.",
            "",
            "| work | size | time | time per item | growth exponent |",
            "| --- | ---: | ---: | ---: | ---: |",
            *growth,
        ]
    if failed:
        lines += ["", "## Benchmarks that did not finish", ""]
        lines += [f"- `{name}`: {reason}" for name, reason in sorted(failed.items())]
    Path(path).write_text("\n".join(lines) + "\n")
