"""Issues keep their identity from run to run: fingerprint, first sighting, new/persisting."""

from __future__ import annotations

import pytest

from recon_pipeline_tests.harness import running_pipeline
from recon_pipeline_tests.scenario import scenario_community


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
