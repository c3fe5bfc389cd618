"""benchmarks/reporting.py: formatters, tables, bootstrap statistics, results JSON and the report header.

The benchmark scripts run as files and `import reporting` from their own folder; the test does the same.
"""

from __future__ import annotations

import doctest
import json
import math
import sys
from pathlib import Path

import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import reporting  # noqa: E402


def test_docstring_examples():
    result = doctest.testmod(reporting, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted >= 20


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (0.5, {}, "50%"),
        (0.123, {"digits": 1}, "12.3%"),
        (1.68, {"signed": True}, "+168%"),
        (-0.004, {"digits": 1, "signed": True}, "-0.4%"),
        (0.0, {"signed": True}, "+0%"),
        (math.nan, {}, "n/a"),
        (None, {}, "n/a"),
    ],
)
def test_pct(value, kwargs, expected):
    assert reporting.pct(value, **kwargs) == expected


def test_ratio_and_safe_div():
    assert reporting.ratio(0.905) == "0.91x"  # 0.905 is 0.90499... in binary
    assert reporting.ratio(11.7441) == "11.74x"
    assert reporting.ratio(2, digits=0) == "2x"
    assert reporting.ratio(None) == "n/a"
    assert reporting.safe_div(1, 4) == 0.25
    assert math.isnan(reporting.safe_div(5, 0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, "0"), (999, "999"), (1000, "1.0k"), (20_480, "20.5k"), (999_999, "1000.0k"), (1_000_000, "1.0M")],
)
def test_kfmt(value, expected):
    assert reporting.kfmt(value) == expected


def test_fmt_ms_and_num():
    assert reporting.fmt_ms(0.0101) == "10.1"  # one decimal from 10 ms on
    assert reporting.fmt_ms(0.0099) == "9.90"  # two below
    assert reporting.num(3.14159, ".2f") == "3.14"
    assert reporting.num(float("nan")) == "n/a"


def test_spread_and_med_range():
    assert reporting.spread([0.991, 1.078, 0.947]) == "0.947 / 1.078"
    assert reporting.spread([2, math.nan, 5], ".1f", "-") == "2.0-5.0"
    assert reporting.med_range([4, 1, 10, 2]) == "3 (1 - 10)"  # median of an even count: mean of the middle two
    assert reporting.med_range([1.0, None, math.nan], ".1f") == "1.0; 2 missing"


def test_fmt_ci():
    assert reporting.fmt_ci(0.5, 0.25, 0.75, ".2f") == "0.50 [0.25, 0.75]"
    assert reporting.fmt_ci(0.5, math.nan, math.nan, ".2f") == "0.50"
    assert reporting.fmt_ci(math.nan, 0.1, 0.2) == "n/a"
    assert reporting.fmt_ci(0.1, 0.05, 0.15, reporting.pct) == "10% [5%, 15%]"


def test_md_table():
    table = reporting.md_table(["a", "b", "c"], [[1, "x", 2.5], ("y", "", "z")], align="lrc")
    assert table.split("\n") == ["| a | b | c |", "| --- | ---: | :---: |", "| 1 | x | 2.5 |", "| y |  | z |"]
    assert reporting.md_table(["h"], []).split("\n") == ["| h |", "| --- |"]
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        reporting.md_table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="align"):
        reporting.md_table(["a", "b"], [], align="l")


def test_quantile_is_linear_between_order_statistics():
    values = [0.0, 10.0, 20.0, 30.0, 40.0]
    assert reporting.quantile(values, 0.0) == 0.0
    assert reporting.quantile(values, 1.0) == 40.0
    assert reporting.quantile(values, 0.5) == 20.0
    assert reporting.quantile(values, 0.1) == pytest.approx(4.0)  # position 0.4 between 0 and 10
    assert reporting.quantile(values, 0.975) == pytest.approx(39.0)


def test_median_ci_constant_sample_has_zero_width():
    ci = reporting.median_ci([3.0] * 7)
    assert ci == reporting.Interval(3.0, 3.0, 3.0, 7, 0)


def test_median_ci_on_a_known_sample():
    sample = [12.0, 3.0, 7.0, 9.0, 1.0, 15.0, 4.0, 8.0, 11.0]  # sorted: 1 3 4 7 8 9 11 12 15
    ci = reporting.median_ci(sample, n_boot=4000, seed=1)
    assert ci.median == 8.0
    assert ci.n == 9 and ci.missing == 0
    assert ci.lo < ci.median < ci.hi  # a spread-out sample gives a real interval around its median
    assert min(sample) <= ci.lo and ci.hi <= max(sample)  # bootstrap medians are medians of sample values
    # The median of 9 resampled values is their 5th order statistic. It is 3 or less when at least 5 of the 9 draws
    # are 1 or 3: P(Binomial(9, 2/9) >= 5) = 3.0%; it is 1 with P(Binomial(9, 1/9) >= 5) = 0.1%. So the 2.5%
    # quantile of the bootstrap medians is 3 (4 if the 4000 resamples happen to have fewer than 2.5% at or below 3),
    # and by symmetry the 97.5% quantile is 12 (or 11).
    assert 3.0 <= ci.lo <= 4.0
    assert 11.0 <= ci.hi <= 12.0
    assert reporting.median_ci(sample, n_boot=4000, seed=1) == ci  # seeded: reproducible
    narrow = reporting.median_ci(sample, n_boot=4000, seed=1, level=0.5)
    assert ci.lo <= narrow.lo <= narrow.hi <= ci.hi


def test_median_ci_drops_and_counts_missing_values():
    ci = reporting.median_ci([1.0, None, 2.0, float("nan"), 3.0])
    assert (ci.median, ci.n, ci.missing) == (2.0, 3, 2)
    assert ci.lo <= 2.0 <= ci.hi
    one = reporting.median_ci([None, 5.0])
    assert (one.median, one.n, one.missing) == (5.0, 1, 1)
    assert math.isnan(one.lo) and math.isnan(one.hi)  # no interval from a single value
    none = reporting.median_ci([None, math.nan])
    assert math.isnan(none.median) and (none.n, none.missing) == (0, 2)
    with pytest.raises(ValueError):
        reporting.median_ci([1.0, 2.0], level=1.5)


def test_paired_diffs():
    base = [0.40, 0.50, 0.55, None, 0.45]
    new = [0.50, 0.55, 0.60, 0.70, math.nan]
    d = reporting.paired_diffs(base, new)
    assert d.diffs[:3] == pytest.approx([0.10, 0.05, 0.05])
    assert math.isnan(d.diffs[3]) and math.isnan(d.diffs[4])  # a side missing: no difference
    assert (d.n, d.missing) == (3, 2)
    assert d.median == pytest.approx(0.05)
    assert 0.05 - 1e-12 <= d.lo <= d.median <= d.hi <= 0.10 + 1e-12
    flipped = reporting.paired_diffs(new, base)
    assert flipped.median == pytest.approx(-d.median)  # b - a, not a - b
    with pytest.raises(ValueError, match="same length"):
        reporting.paired_diffs([1.0], [1.0, 2.0])


def test_results_round_trip(tmp_path):
    payload = {"meta": {"date": "d"}, "command": "python x.py", "results": [{"a": 1, "b": math.nan, "c": None}]}
    path = reporting.write_results(tmp_path / "sub" / "r.json", payload)
    back = reporting.read_results(path)
    assert back["command"] == "python x.py" and back["results"][0]["a"] == 1 and back["results"][0]["c"] is None
    assert math.isnan(back["results"][0]["b"])
    (tmp_path / "plain.json").write_text(json.dumps({"results": []}))
    with pytest.raises(ValueError, match="no 'meta'"):
        reporting.read_results(tmp_path / "plain.json")


def test_write_results_adds_machine_meta(tmp_path):
    back = reporting.read_results(reporting.write_results(tmp_path / "r.json", {"x": 1}))
    assert back["x"] == 1
    assert back["meta"]["cpus"] and back["meta"]["python"] and "trl" in back["meta"]["versions"]


def test_write_report_renders_from_the_json(tmp_path):
    def render(payload):
        assert isinstance(payload["rows"][0], list)  # from the file read back: tuples came back as lists
        return reporting.md_table(["k", "v"], payload["rows"]) + "\n"

    text = reporting.write_report(tmp_path / "R.md", {"meta": {}, "rows": [("a", 1)]}, render)
    assert (tmp_path / "R.md").read_text() == text == "| k | v |\n| --- | --- |\n| a | 1 |\n"
    assert json.loads((tmp_path / "R.json").read_text())["rows"] == [["a", 1]]
    out = reporting.render_from_json(tmp_path / "R.json", render, tmp_path / "again.md")
    assert out.read_text() == text


def test_machine_meta_and_header():
    meta = reporting.machine_meta()
    assert meta["cpus"] >= 1
    assert meta["date"].endswith(" UTC")
    assert set(meta["versions"]) == set(reporting.PACKAGES)
    assert meta["versions"]["dapo_trl"] != "not installed"
    json.dumps(meta)  # JSON-ready
    meta["loadavg_end"] = "0.10 0.20 0.30"
    lines = reporting.header_lines("My benchmark", meta, "python benchmarks/my.py --quick", 125.4)
    text = "\n".join(lines)
    assert lines[0] == "# My benchmark"
    assert f"on {meta['date']} (total wall time 125 s)" in text
    assert "```\npython benchmarks/my.py --quick\n```" in text
    machine = next(line for line in lines if line.startswith("- Machine: "))
    assert f"{meta['cpus']} CPUs" in machine and meta["platform"] in machine and f"Python {meta['python']}" in machine
    assert "0.10 0.20 0.30 at the end" in machine
    versions = next(line for line in lines if line.startswith("- Versions: "))
    for name in ("torch", "trl", "transformers", "dapo_trl"):
        assert f"{name} {meta['versions'][name]}" in versions


def test_header_tolerates_old_meta():
    lines = reporting.header_lines("Old", {"date": "2026-12-01", "cpus": 2, "machine": "x86_64"}, "python s.py")
    assert "Generated on 2026-12-01 by:" in lines
    assert "- Machine: 2 CPUs, x86_64." in lines
    assert "- Versions: not recorded." in lines


def test_command_line_is_relative_to_the_repository_and_hides_paths():
    script = str(BENCHMARKS / "scaling.py")
    assert reporting.command_line(script, []) == "python benchmarks/scaling.py"
    hidden = reporting.command_line(script, ["--previous=/home/me/old", "--steps", "6"], hide=["--previous"])
    assert hidden == "python benchmarks/scaling.py --previous=... --steps 6"
