"""The drift engine: snapshots of Stripe, the membership database and Discord → drift issue table.

Pure functions over pandas frames (docs/behaviour.md §1, §2). Managed roles are handled as bit
masks (one bit per managed role) so that "expected vs actual role set" is integer arithmetic over
whole columns; no Python loop runs per member.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recon_pipeline.domain.access_exceptions import empty_exceptions
from recon_pipeline.domain.columns import (
    ExceptionCol,
    GuildMemberRoleCol,
    IssueCol,
    MemberCol,
    SubscriptionCol,
    TeamCol,
    require_columns,
)
from recon_pipeline.domain.policy import (
    DATABASE_GRANTING_STATUSES,
    STRIPE_TO_DATABASE_STATUS,
    AccessPolicy,
    DriftType,
    SeatTier,
    Severity,
    SubscriptionStatus,
    resolve_managed_role_ids,
)

# Bit of each managed role, in ManagedRoles.names() order: squire, knight, lord, debtor.
SQUIRE, KNIGHT, LORD, DEBTOR = 1, 2, 4, 8
_BITS = (SQUIRE, KNIGHT, LORD, DEBTOR)
_TYPE_ORDER = list(DriftType)
_NO_KEY = -1  # code of a missing or unusable key; indexes the sentinel slot of lookup arrays


def find_drift_issues(
    members: pd.DataFrame,
    teams: pd.DataFrame,
    subscriptions: pd.DataFrame,
    guild_member_roles: pd.DataFrame,
    guild_roles: pd.DataFrame,
    policy: AccessPolicy,
    exceptions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Compute the drift issue table (docs/behaviour.md §2) from the three systems' snapshots.

    Args:
        members: `"Member"` rows (`MemberCol`).
        teams: `"Team"` rows (`TeamCol`).
        subscriptions: every Stripe subscription, any status (`SubscriptionCol`).
        guild_member_roles: guild accounts and the role ids they hold (`GuildMemberRoleCol`).
        guild_roles: all of the guild's roles, id and name (`GuildRoleCol`).
        policy: managed role names, access-granting statuses and exempt Discord ids.
        exceptions: the access exceptions live on the day checked (`ExceptionCol`); each gives
            its role to an account that would otherwise expect none.

    Returns:
        One row per issue with the columns of `IssueCol`, ordered by type (as listed in
        `DriftType`), then member id, team id and Discord id.

    Raises:
        RoleResolutionError: a managed role is missing from the guild or ambiguous.
        MissingColumnsError: a frame lacks a column the engine needs.
    """
    require_columns(members, MemberCol.ALL, "members")
    require_columns(teams, TeamCol.ALL, "teams")
    require_columns(subscriptions, SubscriptionCol.ALL, "Stripe subscriptions")
    require_columns(guild_member_roles, GuildMemberRoleCol.ALL, "guild member roles")
    exceptions = empty_exceptions() if exceptions is None else exceptions
    require_columns(exceptions, ExceptionCol.ALL, "access exceptions")
    exceptions = exceptions.sort_values(ExceptionCol.ID, key=_numeric_ids, kind="stable")
    managed_role_ids = resolve_managed_role_ids(guild_roles, policy.roles)
    teams = teams.drop_duplicates(TeamCol.ID).reset_index(drop=True)
    members = members.reset_index(drop=True)

    # Join keys become integer codes once; every join below is numpy indexing.
    sub_cust, member_cust, team_cust = _shared_codes(
        subscriptions[SubscriptionCol.CUSTOMER_ID],
        members[MemberCol.STRIPE_CUSTOMER_ID],
        teams[TeamCol.STRIPE_CUSTOMER_ID],
    )
    customers = _summarize_customers(
        subscriptions,
        sub_cust,
        _code_count(sub_cust, member_cust, team_cust),
        policy.granting_statuses,
    )
    member_team_code, team_code = _shared_codes(members[MemberCol.TEAM_ID], teams[TeamCol.ID])
    team_row = np.full(_code_count(member_team_code, team_code) + 1, _NO_KEY)
    named = team_code >= 0
    team_row[team_code[named]] = np.flatnonzero(named)
    member_team_row = team_row[member_team_code]
    member_billing = np.where(
        member_team_row >= 0, _append_sentinel(team_cust)[member_team_row], member_cust
    )
    guild = _GuildIndex.build(members, guild_member_roles, managed_role_ids, policy, exceptions)
    granted = _member_grants(members, exceptions, guild)
    exception_ids = _exception_ids(exceptions)

    return _finish(
        [
            _access_issues(
                members,
                teams,
                member_team_row,
                member_billing,
                customers,
                guild,
                (*granted, exception_ids),
            ),
            _orphan_issues(guild_member_roles, guild),
            _excepted_account_issues(guild_member_roles, guild, exception_ids),
            _stale_team_issues(teams, team_cust, customers),
            _stale_member_issues(members, member_team_row, member_cust, customers),
        ],
        subscriptions,
        policy,
        exceptions,
    )


_EXCEPTION_BITS = {"squire": SQUIRE, "knight": KNIGHT, "lord": LORD}


def _numeric_ids(ids: pd.Series) -> pd.Series:
    """Exception ids in numeric order, so the newest exception of a subject is the last."""
    return pd.to_numeric(ids, errors="coerce")


def _exception_bits(exceptions: pd.DataFrame) -> np.ndarray:
    kinds = exceptions[ExceptionCol.ROLE].astype("str").str.lower()
    return kinds.map(_EXCEPTION_BITS).fillna(0).to_numpy(dtype="int64")


def _member_grants(
    members: pd.DataFrame, exceptions: pd.DataFrame, guild: _GuildIndex
) -> tuple[np.ndarray, np.ndarray]:
    """Per member, the role bit an exception gives it and that exception's row in `exceptions`
    (0 and -1 when none does): its own exception by member id, else one on its account."""
    bits = guild.granted[guild.member_code]
    rows = guild.granted_by[guild.member_code]
    own = exceptions[ExceptionCol.MEMBER_ID].notna().to_numpy()
    if own.any():
        own_rows = np.flatnonzero(own)
        # A member's last exception is the one that counts (`exceptions` is in id order).
        last = own_rows[~exceptions[ExceptionCol.MEMBER_ID].iloc[own_rows[::-1]].duplicated()
                        .to_numpy()[::-1]]  # fmt: skip
        # Arrow's hash lookup: a million member ids against a few exceptions, in C++.
        at = pc.index_in(
            _arrow_strings(members[MemberCol.ID]).cast(pa.large_string()),
            value_set=_arrow_strings(exceptions[ExceptionCol.MEMBER_ID].iloc[last]).cast(
                pa.large_string()
            ),
        )
        at = pc.fill_null(at, _NO_KEY).to_numpy(zero_copy_only=False).astype("int64")
        found = at >= 0
        bits = np.where(found, _exception_bits(exceptions)[last][at], bits)
        rows = np.where(found, last[at], rows)
    return bits, rows


def _exception_ids(exceptions: pd.DataFrame) -> np.ndarray:
    """The exceptions' ids by row, with None in a last slot, so row -1 reads None."""
    return np.append(exceptions[ExceptionCol.ID].astype("str").to_numpy(dtype=object), None)


def _append_zero(values: np.ndarray) -> np.ndarray:
    return np.append(values, 0)


class _Customers:
    """Per customer code: entitled, and the row of the subscription whose status is reported."""

    def __init__(self, entitled: np.ndarray, reported_row: np.ndarray, statuses: pd.Series) -> None:
        # Both arrays end in a sentinel slot, so code -1 (no customer) reads "not entitled".
        self.entitled = entitled
        self.reported_row = reported_row
        self._statuses = statuses

    def status_fix(self, codes: np.ndarray) -> np.ndarray:
        """The value a STALE_DATABASE_STATUS fix writes for each customer code
        (docs/behaviour.md §2)."""
        stripe = pd.Series(_take(self._statuses, self.reported_row[codes]), dtype="str")
        fix = stripe.map(STRIPE_TO_DATABASE_STATUS).fillna(SubscriptionStatus.CANCELLED.value)
        return fix.where(stripe.notna(), SubscriptionStatus.NONE.value).to_numpy(dtype=object)


def _summarize_customers(
    subscriptions: pd.DataFrame,
    codes: np.ndarray,
    n_codes: int,
    granting_statuses: frozenset[str],
) -> _Customers:
    """Entitlement and reported subscription per customer (docs/behaviour.md §1).

    The reported subscription is the newest granting one, else the newest one; newest means the
    latest `created`, ties broken by the larger subscription id.
    """
    grants = subscriptions[SubscriptionCol.STATUS].isin(list(granting_statuses)).to_numpy()
    has_customer = codes >= 0
    entitled = np.zeros(n_codes + 1, dtype=bool)
    entitled[codes[grants & has_customer]] = True

    created = pd.to_numeric(subscriptions[SubscriptionCol.CREATED], errors="coerce")
    created = created.fillna(0).clip(lower=0, upper=2**33 - 1).to_numpy(dtype="int64")
    rank = (grants.astype("int64") << 33) | created
    best = np.full(n_codes + 1, -1, dtype="int64")
    np.maximum.at(best, codes[has_customer], rank[has_customer])
    candidates = np.flatnonzero(has_customer & (rank == best[codes]))
    per_customer = np.bincount(codes[candidates], minlength=n_codes)
    tied = per_customer[codes[candidates]] > 1
    reported_row = np.full(n_codes + 1, _NO_KEY, dtype="int64")
    reported_row[codes[candidates[~tied]]] = candidates[~tied]
    if tied.any():  # rare: equal `created` within one customer; settle by subscription id
        rows = candidates[tied]
        ties = pd.DataFrame(
            {
                "code": codes[rows],
                "id": subscriptions[SubscriptionCol.ID].iloc[rows].astype("str").to_numpy(),
                "row": rows,
            }
        ).sort_values(["code", "id"])
        last = ties.drop_duplicates("code", keep="last")
        reported_row[last["code"].to_numpy()] = last["row"].to_numpy()
    return _Customers(entitled, reported_row, subscriptions[SubscriptionCol.STATUS])


class _GuildIndex:
    """The guild snapshot keyed by Discord-id code, each array with a trailing sentinel slot."""

    def __init__(self, **arrays: np.ndarray) -> None:
        self.member_code: np.ndarray = arrays["member_code"]
        self.guild_code: np.ndarray = arrays["guild_code"]
        self.held: np.ndarray = arrays["held"]
        self.in_guild: np.ndarray = arrays["in_guild"]
        self.is_bot: np.ndarray = arrays["is_bot"]
        self.claimed: np.ndarray = arrays["claimed"]
        self.exempt: np.ndarray = arrays["exempt"]
        self.first_row: np.ndarray = arrays["first_row"]  # the account's first guild row
        self.granted: np.ndarray = arrays["granted"]  # role bit an exception gives the account
        self.granted_by: np.ndarray = arrays["granted_by"]  # that exception's row, or -1

    def rows_of(self, accounts: np.ndarray) -> np.ndarray:
        """The first guild row of each account flagged in `accounts` (a mask over codes), in
        row order."""
        return np.sort(self.first_row[np.flatnonzero(accounts & (self.first_row >= 0))])

    @classmethod
    def build(
        cls,
        members: pd.DataFrame,
        guild_member_roles: pd.DataFrame,
        managed_role_ids: dict[str, str],
        policy: AccessPolicy,
        exceptions: pd.DataFrame,
    ) -> _GuildIndex:
        by_account = exceptions[exceptions[ExceptionCol.DISCORD_ID].notna()]
        member_code, guild_code, exempt_code, excepted_code = _snowflake_codes(
            members[MemberCol.DISCORD_ID],
            guild_member_roles[GuildMemberRoleCol.DISCORD_ID],
            pd.Series(sorted(policy.exempt_discord_ids), dtype="str"),
            by_account[ExceptionCol.DISCORD_ID],
        )
        size = _code_count(member_code, guild_code, exempt_code, excepted_code) + 1
        bit_of_name = dict(zip(policy.roles.names(), _BITS, strict=True))
        role_keys = discord_id_keys(guild_member_roles[GuildMemberRoleCol.ROLE_ID])
        bits = np.zeros(len(role_keys), dtype="int64")
        for role_id, name in managed_role_ids.items():
            key = discord_id_keys(pd.Series([role_id], dtype="str"))[0]
            if key:  # an unusable role id must not match the rows that hold no role
                bits[role_keys == key] = bit_of_name[name]

        in_guild_rows = guild_code >= 0
        held = np.zeros(size, dtype="int64")
        np.bitwise_or.at(held, guild_code[in_guild_rows], bits[in_guild_rows])
        in_guild = np.zeros(size, dtype=bool)
        in_guild[guild_code[in_guild_rows]] = True
        # Each account's first row (reversed, so the first write of a code is the one that
        # stays): where its Discord id is read from, as written there.
        listed = np.flatnonzero(in_guild_rows)[::-1]
        first_row = np.full(size, _NO_KEY, dtype="int64")
        first_row[guild_code[listed]] = listed
        is_bot = np.zeros(size, dtype=bool)
        bot_rows = (
            in_guild_rows
            & guild_member_roles[GuildMemberRoleCol.IS_BOT].fillna(False).astype(bool).to_numpy()
        )
        is_bot[guild_code[bot_rows]] = True
        claimed = np.zeros(size, dtype=bool)
        claimed[member_code[member_code >= 0]] = True
        exempt = np.zeros(size, dtype=bool)
        exempt[exempt_code[exempt_code >= 0]] = True
        granted = np.zeros(size, dtype="int64")
        granted_by = np.full(size, _NO_KEY, dtype="int64")
        usable = excepted_code >= 0  # in id order: a later exception of an account wins
        granted[excepted_code[usable]] = _exception_bits(by_account)[usable]
        account_rows = np.flatnonzero(exceptions[ExceptionCol.DISCORD_ID].notna().to_numpy())
        granted_by[excepted_code[usable]] = account_rows[usable]
        return cls(
            member_code=member_code,
            guild_code=guild_code,
            held=held,
            in_guild=in_guild,
            is_bot=is_bot,
            claimed=claimed,
            exempt=exempt,
            first_row=first_row,
            granted=granted,
            granted_by=granted_by,
        )


def _access_issues(
    members: pd.DataFrame,
    teams: pd.DataFrame,
    member_team_row: np.ndarray,
    member_billing: np.ndarray,
    customers: _Customers,
    guild: _GuildIndex,
    granted: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> pd.DataFrame:
    """MISSING_ACCESS, UNAUTHORIZED_ACCESS, ROLE_MISMATCH, DEBTOR_MISMATCH and NOT_IN_GUILD."""
    linked = members[MemberCol.DISCORD_ID].notna().to_numpy()
    entitled = customers.entitled[member_billing]
    debtor = _flag(members[MemberCol.IS_IN_DEBTOR_STATE])
    intro = _flag(members[MemberCol.INTRO_COMPLETED])
    lord_tier = members[MemberCol.SEAT_TIER].isin([SeatTier.OWNER, SeatTier.INDIVIDUAL]).to_numpy()
    granted_bit, granted_by, exception_ids = granted
    # An exception gives its role only where the policy gives none: debtors stay Debtor and
    # entitled members keep the policy's role.
    by_exception = ~debtor & ~entitled & (granted_bit != 0)
    expected = np.select(
        [debtor, by_exception, ~entitled, ~intro, lord_tier],
        [DEBTOR, granted_bit, 0, SQUIRE, LORD],
        default=KNIGHT,
    )
    in_guild = guild.in_guild[guild.member_code]
    actual = guild.held[guild.member_code]
    member_role = (expected != 0) & (expected != DEBTOR)

    kinds = np.select(
        [
            ~linked,
            (expected != 0) & ~in_guild,
            in_guild & member_role & (actual == 0),
            in_guild & (expected == 0) & (actual != 0),
            in_guild & member_role & (actual != 0) & (actual != expected),
            in_guild & (expected == DEBTOR) & (actual != DEBTOR),
        ],
        [
            "",
            DriftType.NOT_IN_GUILD,
            DriftType.MISSING_ACCESS,
            DriftType.UNAUTHORIZED_ACCESS,
            DriftType.ROLE_MISMATCH,
            DriftType.DEBTOR_MISMATCH,
        ],
        default="",
    )
    rows = np.flatnonzero(kinds != "")
    kinds, actual, expected = kinds[rows], actual[rows], expected[rows]
    fixable = kinds != DriftType.NOT_IN_GUILD
    team_row = member_team_row[rows]
    in_team = team_row >= 0
    picked = members.iloc[rows]
    team_status = _take(teams[TeamCol.SUBSCRIPTION_STATUS], team_row)
    return pd.DataFrame(
        {
            IssueCol.TYPE: kinds,
            IssueCol.SEVERITY: np.select(
                [
                    kinds == DriftType.NOT_IN_GUILD,
                    (kinds == DriftType.UNAUTHORIZED_ACCESS) & (actual == DEBTOR),
                    (kinds == DriftType.ROLE_MISMATCH) | (kinds == DriftType.DEBTOR_MISMATCH),
                ],
                [Severity.LOW, Severity.LOW, Severity.MEDIUM],
                default=Severity.HIGH,
            ),
            IssueCol.MEMBER_ID: picked[MemberCol.ID].to_numpy(),
            # Stripped, so a fix calls Discord with the id itself (" 1001" is account 1001).
            IssueCol.DISCORD_ID: picked[MemberCol.DISCORD_ID].astype("str").str.strip().to_numpy(),
            IssueCol.TEAM_ID: _take(teams[TeamCol.ID], team_row),
            IssueCol.TEAM_NAME: _take(teams[TeamCol.NAME], team_row),
            "reported_row": customers.reported_row[member_billing[rows]],
            # The status column that governs the member: the team's when in a team.
            IssueCol.DATABASE_STATUS: np.where(
                in_team, team_status, picked[MemberCol.SUBSCRIPTION_STATUS].to_numpy()
            ),
            "actual": actual,
            "expected": expected,
            "add": np.where(fixable, expected & ~actual, 0),
            "remove": np.where(fixable, actual & ~expected, 0),
            # For descriptions: an id no account can have, a team id that names no team.
            "unusable_id": guild.member_code[rows] < 0,
            "missing_team": np.where(
                ~in_team, picked[MemberCol.TEAM_ID].to_numpy(dtype=object, na_value=None), None
            ),
            IssueCol.ACCESS_EXCEPTION: exception_ids[
                np.where(by_exception[rows], granted_by[rows], _NO_KEY)
            ],
        }
    )


def _orphan_issues(guild_member_roles: pd.DataFrame, guild: _GuildIndex) -> pd.DataFrame:
    """ORPHANED_ACCESS: guild accounts holding managed roles that no member record claims."""
    orphan = (guild.held != 0) & ~guild.claimed & ~guild.is_bot & ~guild.exempt
    orphan &= guild.granted == 0
    rows = guild.rows_of(orphan)
    held = guild.held[guild.guild_code[rows]]
    return pd.DataFrame(
        {
            IssueCol.TYPE: DriftType.ORPHANED_ACCESS.value,
            IssueCol.SEVERITY: Severity.HIGH.value,
            IssueCol.DISCORD_ID: guild_member_roles[GuildMemberRoleCol.DISCORD_ID]
            .iloc[rows]
            .to_numpy(),
            "actual": held,
            "expected": 0,
            "add": 0,
            "remove": held,
        }
    )


def _excepted_account_issues(
    guild_member_roles: pd.DataFrame, guild: _GuildIndex, exception_ids: np.ndarray
) -> pd.DataFrame:
    """MISSING_ACCESS and ROLE_MISMATCH of guild accounts that no member record claims but an
    exception gives a role."""
    codes = guild.guild_code
    rows = guild.rows_of((guild.granted != 0) & ~guild.claimed)
    held = guild.held[codes[rows]]
    expected = guild.granted[codes[rows]]
    kinds = np.select(
        [held == 0, held != expected],
        [DriftType.MISSING_ACCESS.value, DriftType.ROLE_MISMATCH.value],
        default="",
    )
    drifted = kinds != ""
    rows, held, expected, kinds = rows[drifted], held[drifted], expected[drifted], kinds[drifted]
    return pd.DataFrame(
        {
            IssueCol.TYPE: kinds,
            IssueCol.SEVERITY: np.where(
                kinds == DriftType.MISSING_ACCESS, Severity.HIGH.value, Severity.MEDIUM.value
            ),
            IssueCol.DISCORD_ID: guild_member_roles[GuildMemberRoleCol.DISCORD_ID]
            .iloc[rows]
            .to_numpy(),
            "actual": held,
            "expected": expected,
            "add": expected & ~held,
            "remove": held & ~expected,
            IssueCol.ACCESS_EXCEPTION: exception_ids[guild.granted_by[codes[rows]]],
        }
    )


def _stale_team_issues(
    teams: pd.DataFrame, team_cust: np.ndarray, customers: _Customers
) -> pd.DataFrame:
    """STALE_DATABASE_STATUS for each team's own cached status."""
    entitled = customers.entitled[team_cust]
    status = teams[TeamCol.SUBSCRIPTION_STATUS]
    rows = np.flatnonzero(status.isin(list(DATABASE_GRANTING_STATUSES)).to_numpy() != entitled)
    rows, fix = _changing(rows, status, team_cust, customers)
    picked = teams.iloc[rows]
    return pd.DataFrame(
        {
            IssueCol.TYPE: DriftType.STALE_DATABASE_STATUS.value,
            IssueCol.SEVERITY: Severity.LOW.value,
            IssueCol.TEAM_ID: picked[TeamCol.ID].to_numpy(),
            IssueCol.TEAM_NAME: picked[TeamCol.NAME].to_numpy(),
            IssueCol.DATABASE_STATUS: picked[TeamCol.SUBSCRIPTION_STATUS].to_numpy(),
            IssueCol.STATUS_FIX: fix,
            "reported_row": customers.reported_row[team_cust[rows]],
            "stale_subject": "team",
        }
    )


def _stale_member_issues(
    members: pd.DataFrame,
    member_team_row: np.ndarray,
    member_cust: np.ndarray,
    customers: _Customers,
) -> pd.DataFrame:
    """STALE_DATABASE_STATUS for members outside an existing team, linked or not."""
    entitled = customers.entitled[member_cust]
    status = members[MemberCol.SUBSCRIPTION_STATUS]
    db_grants = status.isin(list(DATABASE_GRANTING_STATUSES)).to_numpy()
    rows = np.flatnonzero((member_team_row < 0) & (db_grants != entitled))
    rows, fix = _changing(rows, status, member_cust, customers)
    picked = members.iloc[rows]
    return pd.DataFrame(
        {
            IssueCol.TYPE: DriftType.STALE_DATABASE_STATUS.value,
            IssueCol.SEVERITY: Severity.LOW.value,
            IssueCol.MEMBER_ID: picked[MemberCol.ID].to_numpy(),
            IssueCol.DISCORD_ID: picked[MemberCol.DISCORD_ID].to_numpy(),
            IssueCol.DATABASE_STATUS: picked[MemberCol.SUBSCRIPTION_STATUS].to_numpy(),
            IssueCol.STATUS_FIX: fix,
            "reported_row": customers.reported_row[member_cust[rows]],
            "stale_subject": "member",
        }
    )


def _changing(
    rows: np.ndarray, status: pd.Series, customer: np.ndarray, customers: _Customers
) -> tuple[np.ndarray, np.ndarray]:
    """The stale `rows` whose fix would change their column, and the value it writes.

    A column can disagree with Stripe on access and still hold what its fix writes (PAST_DUE when
    `past_due` does not grant, CANCELLED when `unpaid` does): rewriting it would be "fixed" every
    day and change nothing, so such a row is no issue.
    """
    fix = customers.status_fix(customer[rows])
    changes = fix != _take(status, rows)
    return rows[changes], fix[changes]


def _flag(column: pd.Series) -> np.ndarray:
    return column.fillna(False).astype(bool).to_numpy()


def _take(column: pd.Series, rows: np.ndarray) -> np.ndarray:
    """`column[rows]` as objects, with row -1 giving None."""
    taken = np.full(len(rows), None, dtype=object)
    present = rows >= 0
    if present.any():
        taken[present] = column.iloc[rows[present]].to_numpy(dtype=object, na_value=None)
    return taken


def _code_count(*codes: np.ndarray) -> int:
    return max(c.max(initial=_NO_KEY) for c in codes) + 1


def _append_sentinel(codes: np.ndarray) -> np.ndarray:
    return np.append(codes, _NO_KEY)


def _arrow_strings(column: pd.Series) -> pa.Array | pa.ChunkedArray:
    if column.dtype != "str":
        column = column.astype("str")
    return pa.array(column.array)


def _shared_codes(*columns: pd.Series) -> list[np.ndarray]:
    """Integer codes for string keys, equal across columns for equal strings; -1 when missing.

    One dictionary encoding for all columns, so the joins that follow are numpy indexing.
    """
    chunks = pa.chunked_array([_arrow_strings(c) for c in columns], type=pa.large_string())
    return _split_codes(chunks.dictionary_encode(), columns)


def discord_id_keys(column: pd.Series) -> np.ndarray:
    """Discord ids as unsigned integers, since Discord compares them as integers.

    Surrounding whitespace is ignored (`" 1001 "` is account 1001). An id that is not 1-19 ASCII
    digits, or is zero, cannot be a Discord account: it becomes 0, which matches nothing.
    """
    strings = pc.utf8_trim_whitespace(_arrow_strings(column))
    usable = pc.and_(pc.ascii_is_decimal(strings), pc.less_equal(pc.utf8_length(strings), 19))
    numbers = pc.cast(pc.if_else(usable, strings, "0"), pa.uint64())
    return pc.fill_null(numbers, 0).to_numpy(zero_copy_only=False).astype("uint64")


def _snowflake_codes(*columns: pd.Series) -> list[np.ndarray]:
    """Like `_shared_codes`, keyed by a Discord id's integer value; -1 when missing or unusable."""
    keys = [discord_id_keys(c) for c in columns]
    encoded = pa.chunked_array(
        [pa.array(k, mask=k == 0) for k in keys], type=pa.uint64()
    ).dictionary_encode()
    return _split_codes(encoded, columns)


def _split_codes(encoded: pa.ChunkedArray, columns: tuple[pd.Series, ...]) -> list[np.ndarray]:
    indices = pa.chunked_array([chunk.indices for chunk in encoded.chunks], type=pa.int32())
    codes = pc.fill_null(indices, _NO_KEY).to_numpy().astype("int64")
    bounds = np.cumsum([0, *(len(c) for c in columns)])
    return [codes[start:end] for start, end in itertools.pairwise(bounds)]


def _finish(
    parts: list[pd.DataFrame],
    subscriptions: pd.DataFrame,
    policy: AccessPolicy,
    exceptions: pd.DataFrame,
) -> pd.DataFrame:
    """Concatenate the parts, fill in statuses, role names and descriptions, order the rows."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_issue_table()
    issues = pd.concat(parts, ignore_index=True)
    issues["unusable_id"] = issues["unusable_id"].eq(True) if "unusable_id" in issues else False
    for col in ("actual", "expected", "add", "remove", "reported_row"):
        default = _NO_KEY if col == "reported_row" else 0
        issues[col] = issues[col].fillna(default).astype("int64") if col in issues else default
    for col in (*IssueCol.ALL, "stale_subject", "missing_team"):
        if col not in issues:
            issues[col] = None
    stripe = pd.Series(
        _take(subscriptions[SubscriptionCol.STATUS], issues["reported_row"].to_numpy()),
        dtype="str",
    )
    issues[IssueCol.STRIPE_STATUS] = stripe
    names = _mask_names(policy)
    issues[IssueCol.DISCORD_ROLES] = issues["actual"].map(names)
    issues[IssueCol.ROLES_TO_ADD] = issues["add"].map(names)
    issues[IssueCol.ROLES_TO_REMOVE] = issues["remove"].map(names)
    single = dict(zip(_BITS, policy.roles.names(), strict=True))
    issues[IssueCol.EXPECTED_ROLE] = issues["expected"].map(single)
    issues[IssueCol.DESCRIPTION] = _describe(issues, names, _exception_notes(exceptions, policy))

    ordered = issues.reindex(columns=IssueCol.ALL)
    for col in IssueCol.ALL:
        if col not in _TUPLE_COLUMNS:
            ordered[col] = ordered[col].astype("str")
    type_rank = pd.Categorical(ordered[IssueCol.TYPE], categories=_TYPE_ORDER).codes
    ordered.insert(0, "_type_rank", type_rank)
    ordered = ordered.sort_values(
        ["_type_rank", IssueCol.MEMBER_ID, IssueCol.TEAM_ID, IssueCol.DISCORD_ID],
        na_position="first",
        kind="stable",
    )
    return ordered.drop(columns="_type_rank").reset_index(drop=True)


_TUPLE_COLUMNS = (IssueCol.DISCORD_ROLES, IssueCol.ROLES_TO_ADD, IssueCol.ROLES_TO_REMOVE)


def _mask_names(policy: AccessPolicy) -> dict[int, tuple[str, ...]]:
    """Every possible role bit mask → its role names, sorted."""
    pairs = list(zip(_BITS, policy.roles.names(), strict=True))
    return {mask: tuple(sorted(name for bit, name in pairs if mask & bit)) for mask in range(16)}


def _exception_notes(exceptions: pd.DataFrame, policy: AccessPolicy) -> pd.Series:
    """Per exception id, what an issue it touches adds to its description."""
    single = dict(zip(_BITS, policy.roles.names(), strict=True))
    role = pd.Series(_exception_bits(exceptions), index=exceptions.index).map(single)
    ids = exceptions[ExceptionCol.ID].astype("str")
    notes = "; access exception #" + ids + " gives " + role
    notes = notes + " (" + exceptions[ExceptionCol.REASON].astype("str") + ")"
    return pd.Series(notes.to_numpy(), index=ids.to_numpy()).groupby(level=0).last()


def _describe(
    issues: pd.DataFrame, names: dict[int, tuple[str, ...]], exception_notes: pd.Series
) -> pd.Series:
    """Plain-words descriptions: what was expected and what was found."""
    text_of = {mask: ", ".join(roles) or "no managed role" for mask, roles in names.items()}
    held = issues["actual"].map(text_of).astype("str")
    expected = issues[IssueCol.EXPECTED_ROLE].fillna("").astype("str")
    stripe = issues[IssueCol.STRIPE_STATUS].astype("str")
    team = issues[IssueCol.TEAM_NAME].astype("str")
    kind = issues[IssueCol.TYPE]
    descriptions = pd.Series("", index=issues.index, dtype="str")

    def fill(mask: pd.Series, *parts: str | pd.Series) -> None:
        rows = mask.to_numpy().nonzero()[0]
        if not len(rows):
            return
        text: Any = ""
        for part in parts:
            text = text + (part.iloc[rows] if isinstance(part, pd.Series) else part)
        descriptions.iloc[rows] = text

    missing_team = issues["missing_team"].astype("str")
    billing = (
        ("Stripe " + stripe).fillna("no Stripe subscription")
        + (" (team " + team + ")").fillna("")
        + (" (team id '" + missing_team + "' names no team)").fillna("")
    )
    excepted = issues[IssueCol.ACCESS_EXCEPTION].notna()
    billing = billing.where(~(excepted & issues[IssueCol.MEMBER_ID].isna()), "No member record")
    bad_id = issues["unusable_id"]
    given_id = issues[IssueCol.DISCORD_ID].astype("str")
    debtor = "Member is in debtor state: "
    not_in_guild = kind == DriftType.NOT_IN_GUILD
    expects_debtor = issues["expected"] == DEBTOR
    fill(
        kind == DriftType.MISSING_ACCESS,
        billing,
        " but Discord has no member role (expected ",
        expected,
        ")",
    )
    fill(
        kind == DriftType.UNAUTHORIZED_ACCESS,
        billing,
        " but Discord has ",
        held,
        " (expected no managed role)",
    )
    fill(
        kind == DriftType.ROLE_MISMATCH, billing, ": expected ", expected, " but Discord has ", held
    )
    fill(kind == DriftType.DEBTOR_MISMATCH, debtor, "expected Debtor only but Discord has ", held)
    fill(
        kind == DriftType.ORPHANED_ACCESS,
        "Discord account holds ",
        held,
        " but no member record has this Discord id",
    )
    fill(
        not_in_guild & expects_debtor & ~bad_id,
        debtor,
        "expected Debtor but the Discord account is not in the server",
    )
    fill(
        not_in_guild & ~expects_debtor & ~bad_id,
        billing,
        ": expected ",
        expected,
        " but the Discord account is not in the server",
    )
    # The id itself is unusable: say so, rather than blame the account for being absent.
    fill(
        not_in_guild & expects_debtor & bad_id,
        debtor,
        "expected Debtor but the member's Discord id '",
        given_id,
        "' is not a Discord id (digits), so no account in the server can be theirs",
    )
    fill(
        not_in_guild & ~expects_debtor & bad_id,
        billing,
        ": expected ",
        expected,
        " but the member's Discord id '",
        given_id,
        "' is not a Discord id (digits), so no account in the server can be theirs",
    )
    stale = kind == DriftType.STALE_DATABASE_STATUS
    subject = ("team " + team).where(issues["stale_subject"] == "team", "member")
    fill(
        stale,
        "Database has ",
        subject,
        " as ",
        issues[IssueCol.DATABASE_STATUS].astype("str").fillna("no status"),
        " but ",
        ("Stripe says " + stripe).fillna("Stripe has no subscription"),
        " (should be ",
        issues[IssueCol.STATUS_FIX].astype("str"),
        ")",
    )
    if excepted.any():
        notes = issues.loc[excepted, IssueCol.ACCESS_EXCEPTION].map(exception_notes)
        descriptions[excepted] = descriptions[excepted] + notes.astype("str")
    return descriptions


def empty_issue_table() -> pd.DataFrame:
    """The drift issue table with no rows."""
    return pd.DataFrame(
        {col: pd.Series(dtype="object" if col in _TUPLE_COLUMNS else "str") for col in IssueCol.ALL}
    )
