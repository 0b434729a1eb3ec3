"""scripts/hostile_pass.py: its classifier and its steps, on commands that do not need the library
(the pass itself drives the stage commands and takes minutes: it is run by hand, README "Reliability")."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def hp(load_script):
    return load_script("hostile_pass")


def _result(rc, stderr=""):
    return {"rc": rc, "stderr": stderr, "seconds": 0.1}


@pytest.mark.parametrize(
    "expect, results, problem, outcome",
    [
        ("refuse", [_result(2, "error: k=0 must be >= 1\n")], None, "pass"),
        ("refuse", [_result(0)], None, "silent-wrong"),
        ("refuse", [_result(1, "usage: ...\n")], None, "unclear"),
        ("refuse", [_result(2, "error: a\nerror: b\n")], None, "unclear"),
        ("refuse", [_result(2, "error: something else\n")], None, "unclear"),  # does not name k
        ("refuse", [_result(1, "Traceback (most recent call last):\n  ...\nValueError: k\n")], None, "traceback"),
        ("refuse", [_result(None)], None, "hang"),
        ("ok", [_result(0)], None, "pass"),
        ("ok", [_result(0)], "3 rows, expected 4", "silent-wrong"),
        ("ok", [_result(2, "error: k=0\n")], None, "wrong-refusal"),
        ("ok", [_result(2, "error: x\n"), _result(0)], None, "broken-case"),
        ("ok", [_result(0, "Traceback (most recent call last):\n"), _result(0)], None, "traceback"),
        ("either", [_result(2, "error: k changed\n")], None, "pass"),
        ("either", [_result(0)], None, "pass"),
        ("either", [_result(0)], "stale", "silent-wrong"),
        ("either", [_result(2, "error: no reason given\n")], None, "unclear"),
    ],
)
def test_classify(hp, expect, results, problem, outcome):
    case = hp.Case("c", [], expect, names=("k",))
    assert hp.classify(case, results, problem)[0] == outcome


def test_a_case_runs_its_steps_in_its_own_folder_and_checks_the_outputs(hp, tmp_path):
    write = ["-c", "import numpy as np; np.save('{out}/idx.npy', np.arange(5))"]
    good = hp.Case("a/ok=1", [write], "ok", check=hp.rows_of("idx.npy", 5))
    wrong = hp.Case("a/ok=2", [write], "ok", check=hp.rows_of("idx.npy", 4))
    stale = hp.Case("a/stale", [write], "ok", check=hp.absent("idx.npy"))
    refused = hp.Case("a/refuse", [["-c", "import sys; sys.exit('error: seed=-1 must be >= 0')"]], "refuse", ("seed",))
    hang = hp.Case("a/hang", [["-c", "import time; time.sleep(30)"]], "refuse")
    outcomes = [
        hp.run_case(c, tmp_path / "data", tmp_path, timeout=3)["outcome"] for c in (good, wrong, stale, refused, hang)
    ]
    assert outcomes == ["pass", "silent-wrong", "silent-wrong", "pass", "hang"]
    assert (tmp_path / "cases" / "a__ok_1" / "idx.npy").is_file()  # no '=' in the folder: it goes into overrides


def test_replace_rows_keeps_size_and_mtime(hp, tmp_path):
    np.save(tmp_path / "in.npy", np.ones((50, 3), np.float32))
    before = (tmp_path / "in.npy").stat()
    hp.replace_rows_keep_stat(rows=[7])(tmp_path, tmp_path)
    after = (tmp_path / "in.npy").stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    x = np.load(tmp_path / "in.npy")
    assert np.flatnonzero((x != 1).any(axis=1)).tolist() == [7]


def test_every_case_name_is_unique_and_every_refusal_names_something(hp):
    cases = hp.cases()
    assert len(cases) >= 180
    assert len({hp.slug(c.name) for c in cases}) == len(cases)
    assert all(c.names for c in cases if c.expect in ("refuse", "either"))
