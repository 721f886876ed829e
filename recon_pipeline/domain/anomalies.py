"""Bad data in the snapshots: what to warn about, and which fixes it makes unsafe.

The drift engine decides each member on its own (docs/behaviour.md §2). Some kinds of bad data
would turn that into a wrong change, so their fixes are withheld (the issue is still reported,
with the reason in its description; docs/behaviour.md §4):

- one Discord account linked to several member records: each record would pull the account's
  roles its own way (a paying member's role removed because a lapsed record shares the id, then
  granted back the next day);
- a Stripe status this product does not know, on any subscription of the billing customer (not
  only the one whose status is reported): access is not taken away, nor a cached status
  downgraded, while a status whose meaning is unknown might be the one that pays;
- a guild account whose id is written, malformed, in a member record (`<@1003>`, `1003.0`): the
  account looks orphaned only because its member's link cannot be read, so its roles stay.

Everything else odd (an id that cannot be a Discord id, a team id that names no team, a cached
status outside the app's enum, a customer id shared by several records) has a defined meaning
in the engine and is only reported, as warnings an operator can act on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recon_pipeline.domain.columns import (
    IssueCol,
    MemberCol,
    SubscriptionCol,
    TeamCol,
    require_columns,
)
from recon_pipeline.domain.drift import discord_id_keys
from recon_pipeline.domain.policy import (
    DATABASE_GRANTING_STATUSES,
    STRIPE_SUBSCRIPTION_STATUSES,
    DriftType,
    SeatTier,
    SubscriptionStatus,
)

EXAMPLES = 3  # ids named per warning; the count says how many there are
_ACCESS_TYPES = frozenset(
    {
        DriftType.MISSING_ACCESS,
        DriftType.UNAUTHORIZED_ACCESS,
        DriftType.ROLE_MISMATCH,
        DriftType.DEBTOR_MISMATCH,
    }
)


def withhold_unsafe_fixes(
    issues: pd.DataFrame,
    members: pd.DataFrame,
    *,
    teams: pd.DataFrame,
    subscriptions: pd.DataFrame,
) -> pd.DataFrame:
    """The issue table with no fix planned where bad data makes the fix unsafe.

    A withheld issue keeps its type and severity; its `roles_to_add` and `roles_to_remove`
    become empty and its `status_fix` missing (so no action is planned for it); why goes in
    its `fix_withheld` column, and closes its description for readers of the report.

    Args:
        issues: the drift issue table (`IssueCol`).
        members: the `"Member"` snapshot the table was computed from (`MemberCol`).
        teams: the `"Team"` snapshot the table was computed from (`TeamCol`).
        subscriptions: the Stripe subscriptions it was computed from (`SubscriptionCol`).
    """
    require_columns(issues, IssueCol.ALL, "drift issues")
    require_columns(members, MemberCol.ALL, "members")
    require_columns(teams, TeamCol.ALL, "teams")
    require_columns(subscriptions, SubscriptionCol.ALL, "Stripe subscriptions")
    frame = issues.reset_index(drop=True).copy()
    reasons = pd.Series(None, index=frame.index, dtype="str")
    access = frame[IssueCol.TYPE].isin(list(_ACCESS_TYPES))
    keys = pd.Series(discord_id_keys(frame[IssueCol.DISCORD_ID]), index=frame.index)

    claims = _shared_accounts(members)
    if len(claims):
        shared = access & keys.isin(claims.index)
        for row in np.flatnonzero(shared.to_numpy()):
            claimants = claims[keys.iloc[row]]
            reasons.iloc[row] = (
                f"Discord account {frame[IssueCol.DISCORD_ID].iloc[row]} is linked to "
                f"{len(claimants)} member records ({_names(claimants)}); correct the links in "
                "the database first"
            )

    hinted = _ids_hidden_in_unusable_links(members)
    if hinted:
        orphan = (frame[IssueCol.TYPE] == DriftType.ORPHANED_ACCESS) & reasons.isna()
        for row in np.flatnonzero((orphan & keys.isin(list(hinted))).to_numpy()):
            member_id, written = hinted[int(keys.iloc[row])]
            reasons.iloc[row] = (
                f"member {member_id}'s Discord id {written!r} looks like this "
                "account's id written wrongly; correct it in the database first"
            )

    unknown = _unknown_statuses_of_billing_customers(frame, members, teams, subscriptions)
    removal = (frame[IssueCol.TYPE] == DriftType.UNAUTHORIZED_ACCESS) & unknown.notna()
    removal &= reasons.isna()
    reasons[removal] = unknown[removal].map(
        lambda statuses: _unknown_reason(statuses, "access is not taken away")
    )
    fix = frame[IssueCol.STATUS_FIX]
    downgrade = (
        (frame[IssueCol.TYPE] == DriftType.STALE_DATABASE_STATUS)
        & frame[IssueCol.DATABASE_STATUS].isin(list(DATABASE_GRANTING_STATUSES))
        & fix.notna()
        & ~fix.isin(list(DATABASE_GRANTING_STATUSES))
        & unknown.notna()
        & reasons.isna()
    )
    reasons[downgrade] = unknown[downgrade].map(
        lambda statuses: _unknown_reason(statuses, "the database status is not downgraded")
    )

    withheld = reasons.notna()
    if withheld.any():
        for col in (IssueCol.ROLES_TO_ADD, IssueCol.ROLES_TO_REMOVE):
            frame[col] = frame[col].where(~withheld, pd.Series([()] * len(frame), dtype=object))
        frame[IssueCol.STATUS_FIX] = frame[IssueCol.STATUS_FIX].where(~withheld)
        frame[IssueCol.FIX_WITHHELD] = frame[IssueCol.FIX_WITHHELD].where(~withheld, reasons)
        frame[IssueCol.DESCRIPTION] = frame[IssueCol.DESCRIPTION].where(
            ~withheld, frame[IssueCol.DESCRIPTION] + "; not fixed: " + reasons
        )
    return frame


def data_anomalies(
    members: pd.DataFrame, teams: pd.DataFrame, subscriptions: pd.DataFrame
) -> list[str]:
    """One plain-words warning per kind of bad data found in the snapshots (empty when none)."""
    require_columns(members, MemberCol.ALL, "members")
    require_columns(teams, TeamCol.ALL, "teams")
    require_columns(subscriptions, SubscriptionCol.ALL, "Stripe subscriptions")
    found = []
    discord = members[MemberCol.DISCORD_ID]
    unusable = discord.notna() & (discord_id_keys(discord) == 0)
    if unusable.any():
        found.append(
            f"{int(unusable.sum())} member(s) have a Discord id that is not a Discord id "
            f"(digits), so no account can match them: {_names(members.loc[unusable, MemberCol.ID])}"
        )
    for claimants in _shared_accounts(members).head(EXAMPLES):
        found.append(
            f"one Discord account is linked to {len(claimants)} member records "
            f"({_names(claimants)}): their role fixes are withheld"
        )
    team_id = members[MemberCol.TEAM_ID]
    dangling = team_id.notna() & ~team_id.isin(teams[TeamCol.ID].dropna().tolist())
    if dangling.any():
        found.append(
            f"{int(dangling.sum())} member(s) name a team that does not exist, so their own "
            f"Stripe customer is used: {_names(members.loc[dangling, MemberCol.ID])}"
        )
    owners = pd.concat(
        [
            pd.DataFrame(
                {"customer": members[MemberCol.STRIPE_CUSTOMER_ID], "who": members[MemberCol.ID]}
            ),
            pd.DataFrame(
                {"customer": teams[TeamCol.STRIPE_CUSTOMER_ID], "who": "team " + teams[TeamCol.ID]}
            ),
        ],
        ignore_index=True,
    ).dropna()
    shared_customers = owners[owners["customer"].duplicated(keep=False)]
    if len(shared_customers):
        found.append(
            f"{shared_customers['customer'].nunique()} Stripe customer id(s) belong to several "
            f"records: {_names(shared_customers['who'])}"
        )
    enum = [s.value for s in SubscriptionStatus]
    for label, frame, column, ids in (
        ("member(s)", members, MemberCol.SUBSCRIPTION_STATUS, MemberCol.ID),
        ("team(s)", teams, TeamCol.SUBSCRIPTION_STATUS, TeamCol.ID),
    ):
        odd = frame[column].notna() & ~frame[column].isin(enum)
        if odd.any():
            found.append(
                f"{int(odd.sum())} {label} have a subscriptionStatus outside "
                f"{', '.join(enum)} (read as not paying): {_names(frame.loc[odd, ids])}"
            )
    tiers = [t.value for t in SeatTier]
    odd_tier = members[MemberCol.SEAT_TIER].notna() & ~members[MemberCol.SEAT_TIER].isin(tiers)
    if odd_tier.any():
        found.append(
            f"{int(odd_tier.sum())} member(s) have a seatTier outside {', '.join(tiers)} (read "
            f"as a team seat): {_names(members.loc[odd_tier, MemberCol.ID])}"
        )
    status = subscriptions[SubscriptionCol.STATUS]
    unknown = status.notna() & ~status.isin(list(STRIPE_SUBSCRIPTION_STATUSES))
    if unknown.any():
        found.append(
            f"{int(unknown.sum())} Stripe subscription(s) have a status recon_pipeline does not "
            f"know ({_names(status[unknown].drop_duplicates())}): they grant no access and no "
            "access is taken away on them"
        )
    return found


def _unknown_statuses_of_billing_customers(
    issues: pd.DataFrame, members: pd.DataFrame, teams: pd.DataFrame, subscriptions: pd.DataFrame
) -> pd.Series:
    """Per issue, the statuses recon_pipeline does not know among its billing customer's
    subscriptions, as a sorted tuple; missing when there are none.

    The billing customer (docs/behaviour.md §1) is the team's when the issue names a team (the
    engine names only teams that exist), else the member's own.
    """
    found = pd.Series(None, index=issues.index, dtype=object)
    status = subscriptions[SubscriptionCol.STATUS]
    unknown = status.notna() & ~status.isin(list(STRIPE_SUBSCRIPTION_STATUSES))
    if not unknown.any():
        return found
    by_customer = (
        pd.DataFrame(
            {
                "customer": subscriptions.loc[unknown, SubscriptionCol.CUSTOMER_ID],
                "status": status[unknown],
            }
        )
        .dropna()
        .astype("str")
        .drop_duplicates()
        .sort_values("status")
        .groupby("customer")["status"]
        .agg(tuple)
    )

    def by_record(ids: pd.Series, customers: pd.Series) -> pd.Series:
        """Record id → its customer's unknown statuses, for records whose customer has any."""
        statuses = pd.Series(customers.astype("str").map(by_customer).to_numpy(), index=ids)
        statuses = statuses[statuses.notna() & statuses.index.notna()]
        # A duplicated id (the database forbids it) counts if any of its records does.
        return statuses.groupby(level=0).first()

    teams = teams.drop_duplicates(TeamCol.ID)  # as the engine does: the first row of an id
    of_team = by_record(teams[TeamCol.ID].astype("str"), teams[TeamCol.STRIPE_CUSTOMER_ID])
    of_member = by_record(
        members[MemberCol.ID].astype("str"), members[MemberCol.STRIPE_CUSTOMER_ID]
    )
    in_team = issues[IssueCol.TEAM_ID].notna()
    found[in_team] = issues.loc[in_team, IssueCol.TEAM_ID].map(of_team)
    own = ~in_team & issues[IssueCol.MEMBER_ID].notna()
    found[own] = issues.loc[own, IssueCol.MEMBER_ID].map(of_member)
    return found


def _unknown_reason(statuses: tuple[str, ...], consequence: str) -> str:
    quoted = ", ".join(f"'{s}'" for s in statuses)
    if len(statuses) == 1:
        return f"Stripe status {quoted} is not one recon_pipeline knows, so {consequence} on it"
    return f"Stripe statuses {quoted} are not ones recon_pipeline knows, so {consequence} on them"


def _shared_accounts(members: pd.DataFrame) -> pd.Series:
    """Discord account key → the member ids linked to it, for accounts with several links."""
    keys = pd.Series(discord_id_keys(members[MemberCol.DISCORD_ID]), index=members.index)
    usable = keys != 0
    counts = keys[usable].value_counts()
    shared = counts[counts > 1].index
    picked = usable & keys.isin(shared)
    if not picked.any():
        return pd.Series(dtype=object)
    ids = members.loc[picked, MemberCol.ID].astype("str")
    return ids.groupby(keys[picked]).agg(lambda s: tuple(sorted(s)))


def _ids_hidden_in_unusable_links(members: pd.DataFrame) -> dict[int, tuple[str, str]]:
    """Account id → (member id, text) for member Discord ids that are not ids but contain one
    run of digits that is (`<@1003>`, `1003.0`, `id 1003`)."""
    discord = members[MemberCol.DISCORD_ID]
    unusable = discord.notna() & (discord_id_keys(discord) == 0)
    texts = discord[unusable].astype("str")
    digits = texts.str.extract(r"([0-9]+)", expand=False)
    hinted = pd.DataFrame(
        {
            "key": discord_id_keys(digits),  # 0 when no run, too long or zero
            "member": members.loc[unusable, MemberCol.ID].astype("str"),
            "text": texts,
        }
    )
    hinted = hinted[hinted["key"] != 0].drop_duplicates("key")
    return {
        int(key): (member, text) for key, member, text in hinted.itertuples(index=False, name=None)
    }


def _names(values: pd.Series | tuple[str, ...]) -> str:
    values = [str(v) for v in values]
    shown = ", ".join(values[:EXAMPLES])
    return shown + (f" and {len(values) - EXAMPLES} more" if len(values) > EXAMPLES else "")
