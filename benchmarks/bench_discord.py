"""Time the Discord client against the emulator on loopback: role-fix throughput and snapshots.

(a) Fix throughput: N role changes through a route bucket of L requests per W seconds. The best
    possible pace is one full bucket per window, so N changes need at least
    (ceil(N/L) - 1) * W seconds; "efficiency" is that floor divided by the time taken, and 429s
    are the emulator's count (each is an invalid request on the real API).
(b) Members snapshot: a 100,000-account guild read in pages of 1000, with the emulator adding
    0 and 20 ms of latency per request.

Client and emulator share one process (the emulator serves from a thread), so the figures
include some contention for the interpreter; the real API adds network time on top.

    python benchmarks/bench_discord.py
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd

from recon_pipeline.clients.discord import DiscordClient
from recon_pipeline.domain.columns import GuildMemberRoleCol, GuildRoleCol
from recon_pipeline.sandbox.discord_emulator import DiscordEmulator
from recon_pipeline.sandbox.server import LoopbackServer

TOKEN = "sandbox-bot-token"
GUILD = "1100000000000000000"
ROLE_IDS = ["1100000000000000001", "1100000000000000002", "1100000000000000003"]
BASE_USER = 200_000_000_000_000_000

# (changes N, bucket size L, window W seconds, emulator latency seconds)
FIX_CASES = [
    (200, 10, 0.5, 0.0),
    (400, 50, 1.0, 0.0),
    (100, 5, 0.25, 0.0),
    (100, 5, 0.25, 0.02),
]
SNAPSHOT_MEMBERS = 100_000
SNAPSHOT_LATENCIES = [0.0, 0.02]


def _guild_frames(n_members: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = (BASE_USER + np.arange(n_members) * 7).astype(str)
    first = np.array([*ROLE_IDS, None], dtype=object)[rng.integers(0, 4, n_members)]
    extra = rng.random(n_members) < 0.3
    member_roles = pd.DataFrame(
        {
            GuildMemberRoleCol.DISCORD_ID: np.concatenate([ids, ids[extra]]),
            GuildMemberRoleCol.IS_BOT: np.concatenate(
                [rng.random(n_members) < 0.001, np.zeros(int(extra.sum()), dtype=bool)]
            ),
            GuildMemberRoleCol.ROLE_ID: np.concatenate(
                [first, np.full(int(extra.sum()), ROLE_IDS[2], dtype=object)]
            ),
        }
    )
    roles = pd.DataFrame({GuildRoleCol.ID: ROLE_IDS, GuildRoleCol.NAME: ["A", "B", "C"]})
    return member_roles, roles


def _client(server: LoopbackServer) -> DiscordClient:
    return DiscordClient(bot_token=TOKEN, guild_id=GUILD, api_base=f"{server.url}/api/v10")


def bench_fixes(n: int, limit: int, window: float, latency: float) -> dict[str, object]:
    emulator = DiscordEmulator(
        bot_token=TOKEN, guild_id=GUILD, route_limit=limit, route_window_s=window
    )
    users = [str(BASE_USER + i * 7) for i in range(n)]
    for user_id in users:
        emulator.add_member(user_id)
    emulator.add_role(ROLE_IDS[0], "A", position=1)
    emulator.latency_s = latency
    with LoopbackServer(emulator.app) as server, _client(server) as client:
        started = time.perf_counter()
        for i, user_id in enumerate(users):
            if i % 2:
                client.remove_role(user_id, ROLE_IDS[0], reason="bench")
            else:
                client.add_role(user_id, ROLE_IDS[0], reason="bench")
        elapsed = time.perf_counter() - started
        waited = client.rate_limit_wait_s
    floor_s = (math.ceil(n / limit) - 1) * window
    return {
        "N": n,
        "L/W": f"{limit}/{window:g}s",
        "latency ms": round(latency * 1000),
        "allowed /s": round(min(limit / window, 50), 1),
        "achieved /s": round(n / elapsed, 1),
        "efficiency": f"{floor_s / elapsed:.0%}" if floor_s else "-",
        "429s": emulator.count_status(429),
        "waited s": round(waited, 2),
        "time s": round(elapsed, 2),
    }


def bench_snapshot(
    member_roles: pd.DataFrame, roles: pd.DataFrame, latency: float
) -> dict[str, object]:
    emulator = DiscordEmulator(bot_token=TOKEN, guild_id=GUILD, latency_s=latency)
    started = time.perf_counter()
    emulator.load_frames(member_roles, roles)
    load_s = time.perf_counter() - started
    with LoopbackServer(emulator.app) as server, _client(server) as client:
        started = time.perf_counter()
        frame = client.guild_member_roles()
        elapsed = time.perf_counter() - started
        stats = client.stats()
    return {
        "accounts": frame[GuildMemberRoleCol.DISCORD_ID].nunique(),
        "rows": len(frame),
        "latency ms": round(latency * 1000),
        "requests": stats["requests_made"],
        "429s": emulator.count_status(429),
        "waited s": stats["rate_limit_wait_s"],
        "snapshot s": round(elapsed, 2),
        "emulator load s": round(load_s, 2),
    }


def _table(rows: list[dict[str, object]]) -> str:
    return pd.DataFrame(rows).to_string(index=False)


def main() -> None:
    started = time.perf_counter()
    print("(a) role-fix throughput through one route bucket (global limit 50/s)")
    print(_table([bench_fixes(*case) for case in FIX_CASES]))
    print()
    print(f"(b) members snapshot, {SNAPSHOT_MEMBERS:,} accounts (+ the bot), pages of 1000")
    member_roles, roles = _guild_frames(SNAPSHOT_MEMBERS)
    print(_table([bench_snapshot(member_roles, roles, lat) for lat in SNAPSHOT_LATENCIES]))
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
