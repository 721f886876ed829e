"""Carrying out planned fixes: the real Discord client against the emulator on loopback, and a
SQLite membership database.

The emulator starts from the same snapshot the actions are planned from, and the client and the
emulator share a fake clock, so nothing waits. Assertions are on the emulator's recorded role
mutations and on the database's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa

from recon_pipeline.clients.discord import DiscordClient
from recon_pipeline.clients.membership_db import (
    ensure_pipeline_tables,
    fix_action_table,
    init_database,
    member_table,
    parse_database_url,
    team_table,
)
from recon_pipeline.domain.columns import IssueCol
from recon_pipeline.domain.fixes import (
    ActionCol,
    OutcomeCol,
    ResultCol,
    issue_outcomes,
    plan_fix_actions,
)
from recon_pipeline.fixing import FixRun, apply_actions
from recon_pipeline.sandbox.discord_emulator import DiscordEmulator
from recon_pipeline_tests.builders import ROLE_IDS, Snapshot, account, guild, member, sub, team
from recon_pipeline_tests.loopback import FakeClock, Loopback

GUILD = "1100000000000000000"
TOKEN = "fixing-test-bot-token"
MANAGED_ROLE_IDS = {name: ROLE_IDS[name] for name in ("Squire", "Knight", "Lord", "Debtor")}
SCOPE = "run-0001"
REASON = f"recon_pipeline run {SCOPE}"


@dataclass
class Sandbox:
    emulator: DiscordEmulator
    client: DiscordClient


@pytest.fixture
def engine(sqlite_url: str) -> Iterator[sa.Engine]:
    engine = parse_database_url(sqlite_url).create_engine()
    ensure_pipeline_tables(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def discord(loopback: Loopback, clock: FakeClock) -> Iterator[Callable[[Snapshot], Sandbox]]:
    """An emulator holding the snapshot's guild, and a real client pointed at it."""
    clients: list[DiscordClient] = []

    def factory(snapshot: Snapshot) -> Sandbox:
        frames = snapshot.frames()
        emulator = DiscordEmulator(bot_token=TOKEN, guild_id=GUILD, clock=clock)
        # Roles get positions 1, 2, … in ROLE_IDS order: Squire 1, Knight 2, Lord 3, Debtor 4.
        emulator.load_frames(frames["guild_member_roles"], frames["guild_roles"])
        client = DiscordClient(
            bot_token=TOKEN,
            guild_id=GUILD,
            api_base=f"{loopback.install(emulator.app)}/api/v10",
            clock=clock,
            sleep=clock.sleep,
        )
        clients.append(client)
        return Sandbox(emulator, client)

    yield factory
    for client in clients:
        client.close()


def _fix_run(**overrides: Any) -> FixRun:
    return FixRun(
        **{"scope_id": SCOPE, "audit_reason": REASON, "role_ids": MANAGED_ROLE_IDS, **overrides}
    )


def _apply(
    actions: pd.DataFrame, sandbox: Sandbox, engine: sa.Engine, **run: Any
) -> dict[str, tuple[str, str]]:
    """Apply and return key → (outcome, detail), checking there is one result per action."""
    results = apply_actions(actions, discord=sandbox.client, engine=engine, run=_fix_run(**run))
    assert list(results.columns) == list(ResultCol.ALL)
    assert results[ResultCol.KEY].tolist() == actions[ActionCol.KEY].tolist()
    return {
        key: (outcome, detail)
        for key, outcome, detail in results[list(ResultCol.ALL)].itertuples(index=False)
    }


def _key(actions: pd.DataFrame, discord_id: str, kind: str, value: str) -> str:
    match = actions[
        (actions[ActionCol.DISCORD_ID] == discord_id)
        & (actions[ActionCol.KIND] == kind)
        & (actions[ActionCol.VALUE] == value)
    ]
    [key] = match[ActionCol.KEY].tolist()
    return key


def _calls(emulator: DiscordEmulator) -> list[tuple[str, str, str]]:
    return [(m.method, m.user_id, m.role_id) for m in emulator.mutations]


def _roles(emulator: DiscordEmulator, user_id: str) -> set[str]:
    return set(emulator.member_roles(user_id))


def _recorded(engine: sa.Engine, scope_id: str = SCOPE) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(fix_action_table).where(fix_action_table.c.run_id == scope_id)
        ).mappings()
        return {row["action_key"]: dict(row) for row in rows}


def _paying(n: int, *, first: int = 1) -> Snapshot:
    """`n` linked, paying individuals in the guild with no role: each is due Lord."""
    ids = range(first, first + n)
    return Snapshot(
        members=[member(f"m{i}", discord_id=str(1000 + i), customer=f"cus_{i}") for i in ids],
        subs=[sub(f"cus_{i}") for i in ids],
        guild=guild(*(account(str(1000 + i)) for i in ids)),
    )


KNIGHT, LORD, SQUIRE, DEBTOR = (ROLE_IDS[n] for n in ("Knight", "Lord", "Squire", "Debtor"))
MODERATOR, EVENTS = ROLE_IDS["Moderator"], ROLE_IDS["Events"]


def _every_role_fix() -> Snapshot:
    return Snapshot(
        members=[
            member("m1", discord_id="1001", customer="cus_1"),  # MISSING_ACCESS: add Lord
            member("m2", discord_id="1002", customer="cus_2", status="CANCELLED"),  # UNAUTHORIZED
            member("m3", discord_id="1003", customer="cus_3"),  # ROLE_MISMATCH: Knight → Lord
            member("m4", discord_id="1004", customer="cus_4", debtor=True),  # Lord → Debtor
        ],
        subs=[sub("cus_1"), sub("cus_2", "canceled"), sub("cus_3"), sub("cus_4")],
        guild=guild(
            account("1001", "Events"),
            account("1002", "Knight", "Moderator"),
            account("1003", "Knight"),
            account("1004", "Lord"),
            account("5005", "Squire", "Events"),  # ORPHANED_ACCESS
        ),
    )


# ------------------------------------------------------------------------------------ role fixes


def test_apply_actions_makes_exactly_one_call_per_action(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    snapshot = _every_role_fix()
    sandbox = discord(snapshot)
    actions = plan_fix_actions(snapshot.drift())

    results = _apply(actions, sandbox, engine)

    assert set(results.values()) == {("fixed", "")}
    assert sorted(_calls(sandbox.emulator)) == sorted(
        [
            ("PUT", "1001", LORD),
            ("DELETE", "1002", KNIGHT),
            ("PUT", "1003", LORD),
            ("DELETE", "1003", KNIGHT),
            ("PUT", "1004", DEBTOR),
            ("DELETE", "1004", LORD),
            ("DELETE", "5005", SQUIRE),
        ]
    )
    assert {m.status for m in sandbox.emulator.mutations} == {204}
    assert {m.reason for m in sandbox.emulator.mutations} == {REASON}
    # The swaps grant first, then take away.
    calls = _calls(sandbox.emulator)
    assert calls.index(("PUT", "1003", LORD)) < calls.index(("DELETE", "1003", KNIGHT))
    assert calls.index(("PUT", "1004", DEBTOR)) < calls.index(("DELETE", "1004", LORD))
    # Managed roles as planned; unmanaged roles untouched.
    assert _roles(sandbox.emulator, "1001") == {LORD, EVENTS}
    assert _roles(sandbox.emulator, "1002") == {MODERATOR}
    assert _roles(sandbox.emulator, "1003") == {LORD}
    assert _roles(sandbox.emulator, "1004") == {DEBTOR}
    assert _roles(sandbox.emulator, "5005") == {EVENTS}


def test_apply_actions_of_no_actions_calls_nothing(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    sandbox = discord(_paying(1))
    actions = plan_fix_actions(Snapshot().drift())

    assert _apply(actions, sandbox, engine) == {}
    assert sandbox.emulator.requests == []


def test_apply_actions_swap_whose_grant_is_refused_keeps_the_old_role(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    snapshot = Snapshot(
        members=[
            member("m1", discord_id="1001", customer="cus_1"),  # ROLE_MISMATCH: Knight → Lord
            member("m2", discord_id="1002", customer="cus_2", intro=False),  # MISSING: Squire
            member("m3", discord_id="1003", customer="cus_3"),  # ROLE_MISMATCH: Squire → Lord
        ],
        subs=[sub("cus_1"), sub("cus_2"), sub("cus_3")],
        guild=guild(account("1001", "Knight"), account("1002"), account("1003", "Squire")),
    )
    sandbox = discord(snapshot)
    sandbox.emulator.set_bot_top_position(3)  # Lord (position 3) is out of the bot's reach
    issues = snapshot.drift()
    actions = plan_fix_actions(issues)

    results = _apply(actions, sandbox, engine)

    grant = results[_key(actions, "1001", "add_role", "Lord")]
    removal = results[_key(actions, "1001", "remove_role", "Knight")]
    assert grant[0] == "failed" and "may not manage role 'Lord'" in grant[1]
    assert "50013" in grant[1]
    assert removal[0] == "not_attempted" and removal[1]
    assert _roles(sandbox.emulator, "1001") == {KNIGHT}
    # Other members still get roles the bot may manage.
    assert results[_key(actions, "1002", "add_role", "Squire")] == ("fixed", "")
    assert _roles(sandbox.emulator, "1002") == {SQUIRE}
    # The refused role is not tried again this run, so m3's swap keeps its old role too.
    assert results[_key(actions, "1003", "add_role", "Lord")][0] == "not_attempted"
    assert results[_key(actions, "1003", "remove_role", "Squire")][0] == "not_attempted"
    assert _roles(sandbox.emulator, "1003") == {SQUIRE}
    assert _calls(sandbox.emulator) == [("PUT", "1002", SQUIRE), ("PUT", "1001", LORD)]
    # The swap's issue failed and took no action.
    outcomes = issue_outcomes(issues, actions, _result_frame(results)).set_index(IssueCol.MEMBER_ID)
    assert outcomes.loc["m1", OutcomeCol.OUTCOME] == "failed"
    assert outcomes.loc["m1", OutcomeCol.ACTIONS_TAKEN] == ()


def _result_frame(results: dict[str, tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(key, *value) for key, value in results.items()], columns=list(ResultCol.ALL)
    ).astype("str")


def test_apply_actions_unknown_member_fails_only_that_action(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    snapshot = _paying(2)
    sandbox = discord(snapshot)
    sandbox.emulator.remove_member("1001")  # left the server after the snapshot
    actions = plan_fix_actions(snapshot.drift())

    results = _apply(actions, sandbox, engine)

    gone = results[_key(actions, "1001", "add_role", "Lord")]
    assert gone[0] == "failed" and "10007" in gone[1]
    assert results[_key(actions, "1002", "add_role", "Lord")] == ("fixed", "")
    assert _roles(sandbox.emulator, "1002") == {LORD}
    assert [(m.user_id, m.status) for m in sandbox.emulator.mutations] == [
        ("1001", 404),
        ("1002", 204),
    ]


def test_apply_actions_cloudflare_block_stops_every_later_discord_call(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    snapshot = _paying(3)
    sandbox = discord(snapshot)
    sandbox.emulator.fail_next(1, 429, cloudflare=True)
    actions = plan_fix_actions(snapshot.drift())

    results = _apply(actions, sandbox, engine)

    first, *later = (results[k] for k in actions[ActionCol.KEY])
    assert first[0] == "failed" and "blocked" in first[1]
    assert [outcome for outcome, _ in later] == ["not_attempted", "not_attempted"]
    assert all(detail for _, detail in later)
    assert len(sandbox.emulator.requests) == 1  # nothing sent after the block
    assert _roles(sandbox.emulator, "1002") == set()
    assert _roles(sandbox.emulator, "1003") == set()


def test_apply_actions_database_writes_go_on_after_discord_is_blocked(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    init_database(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(team_table).values(
                id="t1", name="Acme", stripeCustomerId="cus_t1", subscriptionStatus="CANCELLED"
            )
        )
    snapshot = _paying(2)
    snapshot.teams.append(team("t1", customer="cus_t1", status="CANCELLED"))
    snapshot.subs.append(sub("cus_t1"))
    sandbox = discord(snapshot)
    sandbox.emulator.fail_next(1, 429, cloudflare=True)
    actions = plan_fix_actions(snapshot.drift())
    assert actions[ActionCol.KIND].tolist() == ["add_role", "add_role", "set_status"]

    results = _apply(actions, sandbox, engine)

    assert [results[k][0] for k in actions[ActionCol.KEY]] == [
        "failed",
        "not_attempted",
        "fixed",
    ]
    with engine.connect() as conn:
        assert conn.execute(sa.select(team_table.c.subscriptionStatus)).scalar() == "ACTIVE"


# ------------------------------------------------------------------------------- status writes


def _member_row(member_id: str, status: str, **values: Any) -> dict[str, Any]:
    return {
        "id": member_id,
        "discordId": None,
        "stripeCustomerId": f"cus_{member_id}",
        "email": f"{member_id}@example.org",
        "subscriptionStatus": status,
        "seatTier": "INDIVIDUAL",
        "introCompleted": True,
        "teamId": None,
        "isInDebtorState": False,
        **values,
    }


def _team_row(team_id: str, name: str, **values: Any) -> dict[str, Any]:
    return {
        "id": team_id,
        "name": name,
        "stripeCustomerId": f"cus_{team_id}",
        "subscriptionStatus": "CANCELLED",
        **values,
    }


def _table_rows(engine: sa.Engine, table: sa.Table) -> dict[str, dict[str, Any]]:
    with engine.connect() as conn:
        return {r["id"]: dict(r) for r in conn.execute(sa.select(table)).mappings()}


def test_apply_actions_set_status_updates_only_that_rows_status(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    init_database(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(team_table),
            [
                _team_row("t1", "Acme", stripeSubscriptionId="sub_t1"),
                _team_row("t2", "Beta", stripeSubscriptionId=None),
            ],
        )
        conn.execute(
            sa.insert(member_table),
            [
                _member_row("m1", "ACTIVE", seatTier="OWNER", isInDebtorState=True),
                _member_row("m2", "ACTIVE"),
            ],
        )
    before = {"team": _table_rows(engine, team_table), "member": _table_rows(engine, member_table)}
    snapshot = Snapshot(
        members=[
            member("m1", discord_id=None, customer="cus_m1", status="ACTIVE"),  # → CANCELLED
            member("m2", discord_id=None, customer="cus_m2", status="ACTIVE"),  # in order
        ],
        teams=[
            team("t1", customer="cus_t1", status="CANCELLED"),  # → ACTIVE
            team("t2", name="Beta", customer="cus_t2", status="CANCELLED"),  # in order
        ],
        subs=[sub("cus_m1", "canceled"), sub("cus_m2"), sub("cus_t1"), sub("cus_t2", "unpaid")],
    )
    sandbox = discord(snapshot)
    actions = plan_fix_actions(snapshot.drift())
    assert actions[ActionCol.KIND].tolist() == ["set_status", "set_status"]

    results = _apply(actions, sandbox, engine)

    assert set(results.values()) == {("fixed", "")}
    teams, members = _table_rows(engine, team_table), _table_rows(engine, member_table)
    assert teams == {
        "t1": {**before["team"]["t1"], "subscriptionStatus": "ACTIVE"},
        "t2": before["team"]["t2"],
    }
    assert members == {
        "m1": {**before["member"]["m1"], "subscriptionStatus": "CANCELLED"},
        "m2": before["member"]["m2"],
    }
    assert sandbox.emulator.requests == []


def test_apply_actions_set_status_for_a_row_gone_from_the_database_fails(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    init_database(engine)
    snapshot = Snapshot(
        members=[member("m1", discord_id=None, customer="cus_m1", status="NONE")],
        subs=[sub("cus_m1")],
    )
    sandbox = discord(snapshot)
    actions = plan_fix_actions(snapshot.drift())

    [(outcome, detail)] = _apply(actions, sandbox, engine).values()

    assert outcome == "failed"
    assert "no such member" in detail
    assert _table_rows(engine, member_table) == {}


# ------------------------------------------------------------------------- recording and trust


def test_apply_actions_records_each_result_under_the_scope(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    snapshot = _paying(2)
    sandbox = discord(snapshot)
    sandbox.emulator.remove_member("1001")
    actions = plan_fix_actions(snapshot.drift())
    gone, kept = (_key(actions, d, "add_role", "Lord") for d in ("1001", "1002"))

    _apply(actions, sandbox, engine)

    recorded = _recorded(engine)
    assert set(recorded) == {gone, kept}
    assert {k: v for k, v in recorded[kept].items() if k != "applied_at"} == {
        "run_id": SCOPE,
        "action_key": kept,
        "issue_type": "MISSING_ACCESS",
        "member_id": "m2",
        "team_id": None,
        "discord_id": "1002",
        "action": "add_role",
        "value": "Lord",
        "outcome": "fixed",
        "error": None,
    }
    assert recorded[gone]["outcome"] == "failed"
    assert "10007" in recorded[gone]["error"]
    assert recorded[gone]["applied_at"] is not None


def test_apply_actions_notes_each_change_as_pending_before_its_call_and_its_result_after(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    snapshot = _paying(3)
    sandbox = discord(snapshot)
    actions = plan_fix_actions(snapshot.drift())
    seen: list[list[str]] = []

    class Watching:
        """The real client, noting the recorded outcomes when each call starts."""

        def add_role(self, user_id: str, role_id: str, *, reason: str) -> None:
            seen.append(sorted(r["outcome"] for r in _recorded(engine).values()))
            sandbox.client.add_role(user_id, role_id, reason=reason)

        def remove_role(self, user_id: str, role_id: str, *, reason: str) -> None:
            raise AssertionError("no removal is planned")

        def member_role_ids(self, user_id: str) -> frozenset[str] | None:
            raise AssertionError("a fresh run has nothing to look up")

    apply_actions(actions, discord=Watching(), engine=engine, run=_fix_run())

    assert seen == [["pending"], ["fixed", "pending"], ["fixed", "fixed", "pending"]]
    assert [r["outcome"] for r in _recorded(engine).values()] == ["fixed"] * 3


def test_a_change_left_pending_is_looked_up_and_made_only_if_it_did_not_go_through(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    # An attempt killed mid-call leaves two changes pending: 1001's reached Discord, 1002's not.
    snapshot = _paying(2)
    sandbox = discord(snapshot)
    actions = plan_fix_actions(snapshot.drift())
    went_through, lost = (_key(actions, d, "add_role", "Lord") for d in ("1001", "1002"))
    sandbox.emulator.add_member("1001", roles=[LORD])
    with engine.begin() as conn:
        for key, discord_id in ((went_through, "1001"), (lost, "1002")):
            conn.execute(
                fix_action_table.insert().values(
                    run_id=SCOPE,
                    action_key=key,
                    issue_type="MISSING_ACCESS",
                    discord_id=discord_id,
                    action="add_role",
                    value="Lord",
                    outcome="pending",
                )
            )

    results = _apply(actions, sandbox, engine, trust_recorded_fixes=True)

    assert results[went_through][0] == "fixed" and "interrupted" in results[went_through][1]
    assert results[lost] == ("fixed", "")
    assert _calls(sandbox.emulator) == [("PUT", "1002", LORD)]
    assert {k: r["outcome"] for k, r in _recorded(engine).items()} == {
        went_through: "fixed",
        lost: "fixed",
    }


def test_apply_actions_trusting_recorded_fixes_skips_them_without_a_call(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    snapshot = _paying(2)
    sandbox = discord(snapshot)
    sandbox.emulator.remove_member("1002")  # fails the first time
    actions = plan_fix_actions(snapshot.drift())
    done, failed = (_key(actions, d, "add_role", "Lord") for d in ("1001", "1002"))
    _apply(actions, sandbox, engine)
    sandbox.emulator.add_member("1002")  # back in the server
    sandbox.emulator.mutations.clear()

    results = _apply(actions, sandbox, engine, trust_recorded_fixes=True)

    assert results[done][0] == "fixed" and results[done][1]  # says it was done earlier
    assert results[failed] == ("fixed", "")  # a recorded failure is tried again
    assert _calls(sandbox.emulator) == [("PUT", "1002", LORD)]
    assert _recorded(engine)[failed]["outcome"] == "fixed"


def test_apply_actions_not_trusting_recorded_fixes_applies_them_again(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    snapshot = _paying(2)
    sandbox = discord(snapshot)
    actions = plan_fix_actions(snapshot.drift())
    _apply(actions, sandbox, engine)
    sandbox.emulator.mutations.clear()

    results = _apply(actions, sandbox, engine, trust_recorded_fixes=False)

    assert set(results.values()) == {("fixed", "")}
    assert _calls(sandbox.emulator) == [("PUT", "1001", LORD), ("PUT", "1002", LORD)]


def test_apply_actions_trusts_only_fixes_recorded_under_the_same_scope(
    discord: Callable[[Snapshot], Sandbox], engine: sa.Engine
) -> None:
    snapshot = _paying(1)
    sandbox = discord(snapshot)
    actions = plan_fix_actions(snapshot.drift())
    _apply(actions, sandbox, engine, scope_id="run-other")
    sandbox.emulator.mutations.clear()

    results = _apply(actions, sandbox, engine, trust_recorded_fixes=True)

    assert set(results.values()) == {("fixed", "")}
    assert _calls(sandbox.emulator) == [("PUT", "1001", LORD)]
    assert set(_recorded(engine, "run-other")) == set(_recorded(engine, SCOPE))
