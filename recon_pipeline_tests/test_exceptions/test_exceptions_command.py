"""`recon-pipeline exceptions add|list|remove` on SQLite and PostgreSQL: what each stores and
prints, and every refusal with its message (docs/behaviour.md §1)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from recon_pipeline.cli import main
from recon_pipeline.clients.access_exceptions import load_exceptions
from recon_pipeline.clients.membership_db import init_database, member_table, parse_database_url
from recon_pipeline.defs.partitions import local_day

TODAY = dt.date.fromisoformat(local_day("America/New_York"))
YESTERDAY = (TODAY - dt.timedelta(days=1)).isoformat()
NEXT_MONTH = (TODAY + dt.timedelta(days=30)).isoformat()


@pytest.fixture
def db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    engine = parse_database_url(database_url).create_engine()
    init_database(engine)
    with engine.begin() as conn:
        conn.execute(member_table.insert().values(id="m_staff", subscriptionStatus="NONE"))
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("RECONCILIATION_TIMEZONE", "America/New_York")
    yield engine
    engine.dispose()


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["exceptions", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _stored(engine: sa.Engine) -> list[dict]:
    with engine.connect() as conn:
        return load_exceptions(conn).astype(object).to_dict("records")


def test_add_stores_an_exception_for_an_account_and_one_for_a_member(
    db: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys, "add", "--discord-id", "123456789012345678", "--role", "Lord", "--reason",
        "moderator", "--by", "ana",
    )  # fmt: skip
    assert code == 0
    assert out.strip() == "Added exception #1: Discord account 123456789012345678 may hold Lord."

    code, out, _ = _run(
        capsys, "add", "--member-id", "m_staff", "--role", "knight", "--reason", "sponsor",
        "--expires", NEXT_MONTH, "--by", "ben",
    )  # fmt: skip
    assert code == 0
    assert out.strip() == f"Added exception #2: member m_staff may hold Knight until {NEXT_MONTH}."

    first, second = _stored(db)
    assert (first["discord_id"], first["role"], first["reason"], first["added_by"]) == (
        "123456789012345678",
        "lord",
        "moderator",
        "ana",
    )
    assert (second["member_id"], second["role"], second["expires_on"]) == (
        "m_staff",
        "knight",
        NEXT_MONTH,
    )


def test_list_shows_exceptions_in_force_and_all_of_them_with_all(
    db: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(capsys, "list")[1].strip() == "No access exceptions in force."
    _run(capsys, "add", "--discord-id", "42", "--role", "Squire", "--reason", "helper")
    _run(capsys, "add", "--discord-id", "43", "--role", "Lord", "--reason", "partner")
    _run(capsys, "remove", "2", "--by", "cara")
    with db.begin() as conn:  # one that has run its course since it was added
        conn.execute(
            sa.text(
                "INSERT INTO recon_pipeline_access_exception "
                "(discord_id, role, reason, added_by, added_at, expires_on) "
                "VALUES ('44', 'knight', 'trial', 'ana', :now, :expired)"
            ),
            {"now": dt.datetime(2026, 1, 1), "expired": dt.date.fromisoformat(YESTERDAY)},
        )

    code, out, _ = _run(capsys, "list")
    lines = out.strip().splitlines()
    assert code == 0
    assert lines[0].split() == ["id", "subject", "role", "expires", "status", "added", "reason"]
    assert len(lines) == 2 and lines[1].split()[:5] == ["1", "discord:42", "Squire", "never", "in"]

    code, out, _ = _run(capsys, "list", "--all")
    rows = {line.split()[0]: line for line in out.strip().splitlines()[1:]}
    assert code == 0 and set(rows) == {"1", "2", "3"}
    assert "removed" in rows["2"] and "by cara" in rows["2"]
    assert "expired" in rows["3"] and YESTERDAY in rows["3"]


def test_remove_takes_an_exception_out_of_the_next_runs_snapshot(
    db: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(capsys, "add", "--discord-id", "42", "--role", "Lord", "--reason", "staff")

    code, out, _ = _run(capsys, "remove", "1", "--by", "ana")

    assert code == 0
    assert out.startswith("Removed exception #1 (Discord account 42)")
    assert _stored(db) == []
    # The subject may be given a new exception once the old one is gone.
    assert (
        _run(capsys, "add", "--discord-id", "42", "--role", "Knight", "--reason", "again")[0] == 0
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--discord-id", "12x", "--role", "Lord", "--reason", "r"],
            "--discord-id '12x' is not a Discord id (digits only",
            id="malformed-discord-id",
        ),
        pytest.param(
            ["--member-id", "m nobody", "--role", "Lord", "--reason", "r"],
            "--member-id 'm nobody' is not a member id",
            id="malformed-member-id",
        ),
        pytest.param(
            ["--member-id", "m_ghost", "--role", "Lord", "--reason", "r"],
            "no member has id 'm_ghost' in the membership database",
            id="unknown-member",
        ),
        pytest.param(
            ["--discord-id", "42", "--role", "Wizard", "--reason", "r"],
            "unknown role 'Wizard': an exception gives 'Squire', 'Knight', 'Lord'",
            id="unknown-role",
        ),
        pytest.param(
            ["--discord-id", "42", "--role", "debtor", "--reason", "r"],
            "role 'debtor' marks members in debt; an exception gives access",
            id="debtor-role",
        ),
        pytest.param(
            ["--discord-id", "42", "--role", "Lord", "--reason", "r", "--expires", YESTERDAY],
            f"--expires {YESTERDAY} is in the past (today is {TODAY.isoformat()})",
            id="past-expiry",
        ),
        pytest.param(
            ["--discord-id", "42", "--role", "Lord", "--reason", "   "],
            "--reason must say why this account has access without paying",
            id="empty-reason",
        ),
    ],
)
def test_add_refuses_bad_input_naming_it_and_stores_nothing(
    db: sa.Engine, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = _run(capsys, "add", *args)

    assert code == 2
    assert message in err
    assert out == ""
    assert _stored(db) == []


def test_add_refuses_a_second_exception_in_force_for_the_same_subject(
    db: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(capsys, "add", "--member-id", "m_staff", "--role", "Lord", "--reason", "staff")

    code, _, err = _run(
        capsys, "add", "--member-id", "m_staff", "--role", "Knight", "--reason", "x"
    )

    assert code == 2
    assert "member m_staff already has exception #1 in force; remove it first" in err
    assert [e["role"] for e in _stored(db)] == ["lord"]


def test_an_expired_exception_does_not_block_a_new_one(
    db: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO recon_pipeline_access_exception "
                "(discord_id, role, reason, added_by, added_at, expires_on) "
                "VALUES ('42', 'lord', 'last year', 'ana', :now, :expired)"
            ),
            {"now": dt.datetime(2026, 1, 1), "expired": dt.date.fromisoformat(YESTERDAY)},
        )

    assert _run(capsys, "add", "--discord-id", "42", "--role", "Lord", "--reason", "again")[0] == 0


@pytest.mark.parametrize(
    ("target", "message"),
    [
        pytest.param("7", "no access exception has id 7", id="unknown"),
        pytest.param("one", "'one' is not an exception id (a number)", id="not-a-number"),
        pytest.param("1", "exception #1 was removed already", id="removed-twice"),
    ],
)
def test_remove_refuses_what_it_cannot_remove(
    db: sa.Engine, capsys: pytest.CaptureFixture[str], target: str, message: str
) -> None:
    _run(capsys, "add", "--discord-id", "42", "--role", "Lord", "--reason", "staff")
    _run(capsys, "remove", "1")

    code, _, err = _run(capsys, "remove", target)

    assert code == 2
    assert message in err


def test_two_commands_adding_the_same_account_at_once_store_one_exception(
    db: sa.Engine, database_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    barrier = threading.Barrier(2)
    results: list[subprocess.CompletedProcess] = []

    def add(reason: str) -> None:
        barrier.wait()
        results.append(
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "recon_pipeline.cli",
                    "exceptions",
                    "add",
                    "--discord-id",
                    "42",
                    "--role",
                    "Lord",
                    "--reason",
                    reason,
                ],
                env=env,
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        )

    threads = [threading.Thread(target=add, args=(r,)) for r in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r.returncode for r in results) == [0, 2]
    refused = next(r for r in results if r.returncode == 2)
    assert "Discord account 42 already has exception #1 in force" in refused.stderr
    assert len(_stored(db)) == 1
