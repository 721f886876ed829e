"""Issues keep their identity from run to run: fingerprint, first sighting, new/persisting."""

from __future__ import annotations

import pytest

from recon_pipeline.domain.report import format_run_report
from recon_pipeline.sandbox.demo import SANDBOX_ADMIN_CHANNEL_ID
from recon_pipeline_tests.builders import ROLE_IDS
from recon_pipeline_tests.harness import Pipeline, running_pipeline
from recon_pipeline_tests.scenario import EXPECTED_ISSUES, REPORT_ONLY, scenario_community


def test_issues_are_new_in_the_first_run_and_persisting_in_the_next(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as pipeline:
        first = pipeline.record(pipeline.run().run_id)["issues"]
        second = pipeline.record(pipeline.run().run_id)["issues"]

    assert {i["status"] for i in first} == {"new"}
    assert {i["status"] for i in second} == {"persisting"}
    by_print = {i["fingerprint"]: i for i in first}
    assert set(by_print) == {i["fingerprint"] for i in second}
    for issue in second:
        assert issue["firstSeen"] == by_print[issue["fingerprint"]]["firstSeen"]
    assert len({i["firstSeen"] for i in first}) == 1  # one sighting: the run's snapshots


def _posts(pipeline: Pipeline) -> list[str]:
    return [m["content"] for m in pipeline.sandbox.discord.messages(SANDBOX_ADMIN_CHANNEL_ID)]


@pytest.mark.parametrize(
    ("notify", "posts_after_repeat"),
    [pytest.param(None, 1, id="changes-by-default"), pytest.param("always", 2, id="always")],
)
def test_a_repeat_tells_the_admins_only_under_notify_always_and_a_new_issue_leads(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, notify: str | None, posts_after_repeat: int
) -> None:
    with running_pipeline(scenario_community(), sqlite_url, monkeypatch) as pipeline:
        if notify is None:
            monkeypatch.delenv("RECONCILIATION_NOTIFY", raising=False)
        else:
            monkeypatch.setenv("RECONCILIATION_NOTIFY", notify)
        pipeline.run()
        assert len(_posts(pipeline)) == 1  # everything is new the first time

        pipeline.run()
        # The same issues again: nothing to tell, unless told to tell every run with issues.
        assert len(_posts(pipeline)) == posts_after_repeat

        pipeline.sandbox.discord.add_member("2999", roles=[ROLE_IDS["Lord"]])
        pipeline.run()

        posts = _posts(pipeline)
        assert len(posts) == posts_after_repeat + 1
        assert "New since the previous run: 1" in posts[-1]
        lead = posts[-1].index("New since the previous run")
        assert lead < posts[-1].index("ORPHANED_ACCESS: ")  # before the per-type counts


def test_a_run_counts_what_the_previous_run_found_and_is_gone(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_pipeline(scenario_community(), database_url, monkeypatch) as pipeline:
        pipeline.run()
        fixing = pipeline.run(auto_fix=True)
        after = pipeline.run()  # what the fixes mended is gone; the report-only issue is not
        record = pipeline.record(after.run_id)

    gone = len(EXPECTED_ISSUES) - len(REPORT_ONLY)
    # The fixing run's own counts, as series over the days: fixed, per type, per outcome.
    [fixed_run] = fixing.asset_materializations_for_node("reconciliation_run")
    counts = {k: v.value for k, v in fixed_run.metadata.items()}
    assert (counts["issues_found"], counts["issues_fixed"]) == (len(EXPECTED_ISSUES), gone)
    assert (counts["fixed"], counts["not_attempted"], counts["failed"]) == (gone, 1, 0)
    assert counts["type_missing_access"] == 2 and counts["type_not_in_guild"] == 1
    assert counts["type_stale_database_status"] == 2 and counts["persisting"] == 10
    [fixed_drift] = fixing.asset_materializations_for_node("drift_issues")
    assert fixed_drift.metadata["awaiting_confirmation"].value == 0  # removals apply at once here
    assert record["resolved_issues"] == gone
    [run] = after.asset_materializations_for_node("reconciliation_run")
    assert run.metadata["resolved_since_previous_run"].value == gone
    [drift] = after.asset_materializations_for_node("drift_issues")
    assert drift.metadata["resolved_since_previous_run"].value == gone
    assert f"0 new, 1 persisting; {gone} resolved since the previous run" in format_run_report(
        record
    )
