"""The markdown table of a benchmark run, with the machine it ran on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from bench.harness import Figure


def write_markdown(path: str, figures: list[Figure], machine: str) -> None:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Loom benchmark results",
        "",
        f"Measured {when} on {machine}. Each value is the median of several runs;",
        "the ratio compares it with a baseline measured in the same run.",
        "",
        "| figure | value | unit | ratio | vs |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    for f in figures:
        ratio = "" if f.ratio is None else f"{f.ratio:.3g}"
        lines.append(f"| `{f.name}` | {f.value:.4g} | {f.unit} | {ratio} | {f.vs} |")
    Path(path).write_text("\n".join(lines) + "\n")
