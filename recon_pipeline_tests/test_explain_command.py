"""`recon-pipeline explain`: each kind of subject from a run's stored frames, on SQLite and
PostgreSQL; history with fix attempts; `--live` against the emulators; refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from recon_pipeline.cli import main
from recon_pipeline.sandbox.community import GUILD_ID
from recon_pipeline.sandbox.demo import SANDBOX_BOT_TOKEN, SANDBOX_STRIPE_KEY
from recon_pipeline.sandbox.server import free_port
from recon_pipeline_tests.builders import account, member, sub
from recon_pipeline_tests.harness import Pipeline, running_pipeline
from recon_pipeline_tests.scenario import _snapshot, community_of


def _community():
    snapshot = _snapshot()
    snapshot.members += [
        member("m_upgrade", discord_id="1010", customer="cus_upgrade", email="up@example.com"),
        member("m_twin_a", discord_id=None, customer=None, status="NONE", email="twin@x.org"),
        member("m_twin_b", discord_id=None, customer=None, status="NONE", email="twin@x.org"),
        member("5005", discord_id=None, customer=None, status="NONE"),
        # Acme's second seat, holding the role it should: a team's customer covers both seats.
        member("m_acme_two", discord_id="1011", customer=None, tier="TEAM_MEMBER", team="t_acme"),
    ]
    snapshot.subs += [
        sub("cus_upgrade", "active", created=1_700_000_000, sub_id="sub_up_active"),
        sub("cus_upgrade", "incomplete", created=1_700_500_000, sub_id="sub_up_incomplete"),
    ]
    snapshot.guild += account("1010", "Lord") + account("4001", "Lord") + account("5005")
    snapshot.guild += account("1011", "Knight")
    return community_of(snapshot)


@pytest.fixture
def pipeline(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Pipeline]:
    with running_pipeline(_community(), database_url, monkeypatch) as p:
        yield p


def _explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["explain", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = _explain(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


KEYS = {"subject", "members", "billingCustomer", "subscriptions", "entitled", "expectedRole",
        "rule", "heldRoles", "openIssues", "history"}  # fmt: skip


def test_each_kind_of_subject_is_explained_from_the_run(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["exceptions", "add", "--discord-id", "4001", "--role", "lord", "--reason",
                 "sponsor", "--by", "ops"]) == 0  # fmt: skip
    capsys.readouterr()
    run = pipeline.run()

    team_member = _json(capsys, "m_mismatch")
    assert team_member.keys() >= KEYS
    assert team_member["run"]["id"] == run.run_id
    assert team_member["billingCustomer"]["id"] == "cus_t_acme"
    assert "billed through team t_acme (Acme)" in team_member["billingCustomer"]["why"]
    assert team_member["entitled"] is True
    assert (team_member["expectedRole"], team_member["rule"]["number"]) == ("Knight", 5)
    assert team_member["heldRoles"]["managed"] == ["Lord"]
    [issue] = team_member["openIssues"]
    assert issue["type"] == "ROLE_MISMATCH" and issue["status"] == "new"
    assert len(issue["fingerprint"]) == 16

    upgrade = _json(capsys, "UP@example.com")
    assert upgrade["subject"]["kind"] == "email"
    assert [(s["id"], s["status"], s["grantsAccess"], s["reported"])
            for s in upgrade["subscriptions"]] == [
        ("sub_up_incomplete", "incomplete", False, False),
        ("sub_up_active", "active", True, True),
    ]  # fmt: skip
    assert (upgrade["entitled"], upgrade["expectedRole"], upgrade["rule"]["number"]) == (
        True, "Lord", 4)  # fmt: skip
    assert upgrade["openIssues"] == []

    orphan = _json(capsys, "2001")
    assert orphan["members"] == [] and orphan["expectedRole"] is None
    assert orphan["rule"]["number"] == 6
    assert orphan["heldRoles"]["managed"] == ["Squire"]
    assert [i["type"] for i in orphan["openIssues"]] == ["ORPHANED_ACCESS"]

    comped = _json(capsys, "4001")
    assert comped["expectedRole"] == "Lord"
    assert "access exception #1 gives Lord (sponsor)" in comped["rule"]["text"]
    assert [(e["id"], e["role"], e["inForce"]) for e in comped["exceptions"]] == [
        ("1", "Lord", True)]  # fmt: skip
    assert comped["openIssues"] == []

    by_customer = _json(capsys, "cus_t_acme")
    assert by_customer["subject"]["kind"] == "customer"
    # Several records: each answered in `members`, no single expected role or rule on top.
    seats = {m["id"]: (m["expectedRole"], m["rule"]["number"]) for m in by_customer["members"]}
    assert seats == {"m_acme_two": ("Knight", 5), "m_mismatch": ("Knight", 5)}
    assert (by_customer["expectedRole"], by_customer["rule"]) == (None, None)
    assert by_customer["billingCustomer"]["id"] == "cus_t_acme"
    assert by_customer["entitled"] is True
    assert [i["memberId"] for i in by_customer["openIssues"]] == ["m_mismatch"]

    by_discord = _json(capsys, "1004")
    assert [m["id"] for m in by_discord["members"]] == ["m_mismatch"]

    code, text, _ = _explain(capsys, "m_mismatch")
    assert code == 0
    assert "Billing customer: cus_t_acme: billed through team t_acme (Acme)" in text
    assert "Expected role: Knight (rule 5:" in text
    assert "MEDIUM ROLE_MISMATCH (new, first seen" in text
    assert "Held at the snapshot: Lord" in text


def test_unknown_ambiguous_and_too_early_subjects_exit_2(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _explain(capsys, "m_missing")
    assert code == 2 and "no complete reconciliation run is stored" in err

    pipeline.run()
    code, _, err = _explain(capsys, "nobody@example.com")
    assert code == 2 and "nothing in the snapshots matches 'nobody@example.com'" in err
    code, _, err = _explain(capsys, "twin@x.org")
    assert code == 2 and "belongs to 2 member records (m_twin_a, m_twin_b)" in err
    code, _, err = _explain(capsys, "5005")
    assert code == 2 and "names different things" in err and "--as member|discord" in err
    assert _json(capsys, "5005", "--as", "discord")["members"] == []
    assert [m["id"] for m in _json(capsys, "5005", "--as", "member")["members"]] == ["5005"]


def test_history_keeps_each_run_and_fix_attempt_and_live_shows_what_changed(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    dry = pipeline.run()
    first_seen = {i["memberId"]: i["firstSeen"] for i in pipeline.record(dry.run_id)["issues"]}
    fixing = pipeline.run(auto_fix=True)

    told = _json(capsys, "m_missing")
    [issue] = told["history"]["issues"]
    assert (issue["type"], issue["runs"]) == ("MISSING_ACCESS", 2)
    [open_issue] = told["openIssues"]
    assert open_issue["fingerprint"] == issue["fingerprint"]
    assert open_issue["status"] == "persisting"
    # First seen in the dry run's snapshots, last seen in the fixing run's (the latest).
    assert told["run"]["id"] == fixing.run_id
    assert told["history"]["firstSeen"] == issue["firstSeen"] == first_seen["m_missing"]
    assert open_issue["firstSeen"] == first_seen["m_missing"]
    assert told["history"]["lastSeen"] == issue["lastSeen"] == told["run"]["snapshotsTakenAt"]
    assert told["history"]["firstSeen"] < told["history"]["lastSeen"]
    attempts = [(a["runId"], a["outcome"]) for a in told["history"]["fixAttempts"]]
    assert attempts == [(dry.run_id, "skipped"), (fixing.run_id, "fixed")]

    # Since the fixing run's snapshot: its own fix gave Lord, and Stripe cancelled.
    assert told["heldRoles"]["managed"] == []
    [sub_id] = [s["id"] for s in told["subscriptions"]]
    pipeline.sandbox.stripe.set_status(sub_id, "canceled")

    live = _json(capsys, "m_missing", "--live")["live"]
    assert live["changes"] == [
        f"subscription {sub_id}: active → canceled",
        "1002 gained role Lord",
    ]
    assert live["heldRoles"]["1002"]["managed"] == ["Lord"]
    assert live["entitledNow"] == {"cus_missing": False}

    code, text, _ = _explain(capsys, "m_missing", "--live")
    assert code == 0 and f"changed: subscription {sub_id}: active → canceled" in text


def test_only_live_asks_stripe_and_discord_one_listing_and_one_get(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline.run()
    stripe, discord = pipeline.sandbox.stripe, pipeline.sandbox.discord
    asked = (len(stripe.requests), len(discord.requests))

    for args in [("m_missing",), ("m_missing", "--json"), ("cus_t_acme",), ("2001", "--json")]:
        code, _, err = _explain(capsys, *args)
        assert code == 0, err

    assert (len(stripe.requests), len(discord.requests)) == asked
    # The emulators do see `--live`: one listing for the customer, one GET for the account.
    code, _, err = _explain(capsys, "m_missing", "--live")
    assert code == 0, err
    assert [(r.method, r.path, r.query.get("customer")) for r in stripe.requests[asked[0]:]] == [
        ("GET", "/v1/subscriptions", "cus_missing")]  # fmt: skip
    assert [(r.method, r.path) for r in discord.requests[asked[1]:]] == [
        ("GET", f"/api/v10/guilds/{GUILD_ID}/members/1002")]  # fmt: skip


def test_live_refuses_without_credentials_and_fails_on_a_failed_call_without_a_secret(
    pipeline: Pipeline, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline.run()
    stripe, discord = pipeline.sandbox.stripe, pipeline.sandbox.discord
    asked = (len(stripe.requests), len(discord.requests))

    monkeypatch.delenv("STRIPE_SECRET_KEY")
    assert _explain(capsys, "m_missing")[0] == 0  # the stored answer needs no credentials
    code, out, err = _explain(capsys, "m_missing", "--live")
    assert (code, out) == (2, "") and "--live needs STRIPE_SECRET_KEY to be set" in err
    monkeypatch.setenv("STRIPE_SECRET_KEY", SANDBOX_STRIPE_KEY)
    monkeypatch.delenv("DISCORD_BOT_TOKEN")
    monkeypatch.delenv("DISCORD_GUILD_ID")
    code, out, err = _explain(capsys, "m_missing", "--live")
    assert (code, out) == (2, "")
    assert "--live needs DISCORD_BOT_TOKEN and DISCORD_GUILD_ID to be set" in err
    assert (len(stripe.requests), len(discord.requests)) == asked  # refused before any call

    monkeypatch.setenv("DISCORD_BOT_TOKEN", SANDBOX_BOT_TOKEN)
    monkeypatch.setenv("DISCORD_GUILD_ID", GUILD_ID)
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{free_port()}")  # nobody listens
    code, out, err = _explain(capsys, "m_missing", "--live")
    assert (code, out) == (1, "")
    assert "--live could not read the subject now" in err and "no answer from Stripe" in err
    assert SANDBOX_STRIPE_KEY not in err

    monkeypatch.setenv("STRIPE_API_BASE", pipeline.sandbox.stripe_url)
    discord.fail_next(1, 403)
    code, out, err = _explain(capsys, "m_missing", "--live")
    assert (code, out) == (1, "")
    assert "--live could not read the subject now" in err and "403" in err
    assert SANDBOX_BOT_TOKEN not in err and SANDBOX_STRIPE_KEY not in err
