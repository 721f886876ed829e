"""Admin notices (docs/behaviour.md §9): what a run tells the admins, as email text and a
Discord message.

A notice goes out when a run found issues, failed, or tripped the guard; a clean run sends
nothing. It gives the issue count, whether fixes ran and how many held, per type the count and
a few example descriptions, the run id and, when the UI's address is known, a link to the run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from recon_pipeline.domain.identity import NEW, PERSISTING
from recon_pipeline.domain.policy import DriftType

DISCORD_LIMIT = 2000
EXAMPLES_PER_TYPE = 3


@dataclass(frozen=True)
class Notice:
    subject: str
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


NOTIFY_CHANGES = "changes"
NOTIFY_ALWAYS = "always"
STALE_DAYS = 2  # a HIGH issue open this many days leads the notice
STALE_AFTER = dt.timedelta(days=STALE_DAYS)


def needs_notice(
    record: dict[str, Any],
    *,
    guard_tripped: bool,
    lapsed_exceptions: int = 0,
    notify: str,
) -> bool:
    """Whether a run's record calls for a notice: a failure, a tripped guard, access exceptions
    that lapsed since the previous run, or issues found; with `notify="changes"` only issues the
    previous run had not reported, or fixes that failed, count."""
    if record.get("failure") or guard_tripped or lapsed_exceptions:
        return True
    issues = record.get("issues") or []
    if notify == NOTIFY_CHANGES:
        return any(i.get("status") != PERSISTING or i.get("outcome") == "failed" for i in issues)
    return bool(record.get("issuesFound"))


def compose_notice(
    record: dict[str, Any],
    *,
    guard_text: str | None = None,
    run_url: str | None = None,
    examples: int = EXAMPLES_PER_TYPE,
    awaiting: int = 0,
    lapsed_exceptions: tuple[str, ...] = (),
) -> Notice:
    """The notice for one `ReconciliationRun` row (plus its status columns); `awaiting` removals
    wait for the next run's confirmation, `lapsed_exceptions` describe the access exceptions
    that stopped counting since the previous run."""
    run_id = record["id"]
    issues = record.get("issues") or []
    kind = "Verification" if record.get("isVerificationRun") else "Reconciliation"
    if record.get("failure"):
        subject = f"[recon_pipeline] {kind} run failed"
    else:
        subject = f"[recon_pipeline] {kind}: {record.get('issuesFound', 0)} issue(s) found"
    if record.get("isVerificationRun"):
        fixes = "a re-check only: nothing was changed; these fixes did not hold"
    elif record.get("fixesWithheld"):
        fixes = f"auto-fix on, but no fix was applied: {record['fixesWithheld']}"
    elif record.get("autoFixEnabled"):
        fixes = f"auto-fix on: {record.get('issuesFixed', 0)} of {len(issues)} issue(s) fixed"
    else:
        fixes = "dry run: nothing was changed (auto-fix off)"
    lines = [
        f"{kind} run {run_id} ({record.get('triggeredBy')}): {len(issues)} issue(s); {fixes}.",
    ]
    if record.get("failure"):
        lines.append(f"The run FAILED: {record['failure']}")
    if guard_text:
        lines.append(f"Blast-radius guard: {guard_text}")
    if awaiting:
        lines.append(
            f"{awaiting} removal(s) await confirmation: each is applied only if the next run "
            "finds it too."
        )
    if lapsed_exceptions:
        lines.append(
            f"Access exceptions that lapsed since the previous run: {len(lapsed_exceptions)}"
        )
        lines += [f"  - {line}" for line in lapsed_exceptions]
    lines += _leading(issues, record.get("completedAt"), examples)
    grouped: dict[str, list[dict[str, Any]]] = {}
    for issue in issues:
        grouped.setdefault(str(issue.get("type")), []).append(issue)
    for drift_type in [t.value for t in DriftType if t.value in grouped]:
        group = grouped[drift_type]
        fixed = sum(i.get("outcome") == "fixed" for i in group)
        lines.append(f"{drift_type}: {len(group)} ({fixed} fixed)")
        lines += _listed(group, examples, lambda i: str(i.get("description")))
    if run_url:
        lines.append(f"Run: {run_url}")
    return Notice(subject=subject, lines=tuple(lines))


def _leading(issues: list[dict[str, Any]], now: Any, examples: int) -> list[str]:
    """What the notice leads with: issues new since the previous run, and HIGH issues open for
    `STALE_AFTER` or more (with when they were first seen)."""
    lines = []
    new = [i for i in issues if i.get("status") == NEW]
    if new and len(new) < len(issues):
        lines.append(f"New since the previous run: {len(new)}")
        lines += _listed(new, examples, lambda i: f"{i.get('type')}: {i.get('description')}")
    if isinstance(now, dt.datetime):
        old = [
            i
            for i in issues
            if i.get("severity") == "HIGH"
            and i.get("firstSeen")
            and now - dt.datetime.fromisoformat(str(i["firstSeen"])) >= STALE_AFTER
        ]
        if old:
            lines.append(f"HIGH issues open for {STALE_DAYS} days or more: {len(old)}")
            lines += _listed(
                old, examples, lambda i: f"since {str(i['firstSeen'])[:10]}: {i.get('description')}"
            )
    return lines


def _listed(
    issues: list[dict[str, Any]], examples: int, describe: Callable[[dict[str, Any]], str]
) -> list[str]:
    """The first `examples` issues, a line each, then how many more there are."""
    lines = [f"  - {describe(i)}" for i in issues[:examples]]
    if len(issues) > examples:
        lines.append(f"  … and {len(issues) - examples} more")
    return lines


def discord_message(notice: Notice, limit: int = DISCORD_LIMIT) -> str:
    """The notice as one Discord message of at most `limit` characters.

    When it is too long, example lines are dropped from the end first (the counts, the
    failure and the link always stay), then the text is cut with a note.
    """
    head = f"**{notice.subject}**"
    lines = list(notice.lines)
    keep_last = [line for line in lines if line.startswith("Run: ")]
    body = [line for line in lines if line not in keep_last]

    def render(parts: list[str], dropped: int) -> str:
        note = [f"({dropped} example line(s) left out to fit Discord's limit)"] if dropped else []
        return "\n".join([head, *parts, *note, *keep_last])

    dropped = 0
    while len(render(body, dropped)) > limit and any(line.startswith("  ") for line in body):
        last_example = max(i for i, line in enumerate(body) if line.startswith("  "))
        del body[last_example]
        dropped += 1
    text = render(body, dropped)
    if len(text) > limit:
        cut = "\n… (cut to fit Discord's limit)"
        text = text[: limit - len(cut)] + cut
    return text
