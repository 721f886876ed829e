"""One subject's rows of the latest complete run, and its history, read from the frame store
(docs/behaviour.md §13): what `recon-pipeline explain` shows, without calling Stripe or Discord.

Only the subject's rows are read: each frame is asked for the rows whose key columns contain the
subject's ids (one scan of that run's rows in the database, or of its Parquet file), and the
domain applies the exact rules to them. A million-member day is never loaded whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd

from recon_pipeline.clients.frame_bodies import PARTITION_COLUMN, RUN_COLUMN
from recon_pipeline.clients.frame_store import FrameStore, StoredFrame
from recon_pipeline.domain.access_exceptions import empty_exceptions
from recon_pipeline.domain.columns import (
    GuildMemberRoleCol,
    IssueCol,
    MemberCol,
    SubscriptionCol,
    TeamCol,
)
from recon_pipeline.domain.confirmation import (
    StoredDrift,
    complete_observations,
    last_observation,
)
from recon_pipeline.domain.explain import (
    ATTEMPT,
    DAY,
    RUN,
    RunSeen,
    Snapshots,
    explain,
    role_names,
)
from recon_pipeline.domain.policy import AccessPolicy
from recon_pipeline.domain.provenance import sources_of_attrs
from recon_pipeline.domain.subject import SubjectKind, find_subject, members_named, search_terms
from recon_pipeline.previous_run import DRIFT, EXCEPTIONS, stored_drifts

FIXES = "reconciliation_fixes"  # the drift table with each issue's outcome, when fixing ran
MEMBERS, TEAMS = "membership_members", "membership_teams"
SUBSCRIPTIONS = "stripe_subscriptions"
GUILD_ROLES, GUILD_MEMBERS = "discord_roles", "discord_member_roles"


class NoStoredRunError(LookupError):
    """No complete reconciliation run is stored, or its snapshots are gone."""


def latest_complete_run(complete: list[StoredDrift]) -> StoredDrift:
    """Of the complete drift tables, the one whose snapshots were taken last.

    Raises:
        NoStoredRunError: none is stored.
    """
    latest = last_observation(complete)
    if latest is None:
        raise NoStoredRunError(
            "no complete reconciliation run is stored in this database yet; run the job first "
            "(recon-pipeline run)"
        )
    return latest


class _RunFrames:
    """The snapshot frames one drift table was computed from, read a few rows at a time."""

    def __init__(self, store: FrameStore, drift: StoredDrift) -> None:
        self.store = store
        self.run_id = drift.run_id
        self.entries: dict[str, StoredFrame] = {}
        for origin in sources_of_attrs(drift.attrs):
            if origin is None:
                continue
            entry = store.entry(origin.frame, origin.day, origin.run_id)
            if entry is None and origin.frame != EXCEPTIONS:
                raise NoStoredRunError(
                    f"the {origin.frame} snapshot of {origin.day} (run {origin.run_id}), which "
                    f"run {drift.run_id} read, is no longer stored"
                )
            if entry is not None:
                self.entries[origin.frame] = entry

    def matching(self, name: str, contains: dict[str, Iterable[str]]) -> pd.DataFrame:
        wanted = {column: sorted({t for t in texts if t}) for column, texts in contains.items()}
        # Emails are compared without case; ids exactly.
        frame = self.store.read_matching(
            name, [self._entry(name)], wanted, ignore_case=frozenset({MemberCol.EMAIL})
        )
        return frame.drop(columns=[PARTITION_COLUMN, RUN_COLUMN])

    def whole(self, name: str) -> pd.DataFrame:
        entry = self._entry(name)
        return self.store.read(name, entry.day, entry.run_id)

    def exceptions(self) -> pd.DataFrame:
        """The run's access exceptions; none for a run of a version before them."""
        return self.whole(EXCEPTIONS) if EXCEPTIONS in self.entries else empty_exceptions()

    def _entry(self, name: str) -> StoredFrame:
        if name not in self.entries:
            raise NoStoredRunError(
                f"run {self.run_id}'s drift table does not say which {name} snapshot it read "
                "(stored by an older version); run the job once more"
            )
        return self.entries[name]


@dataclass(frozen=True)
class Lookup:
    explanation: dict[str, Any]  # domain/explain.py's keys
    role_names: dict[str, str]  # the guild's role ids → names, as the snapshot saw them


def look_up(
    store: FrameStore, query: str, policy: AccessPolicy, *, kind: SubjectKind | None = None
) -> Lookup:
    """The explanation of `query` from the latest complete run.

    Raises:
        NoStoredRunError: nothing to explain from.
        UnknownSubjectError, AmbiguousSubjectError: from domain/subject.py.
    """
    # The catalog is read once, so every step sees the same runs.
    drift_entries = store.entries_named(DRIFT)
    runs = complete_observations(stored_drifts(drift_entries))
    drift = latest_complete_run(runs)
    frames = _RunFrames(store, drift)
    terms = search_terms(query)
    # One scan per large frame: the member rows the query names, then the teams, subscriptions
    # and guild rows of the query itself and of those members.
    members = members_named(query, frames.matching(
        MEMBERS,
        {MemberCol.ID: terms.ids, MemberCol.STRIPE_CUSTOMER_ID: terms.ids,
         MemberCol.EMAIL: terms.emails, MemberCol.DISCORD_ID: terms.discord_ids},
    ))  # fmt: skip
    teams = frames.matching(
        TEAMS,
        {TeamCol.STRIPE_CUSTOMER_ID: terms.ids, TeamCol.ID: _texts(members[MemberCol.TEAM_ID])},
    )
    billing_teams = teams[
        teams[TeamCol.STRIPE_CUSTOMER_ID].astype("str").str.strip() == query.strip()
    ]
    if len(billing_teams):  # a team's customer: every seat of the team
        seats = frames.matching(MEMBERS, {MemberCol.TEAM_ID: _texts(billing_teams[TeamCol.ID])})
        members = pd.concat([members, seats], ignore_index=True).drop_duplicates(MemberCol.ID)
    customers = [
        *terms.ids,
        *_texts(members[MemberCol.STRIPE_CUSTOMER_ID]),
        *_texts(teams[TeamCol.STRIPE_CUSTOMER_ID]),
    ]
    accounts = [*terms.discord_ids, *_discord_terms(members[MemberCol.DISCORD_ID])]
    # Two scans at once: the database works on both while the GIL is released.
    with ThreadPoolExecutor(max_workers=2) as pool:
        reading = pool.submit(
            frames.matching, SUBSCRIPTIONS, {SubscriptionCol.CUSTOMER_ID: customers}
        )
        guild = frames.matching(GUILD_MEMBERS, {GuildMemberRoleCol.DISCORD_ID: accounts})
        subscriptions = reading.result()
    exceptions = frames.exceptions()
    subject = find_subject(
        query,
        members=members,
        teams=teams,
        subscriptions=subscriptions,
        guild_member_roles=guild,
        exceptions=exceptions,
        kind=kind,
    )
    mine = members[members[MemberCol.ID].astype("str").isin(subject.member_ids)]
    team_ids = {*subject.team_ids, *_texts(mine[MemberCol.TEAM_ID])}
    snapshots = Snapshots(
        members=mine,
        teams=teams,
        subscriptions=subscriptions,
        guild_member_roles=guild,
        guild_roles=frames.whole(GUILD_ROLES),
        exceptions=exceptions,
        day=drift.day,
    )
    accounts = [str(subject.account or ""), *_discord_terms(mine[MemberCol.DISCORD_ID])]
    keys = {
        IssueCol.MEMBER_ID: subject.member_ids,
        IssueCol.DISCORD_ID: accounts,
        IssueCol.TEAM_ID: team_ids,
    }
    history = _history(store, runs, drift_entries, keys)
    explanation = explain(
        subject,
        snapshots,
        policy,
        run=RunSeen(drift.run_id, drift.day, drift.observed_at),
        issues=_last_attempt(history, drift.run_id),
        history=history,
        runs=[RunSeen(s.run_id, s.day, s.observed_at) for s in runs],
    )
    return Lookup(explanation, role_names(snapshots.guild_roles))


def _texts(column: pd.Series) -> list[str]:
    """A column's distinct values as stripped texts, missing and blank ones left out."""
    return sorted({t for t in column.dropna().astype("str").str.strip() if t})


def _discord_terms(column: pd.Series) -> list[str]:
    """A Discord id column's usable ids as the storage's coarse match looks for them."""
    return [d for text in _texts(column) for d in search_terms(text).discord_ids]


def _history(
    store: FrameStore,
    runs: list[StoredDrift],
    drift_entries: list[StoredFrame],
    keys: dict[str, Iterable[str]],
) -> pd.DataFrame:
    """The subject's issue rows in every complete run (`RUN`): from the fixes frames computed
    from its drift table (with outcomes; `ATTEMPT` names the run that tried, a re-execution's
    own id included) where there are any, else from the drift table itself."""
    wanted = {column: sorted({str(t) for t in texts if t}) for column, texts in keys.items()}
    ids = {s.run_id for s in runs}
    read_in: dict[tuple[str, str], str] = {}  # a fixes frame → the drift table's run it read
    fix_entries = store.entries_named(FIXES)
    for entry in fix_entries:
        for origin in sources_of_attrs(entry.attrs):
            if origin is not None and origin.frame == DRIFT and origin.run_id in ids:
                read_in[(entry.day, entry.run_id)] = origin.run_id
    fixes = [e for e in fix_entries if (e.day, e.run_id) in read_in]
    tried = set(read_in.values())
    drifts = [e for e in drift_entries if e.run_id in ids - tried]
    parts = []
    if fixes:
        rows = store.read_matching(FIXES, fixes, wanted)
        pairs = list(zip(rows[PARTITION_COLUMN], rows[RUN_COLUMN], strict=True))
        written = {(e.day, e.run_id): e.written_at for e in fixes}
        rows[ATTEMPT] = rows[RUN_COLUMN]
        rows[RUN_COLUMN] = [read_in[pair] for pair in pairs]
        rows["_written"] = [written[pair] for pair in pairs]  # attempts in the order they ran
        parts.append(rows.sort_values("_written", kind="stable").drop(columns="_written"))
    if drifts:
        parts.append(store.read_matching(DRIFT, drifts, wanted))
    frame = pd.concat([p for p in parts if len(p)] or [_empty()], ignore_index=True)
    return frame.rename(columns={PARTITION_COLUMN: DAY, RUN_COLUMN: RUN})


def _last_attempt(history: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """The run's issues as its last fixing attempt left them (or as it found them)."""
    rows = history[history[RUN] == run_id]
    if ATTEMPT in rows and rows[ATTEMPT].notna().any():
        rows = rows[rows[ATTEMPT] == rows[ATTEMPT].dropna().iloc[-1]]
    return rows.drop(columns=[c for c in (DAY, RUN, ATTEMPT) if c in rows])


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {c: pd.Series(dtype="object") for c in (PARTITION_COLUMN, RUN_COLUMN, *IssueCol.ALL)}
    )
