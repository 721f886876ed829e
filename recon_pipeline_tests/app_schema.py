"""The original app's PostgreSQL schema, exactly as `prisma migrate` generates it.

It is richer than what the pipeline maps (timestamps, Discord user names, seat counts, Prisma's
own bookkeeping table), so tests on it show the pipeline reads the real schema and leaves it
alone. The app added `"ReconciliationRun"` in a later migration; applying only the first one gives
a database of an older app version.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

# prisma/migrations/20251110093000_init/migration.sql
INIT_MIGRATION = """
-- CreateEnum
CREATE TYPE "SubscriptionStatus" AS ENUM ('NONE', 'TRIALING', 'ACTIVE', 'PAST_DUE', 'CANCELLED');

-- CreateEnum
CREATE TYPE "SeatTier" AS ENUM ('INDIVIDUAL', 'OWNER', 'TEAM_MEMBER');

-- CreateTable
CREATE TABLE "Member" (
    "id" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "discordId" TEXT,
    "discordUsername" TEXT,
    "discordAvatar" TEXT,
    "stripeCustomerId" TEXT,
    "subscriptionStatus" "SubscriptionStatus" NOT NULL DEFAULT 'NONE',
    "seatTier" "SeatTier",
    "currentPeriodEnd" TIMESTAMP(3),
    "introCompleted" BOOLEAN NOT NULL DEFAULT false,
    "introCompletedAt" TIMESTAMP(3),
    "teamId" TEXT,
    "isInDebtorState" BOOLEAN NOT NULL DEFAULT false,
    "debtorStateSince" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "Member_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Team" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "stripeCustomerId" TEXT NOT NULL,
    "stripeSubscriptionId" TEXT,
    "subscriptionStatus" "SubscriptionStatus" NOT NULL DEFAULT 'NONE',
    "seatCount" INTEGER NOT NULL DEFAULT 0,
    "ownerId" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "Team_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "Member_email_key" ON "Member"("email");

-- CreateIndex
CREATE UNIQUE INDEX "Member_discordId_key" ON "Member"("discordId");

-- CreateIndex
CREATE UNIQUE INDEX "Member_stripeCustomerId_key" ON "Member"("stripeCustomerId");

-- CreateIndex
CREATE UNIQUE INDEX "Team_stripeCustomerId_key" ON "Team"("stripeCustomerId");

-- CreateIndex
CREATE UNIQUE INDEX "Team_ownerId_key" ON "Team"("ownerId");

-- AddForeignKey
ALTER TABLE "Member" ADD CONSTRAINT "Member_teamId_fkey" FOREIGN KEY ("teamId") REFERENCES "Team"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "Team" ADD CONSTRAINT "Team_ownerId_fkey" FOREIGN KEY ("ownerId") REFERENCES "Member"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
"""  # noqa: E501 (Prisma's own line lengths)

# prisma/migrations/20260119101500_add_reconciliation_run/migration.sql
RECONCILIATION_RUN_MIGRATION = """
-- CreateTable
CREATE TABLE "ReconciliationRun" (
    "id" TEXT NOT NULL,
    "startedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "completedAt" TIMESTAMP(3),
    "membersChecked" INTEGER NOT NULL DEFAULT 0,
    "teamsChecked" INTEGER NOT NULL DEFAULT 0,
    "issuesFound" INTEGER NOT NULL DEFAULT 0,
    "issuesFixed" INTEGER NOT NULL DEFAULT 0,
    "autoFixEnabled" BOOLEAN NOT NULL DEFAULT false,
    "isVerificationRun" BOOLEAN NOT NULL DEFAULT false,
    "triggeredBy" TEXT NOT NULL,
    "issues" JSONB NOT NULL,

    CONSTRAINT "ReconciliationRun_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "ReconciliationRun_startedAt_idx" ON "ReconciliationRun"("startedAt");
"""

# Created by `prisma migrate` itself, not by a migration file.
PRISMA_MIGRATIONS_TABLE = """
CREATE TABLE "_prisma_migrations" (
    "id" VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum" VARCHAR(64) NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "migration_name" VARCHAR(255) NOT NULL,
    "logs" TEXT,
    "rolled_back_at" TIMESTAMPTZ,
    "started_at" TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count" INTEGER NOT NULL DEFAULT 0
);
"""

APP_ROWS = """
INSERT INTO "Member" ("id", "email", "discordId", "discordUsername", "stripeCustomerId",
    "subscriptionStatus", "seatTier", "introCompleted", "teamId", "isInDebtorState", "updatedAt")
VALUES
    ('m_owner', 'owner@example.org', '1001', 'owner', 'cus_owner', 'ACTIVE', 'OWNER', true,
        NULL, false, '2026-01-02 03:04:05.678'),
    ('m_seat', 'seat@example.org', '1002', 'seat', NULL, 'NONE', 'TEAM_MEMBER', false,
        NULL, true, '2026-01-02 03:04:05.678'),
    ('m_unlinked', 'unlinked@example.org', NULL, NULL, NULL, 'CANCELLED', NULL, false,
        NULL, false, '2026-01-02 03:04:05.678');
INSERT INTO "Team" ("id", "name", "stripeCustomerId", "stripeSubscriptionId",
    "subscriptionStatus", "seatCount", "ownerId", "updatedAt")
VALUES ('t_acme', 'Acme', 'cus_acme', 'sub_acme', 'PAST_DUE', 5, 'm_owner',
    '2026-01-02 03:04:05.678');
UPDATE "Member" SET "teamId" = 't_acme' WHERE "id" IN ('m_owner', 'm_seat');
"""

RECONCILIATION_RUN_ROWS = """
INSERT INTO "ReconciliationRun" ("id", "startedAt", "completedAt", "membersChecked",
    "teamsChecked", "issuesFound", "triggeredBy", "issues")
VALUES ('run_old', '2026-01-20 08:00:00.123', '2026-01-20 08:00:09.456', 3, 1, 1, 'scheduled',
    '[{"type": "MISSING_ACCESS", "memberId": "m_seat", "severity": "HIGH"}]');
"""


def create_app_schema(
    url: str,
    *,
    schema: str | None = None,
    with_reconciliation_run: bool = True,
    with_rows: bool = True,
) -> None:
    """Build the app's database at `url` as its migrations would, optionally with a few rows.

    Args:
        url: the database, in libpq form.
        schema: create everything in this (new) schema instead of `public`, as Prisma does for
            `?schema=`.
        with_reconciliation_run: False gives the schema of an app version before that table.
        with_rows: insert a few members, a team and (with the table) a past run.
    """
    scripts = [PRISMA_MIGRATIONS_TABLE, INIT_MIGRATION]
    if with_reconciliation_run:
        scripts.append(RECONCILIATION_RUN_MIGRATION)
    if with_rows:
        scripts.append(APP_ROWS)
        if with_reconciliation_run:
            scripts.append(RECONCILIATION_RUN_ROWS)
    with psycopg.connect(url) as conn:
        if schema is not None:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for script in scripts:
            # Without parameters psycopg sends the script as one simple query, several
            # statements included, just as Prisma applies a migration file.
            conn.execute(script)
