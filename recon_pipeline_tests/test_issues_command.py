"""`recon-pipeline issues`: a run's issue table as a table, CSV and JSON; which run; refusals."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest

from recon_pipeline.cli import main
from recon_pipeline.defs.partitions import local_day
from recon_pipeline_tests.harness import TIMEZONE, Pipeline, running_pipeline
from recon_pipeline_tests.scenario import EXPECTED_ISSUES, issue_subject, scenario_community


@pytest.fixture
def pipeline(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as p:
        yield p


def _issues(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["issues", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_of_the_latest_run_carries_every_issue_with_its_outcome(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline.run()
    latest = pipeline.run(auto_fix=True)

    code, out, _ = _issues(capsys, "--format", "json")

    assert code == 0
    printed = json.loads(out)
    assert printed["runId"] == latest.run_id
    assert {(i["type"], issue_subject(i)) for i in printed["issues"]} == EXPECTED_ISSUES
    assert {i["outcome"] for i in printed["issues"]} >= {"fixed"}
    for issue in printed["issues"]:
        assert len(issue["fingerprint"]) == 16 and issue["firstSeen"]
        assert issue["status"] == "persisting"  # each was seen by the dry run before
    assert len({i["fingerprint"] for i in printed["issues"]}) == len(EXPECTED_ISSUES)


def test_csv_and_table_of_a_chosen_run(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    dry = pipeline.run()
    latest = pipeline.run(auto_fix=True)

    code, out, _ = _issues(capsys, "--run", dry.run_id, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == len(EXPECTED_ISSUES)
    assert {r["outcome"] for r in rows} <= {"skipped", "not_attempted"}
    assert all(r["status"] == "new" for r in rows)
    assert all(len(r["fingerprint"]) == 16 and r["firstSeen"] for r in rows)
    dry_issues = pipeline.record(dry.run_id)["issues"]
    assert {(r["fingerprint"], r["firstSeen"]) for r in rows} == {
        (i["fingerprint"], i["firstSeen"]) for i in dry_issues}  # fmt: skip

    # The day's latest run, of the two run today.
    code, out, _ = _issues(capsys, "--day", local_day(TIMEZONE))
    assert code == 0
    assert out.splitlines()[0] == f"Run {latest.run_id}: {len(EXPECTED_ISSUES)} issue(s)"
    assert "ORPHANED_ACCESS" in out


def test_unknown_runs_and_days_are_refused_naming_them(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _issues(capsys)
    assert code == 2 and "no reconciliation run is recorded in this database" in err

    pipeline.run()
    code, _, err = _issues(capsys, "--run", "nope")
    assert code == 2 and "no ReconciliationRun has id 'nope'" in err
    code, _, err = _issues(capsys, "--day", "2026-01-02")
    assert code == 2 and "no reconciliation run of 2026-01-02 is recorded" in err
