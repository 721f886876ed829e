"""A small community in which every drift type occurs once or twice, with what must happen.

Each member is named for the case it plays. `EXPECTED_ISSUES` is what a dry run must record;
`ROLES_AFTER_FIX` is every account's role set once the fixes are applied (unmanaged roles
included, so a fix that touched one shows up).
"""

from __future__ import annotations

from recon_pipeline.domain.columns import GuildRoleCol
from recon_pipeline.sandbox.community import Community
from recon_pipeline_tests.builders import ROLE_IDS, Snapshot, account, guild, member, sub, team

GUILD_ROLE_IDS = ROLE_IDS
# The reconciliation job's assets, by their stable names (spelled out, not read from the code).
RECONCILIATION_ASSETS = (
    "membership_members",
    "membership_teams",
    "access_exceptions",
    "stripe_subscriptions",
    "discord_roles",
    "discord_member_roles",
    "drift_issues",
    "reconciliation_fixes",
    "reconciliation_run",
)


def _snapshot() -> Snapshot:
    return Snapshot(
        members=[
            member("m_ok", discord_id="1001", customer="cus_ok"),
            member("m_missing", discord_id="1002", customer="cus_missing"),
            member("m_unauth", discord_id="1003", customer="cus_unauth", status="CANCELLED"),
            member(
                "m_mismatch", discord_id="1004", customer=None, tier="TEAM_MEMBER", team="t_acme"
            ),
            member("m_debtor", discord_id="1005", customer="cus_debtor", debtor=True),
            member("m_absent", discord_id="1006", customer="cus_absent"),
            member("m_stale", discord_id="1007", customer="cus_stale", status="CANCELLED"),
            member(
                "m_lapsed_team", discord_id="1008", customer=None, tier="TEAM_MEMBER", team="t_gone"
            ),
            member("m_intro", discord_id="1009", customer="cus_intro", intro=False),
            member("m_unlinked", discord_id=None, customer=None, status="NONE"),
        ],
        teams=[
            team("t_acme", name="Acme", customer="cus_t_acme", status="ACTIVE"),
            team("t_gone", name="Gone Ltd", customer="cus_t_gone", status="ACTIVE"),
        ],
        subs=[
            sub("cus_ok", "active"),
            sub("cus_missing", "active"),
            sub("cus_unauth", "canceled"),
            sub("cus_t_acme", "active"),
            sub("cus_debtor", "active"),
            sub("cus_absent", "active"),
            sub("cus_stale", "active"),
            sub("cus_t_gone", "canceled"),
            sub("cus_intro", "trialing"),
        ],
        guild=guild(
            account("1001", "Lord", "Events"),
            account("1002"),
            account("1003", "Knight", "Moderator"),
            account("1004", "Lord"),
            account("1005", "Lord"),
            account("1007", "Lord"),
            account("1008", "Knight"),
            account("1009"),
            account("2001", "Squire"),  # no member record: orphan
            account("3001", "Lord", bot=True),  # a bot: never an orphan
        ),
    )


def scenario_community() -> Community:
    return community_of(_snapshot())


def community_of(snapshot: Snapshot) -> Community:
    """What the emulators and the database serve for `snapshot`."""
    frames = snapshot.frames()
    return Community(
        members=frames["members"],
        teams=frames["teams"],
        subscriptions=frames["subscriptions"],
        guild_member_roles=frames["guild_member_roles"],
        guild_roles=frames["guild_roles"].astype({GuildRoleCol.ID: "str"}),
    )


# (type, member id or team id or Discord id)
EXPECTED_ISSUES = {
    ("MISSING_ACCESS", "m_missing"),
    ("MISSING_ACCESS", "m_intro"),
    ("UNAUTHORIZED_ACCESS", "m_unauth"),
    ("UNAUTHORIZED_ACCESS", "m_lapsed_team"),
    ("ROLE_MISMATCH", "m_mismatch"),
    ("DEBTOR_MISMATCH", "m_debtor"),
    ("ORPHANED_ACCESS", "2001"),
    ("NOT_IN_GUILD", "m_absent"),
    ("STALE_DATABASE_STATUS", "m_stale"),
    ("STALE_DATABASE_STATUS", "t_gone"),
}
REPORT_ONLY = {("NOT_IN_GUILD", "m_absent")}

_ids = ROLE_IDS
ROLES_AFTER_FIX = {
    "1001": {_ids["Lord"], _ids["Events"]},
    "1002": {_ids["Lord"]},
    "1003": {_ids["Moderator"]},
    "1004": {_ids["Knight"]},
    "1005": {_ids["Debtor"]},
    "1007": {_ids["Lord"]},
    "1008": set(),
    "1009": {_ids["Squire"]},
    "2001": set(),
    "3001": {_ids["Lord"]},
}
# One call per role change: 1002 +Lord; 1003 -Knight; 1004 -Lord +Knight; 1005 -Lord +Debtor;
# 1008 -Knight; 1009 +Squire; 2001 -Squire.
ROLE_CHANGES = 9
STATUSES_AFTER_FIX = {("Member", "m_stale"): "ACTIVE", ("Team", "t_gone"): "CANCELLED"}


def issue_subject(issue: dict[str, object]) -> str:
    """How `EXPECTED_ISSUES` names an issue from the run record's JSON."""
    return str(issue.get("memberId") or issue.get("teamId") or issue.get("discordId"))
