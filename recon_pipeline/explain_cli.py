"""`recon-pipeline explain SUBJECT`: one member's access, and why, for the operator answering
"I paid but I have no role" (docs/behaviour.md §13)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import pandas as pd
from pydantic import SecretStr

from recon_pipeline.clients.frame_store import open_frame_store
from recon_pipeline.domain.columns import SubscriptionCol
from recon_pipeline.domain.explain import live_changes, live_subjects
from recon_pipeline.domain.subject import SubjectKind
from recon_pipeline.member_lookup import Lookup, look_up
from recon_pipeline.settings import Settings, load_settings


def add_explain_parser(commands: argparse._SubParsersAction) -> None:
    explain = commands.add_parser(
        "explain",
        help="explain one member's access: records, billing, rule, roles, issues and history",
        description=(
            "Explain a member's access from the latest complete run's snapshots (no outside "
            "call unless --live): the member record(s), team, billing customer and why, each "
            "subscription, whether entitled, the expected role and the rule that decided it, "
            "the roles held, open issues and the history over the stored days."
        ),
    )
    explain.add_argument(
        "subject", help="a member id, an email, a Discord id or a Stripe customer id"
    )
    explain.add_argument(
        "--as",
        dest="kind",
        choices=[k.value for k in SubjectKind],
        help="read SUBJECT only as this kind (when it is ambiguous)",
    )
    explain.add_argument(
        "--live",
        action="store_true",
        help="also fetch the subject's subscriptions from Stripe and roles from Discord now",
    )
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    explain.set_defaults(handler=_explain)


def _explain(args: argparse.Namespace) -> int:
    settings = load_settings()
    kind = SubjectKind(args.kind) if args.kind else None
    with open_frame_store(settings.DATABASE_URL, settings.RECONCILIATION_STORAGE_URL) as store:
        found = look_up(store, args.subject, settings.access_policy(), kind=kind)
    body = found.explanation
    if args.live:
        # Imported here: the two clients (the Stripe SDK, httpx) would add a tenth of a second
        # to every lookup that does not call them.
        from recon_pipeline.clients.discord import DiscordError
        from recon_pipeline.clients.stripe import StripeSnapshotError

        try:
            body["live"] = _live(found, settings)
        except (StripeSnapshotError, DiscordError) as exc:  # their messages hold no secret
            sys.stderr.write(f"recon-pipeline: --live could not read the subject now: {exc}\n")
            return 1
    if args.json:
        json.dump(body, sys.stdout, indent=2, default=str, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(body))
    return 0


class LiveUnavailableError(RuntimeError):
    """`--live` lacks what it needs to call Stripe or Discord."""


def _needed(settings: Settings, *names: str) -> None:
    missing = [n for n in names if not getattr(settings, n)]
    if missing:
        raise LiveUnavailableError(f"--live needs {' and '.join(missing)} to be set")


def _live(found: Lookup, settings: Settings) -> dict[str, Any]:
    """The subject's subscriptions and roles now: one listing per billing customer, one GET per
    Discord account."""
    from recon_pipeline.clients.discord import DiscordClient
    from recon_pipeline.clients.stripe import StripeBilling

    customers, accounts = live_subjects(found.explanation)
    if customers:
        _needed(settings, "STRIPE_SECRET_KEY")
    if accounts:
        _needed(settings, "DISCORD_BOT_TOKEN", "DISCORD_GUILD_ID")
    frames = []
    if customers:
        with StripeBilling(
            _secret(settings.STRIPE_SECRET_KEY), api_base=settings.STRIPE_API_BASE
        ) as stripe:
            frames = [stripe.customer_subscriptions(c) for c in customers]
    subscriptions = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=list(SubscriptionCol.ALL))
    )
    roles: dict[str, list[str] | None] = {}
    if accounts:
        with DiscordClient(
            bot_token=_secret(settings.DISCORD_BOT_TOKEN),
            guild_id=str(settings.DISCORD_GUILD_ID),
            api_base=settings.DISCORD_API_BASE,
        ) as discord:
            for account in accounts:
                held = discord.member_role_ids(account)
                roles[account] = (
                    None if held is None else [found.role_names.get(r, r) for r in held]
                )
    return live_changes(found.explanation, subscriptions, roles, settings.access_policy())


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def render(body: dict[str, Any]) -> str:
    """The explanation for a person to read."""
    run = body["run"]
    lines = [
        f"{body['subject']['query']} ({body['subject']['kind']}), as run {run['id']} of "
        f"{run['day']} saw it (snapshots taken {run['snapshotsTakenAt']} UTC)",
        "",
    ]
    for member in body["members"]:
        lines += _member_lines(member)
    if not body["members"]:
        lines.append("No member record.")
        if body.get("billingCustomer"):
            lines += _billing_lines(body)
        if body.get("rule"):
            lines += _decision_lines(body)
        lines.append("")
    elif body.get("billingCustomer") and len(body["members"]) > 1:
        lines += [*_billing_lines(body), ""]
    if body["exceptions"]:
        lines.append("Access exceptions:")
        lines += [
            f"  #{e['id']} {e['role']} ({e['reason']}), added by {e['addedBy']}"
            f"{', until ' + e['expiresOn'] if e['expiresOn'] else ''}"
            f"{'' if e['inForce'] else ' (expired)'}"
            for e in body["exceptions"]
        ]
        lines.append("")
    lines.append(f"Issues this run found: {len(body['openIssues']) or 'none'}")
    for issue in body["openIssues"]:
        outcome = f" [{issue['outcome']}: {issue.get('outcomeDetail') or ''}]".replace(
            ": ]", "]"
        ) if issue.get("outcome") else ""  # fmt: skip
        lines.append(
            f"  {issue['severity']} {issue['type']} ({issue.get('status') or 'new'}, first seen "
            f"{issue.get('firstSeen') or '?'}): {issue['description']}{outcome}"
        )
    lines += ["", *_history_lines(body["history"])]
    if "live" in body:
        lines += ["", *_live_lines(body["live"])]
    return "\n".join(lines).rstrip() + "\n"


def _member_lines(member: dict[str, Any]) -> list[str]:
    team = member["team"]
    lines = [
        f"Member {member['id']} <{member['email'] or 'no email'}>",
        f"  Discord id {member['discordId'] or '(not linked)'}; cached status "
        f"{member['subscriptionStatus']}; seat {member['seatTier'] or '(none)'}; intro "
        f"{'done' if member['introCompleted'] else 'not done'}"
        f"{'; IN DEBTOR STATE' if member['isInDebtorState'] else ''}",
    ]
    if team:
        lines.append(
            f"  Team {team['id']} ({team['name']}), cached status {team['subscriptionStatus']}"
        )
    lines += _billing_lines(member)
    lines += _decision_lines(member)
    lines.append("")
    return lines


def _billing_lines(part: dict[str, Any]) -> list[str]:
    billing = part["billingCustomer"]
    lines = [f"  Billing customer: {billing['id'] or '(none)'}: {billing['why']}"]
    if not part["subscriptions"]:
        lines.append("  Subscriptions: none")
    for sub in part["subscriptions"]:
        marks = [m for m, on in (("grants access", sub["grantsAccess"]),
                                 ("reported", sub["reported"])) if on]  # fmt: skip
        lines.append(
            f"  Subscription {sub['id']}: {sub['status']}, created {sub['created']}"
            f"{' (' + ', '.join(marks) + ')' if marks else ''}"
        )
    lines.append(f"  Entitled: {'yes' if part['entitled'] else 'no'}")
    return lines


def _decision_lines(part: dict[str, Any]) -> list[str]:
    rule = part["rule"] or {}
    held = part.get("heldRoles") or {}
    where = "not in the server" if held and not held.get("inGuild") else ""
    roles = ", ".join(held.get("managed", [])) or "no managed role"
    other = ", ".join(held.get("other", []))
    return [
        f"  Expected role: {part['expectedRole'] or 'none'} (rule {rule.get('number')}: "
        f"{rule.get('text')})",
        f"  Held at the snapshot: {where or roles}{'; other roles: ' + other if other else ''}",
    ]


def _history_lines(history: dict[str, Any]) -> list[str]:
    if not history["issues"]:
        return [f"History: no issue in the {history['runsStored']} stored run(s)"]
    lines = [
        f"History over {history['runsStored']} stored run(s): first seen "
        f"{history['firstSeen']}, last seen {history['lastSeen']}"
    ]
    lines += [
        f"  {i['type']} {i['fingerprint']}: {i['firstSeen']} → {i['lastSeen']} ({i['runs']} run(s))"
        for i in history["issues"]
    ]
    for attempt in history["fixAttempts"]:
        detail = f": {attempt['detail']}" if attempt["detail"] else ""
        lines.append(
            f"  fix attempt in run {attempt['runId']} ({attempt['day']}): "
            f"{attempt['type']} {attempt['outcome']}{detail}"
        )
    if history["exceptions"]:
        lines.append(f"  access exceptions applied: #{', #'.join(history['exceptions'])}")
    return lines


def _live_lines(live: dict[str, Any]) -> list[str]:
    lines = ["Now (live):"]
    for sub in live["subscriptions"]:
        lines.append(f"  Subscription {sub['id']}: {sub['status']}")
    for account, held in live["heldRoles"].items():
        roles = ", ".join(held["managed"] + held["other"]) or "no role"
        lines.append(f"  Discord {account}: {roles if held['inGuild'] else 'not in the server'}")
    lines += [f"  changed: {c}" for c in live["changes"]] or ["  nothing changed since the "
                                                             "snapshot"]  # fmt: skip
    return lines
