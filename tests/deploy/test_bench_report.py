"""The benchmark report: every figure with its ratio, the machine, and how cost grows with work."""

from bench.harness import Figure
from bench.report import growth_rows, read_report, workload_size, write_markdown


def test_sized_figure_names_give_their_workload():
    assert workload_size("batch.orchestrate.100k") == ("batch.orchestrate", 100_000)
    assert workload_size("batch.orchestrate.1m") == ("batch.orchestrate", 1_000_000)
    assert workload_size("tracking.ingest.unary.p99") is None


def test_growth_exponent_is_one_for_linear_cost_and_below_for_fixed_costs():
    linear = [Figure("w.10k", 1.0, "s", 2.0, "x"), Figure("w.100k", 10.0, "s", 2.0, "x")]
    assert growth_rows(linear)[1].endswith("| 1.00 |")
    flat = [Figure("w.10k", 1.0, "s", 2.0, "x"), Figure("w.100k", 1.0, "s", 2.0, "x")]
    assert growth_rows(flat)[1].endswith("| 0.00 |")


def test_report_notes_the_machine_lists_every_figure_and_failures(tmp_path):
    figures = [
        Figure("batch.orchestrate.10k", 0.5, "s", 3.0, "one raw UPDATE"),
        Figure("batch.orchestrate.100k", 4.0, "s", 2.5, "one raw UPDATE"),
        Figure("foundation.interceptor", 9000.0, "calls/s", 0.8, "bare grpc.aio server"),
    ]
    path = tmp_path / "RESULTS.md"
    write_markdown(str(path), figures, "2 cores (test cpu)", runs=5, failed={"rules.evaluate": "RuntimeError: boom"})
    text = path.read_text()
    assert "2 cores (test cpu)" in text and "median of 5 runs" in text
    assert all(f"`{f.name}`" in text for f in figures)
    assert "## How cost grows with work" in text and "| `batch.orchestrate` | 100,000 |" in text
    assert "`rules.evaluate`: RuntimeError: boom" in text


def test_a_partial_run_merged_into_a_report_keeps_the_figures_it_did_not_measure(tmp_path):
    path = tmp_path / "RESULTS.md"
    earlier = [
        Figure("a.10k", 1.0, "s", 2.0, "raw"),
        Figure("a.100k", 10.0, "s", 2.0, "raw"),
        Figure("b", 5.0, "ops/s", None, ""),
    ]
    write_markdown(str(path), earlier, "2 cores (Intel Xeon), 24 GiB", runs=3)
    write_markdown(str(path), [Figure("b", 7.0, "ops/s", 0.5, "bare")], "2 cores (AMD EPYC), 24 GiB", runs=3, merge=True)
    figures, measured = read_report(str(path))
    assert {f.name: (f.value, f.ratio) for f in figures} == {"a.10k": (1.0, 2.0), "a.100k": (10.0, 2.0), "b": (7.0, 0.5)}
    assert "## How cost grows with work" in path.read_text()


def test_each_merged_row_keeps_the_machine_it_was_measured_on(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_markdown(str(path), [Figure("a", 1.0, "s", 2.0, "raw")], "2 cores (Intel Xeon), 24 GiB", runs=3)
    write_markdown(str(path), [Figure("b", 7.0, "ops/s", 0.5, "bare")], "2 cores (AMD EPYC), 24 GiB", runs=3, merge=True)
    _, measured = read_report(str(path))
    assert measured["a"].endswith("2 cores (Intel Xeon)") and measured["b"].endswith("2 cores (AMD EPYC)")
    assert "Latest update" in path.read_text() and "on 2 cores (AMD EPYC), 24 GiB." in path.read_text()
