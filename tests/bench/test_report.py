"""Report: mean ± std over seeds, recovered share of the noise damage, Markdown layout."""

import math

import pytest

from noisy_pml.bench.report import markdown_tables, recovered_share, selection_table, summarize


def _rec(method, noise, seed, r1):
    m = {"R@1": r1, "R@2": r1, "R@4": r1, "R@8": r1, "MAP@R": r1 / 2}
    return {
        "method": method,
        "noise": noise,
        "seed": seed,
        "mode": "test",
        "metrics": m,
        "train_seconds": 2.0,
    }


def test_mean_and_sample_std_over_seeds_in_percent():
    s = summarize([_rec("pa", "clean", 0, 0.50), _rec("pa", "clean", 1, 0.60)])
    mean, std = s["pa"]["clean"]["R@1"]
    assert mean == pytest.approx(55.0)
    assert std == pytest.approx(math.sqrt(50.0))  # sample std (n - 1) of 50 and 60
    assert s["pa"]["clean"]["seeds"] == 2


def test_single_seed_has_zero_std_and_val_runs_are_separate():
    recs = [_rec("pa", "clean", 0, 0.5), {**_rec("pa", "clean", 0, 0.9), "mode": "val"}]
    assert summarize(recs)["pa"]["clean"]["R@1"] == (50.0, 0.0)
    assert summarize(recs, "val")["pa"]["clean"]["R@1"] == (90.0, 0.0)


def test_recovered_share_formula():
    recs = [
        _rec("proxy_anchor", "clean", 0, 0.60),
        _rec("proxy_anchor", "symmetric:0.5", 0, 0.50),
        _rec("spa", "symmetric:0.5", 0, 0.55),
        _rec("bad", "symmetric:0.5", 0, 0.45),
    ]
    share = recovered_share(summarize(recs))
    assert share["spa"]["symmetric:0.5"] == pytest.approx(0.5)
    assert share["bad"]["symmetric:0.5"] == pytest.approx(-0.5)
    assert share["proxy_anchor"]["symmetric:0.5"] == pytest.approx(0.0)


def test_markdown_orders_noise_columns_and_shows_mean_pm_std():
    recs = [
        _rec("pa", n, s, 0.5 + 0.01 * s)
        for n in ("symmetric:0.5", "clean", "symmetric:0.2")
        for s in (0, 1, 2)
    ]
    md = markdown_tables(summarize(recs))
    assert "| method | clean | symmetric:0.2 | symmetric:0.5 |" in md
    assert "| pa | 51.0 ± 1.0 | 51.0 ± 1.0 | 51.0 ± 1.0 |" in md


def test_a_report_without_finished_test_runs_says_so(tmp_path):
    from noisy_pml.bench.report import write_report

    val = {**_rec("pa", "clean", 0, 0.5), "mode": "val", "cfg": {"lr": 1e-3}}
    md = write_report([val], tmp_path, "grid", plots=False)
    assert "No test run has finished yet." in md
    assert "| method |  |" not in md  # no empty table


def _val(method, lr, r1):
    return {**_rec(method, "symmetric:0.3", 0, r1), "mode": "val", "cfg": {"lr": lr}}


def test_selection_table_marks_the_chosen_candidate_only():
    table = selection_table(
        [_val("ms", 1e-4, 0.4), _val("ms", 3e-4, 0.5)], {"ms": {"values": {"lr": 3e-4}}}
    )
    rows = [line for line in table.splitlines() if line.startswith("| ms ")]
    assert [row.endswith("| **yes** |") for row in rows] == [False, True]


def test_selection_table_chooses_nothing_while_the_selection_is_unfinished():
    unfinished = {"ms": {"values": None, "finished": "2 of 3"}}
    table = selection_table([_val("ms", 1e-4, 0.4), _val("ms", 3e-4, 0.5)], unfinished)
    assert "**yes**" not in table
    assert table.count("pending (2 of 3 finished)") == 2


def test_selection_table_names_the_searched_values_of_a_lone_finished_candidate():
    # one finished run has nothing to differ from: the column comes from the search's keys
    unfinished = {"ms": {"values": None, "finished": "1 of 3", "searched": ["lr"]}}
    table = selection_table([_val("ms", 1e-4, 0.4)], unfinished)
    assert '| ms | {"lr": 0.0001} |' in table


def test_selection_table_says_when_the_choice_is_at_the_edge_of_the_grid():
    chosen = {"ms": {"values": {"lr": 1e-4}, "edges": {"lr": "lowest"}}}
    table = selection_table([_val("ms", 1e-4, 0.5), _val("ms", 3e-4, 0.4)], chosen)
    assert "| **yes** (lowest lr tried) |" in table
