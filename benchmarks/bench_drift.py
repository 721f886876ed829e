"""Time the drift engine (and the reference implementation) on synthetic communities.

Each size runs in a fresh process so memory figures do not leak between sizes. Peak memory is
the kernel's high-water mark of resident memory (VmHWM), reset just before the engine runs, so it
covers the engine's working memory plus the input frames it holds.

"with exc. s" times what a run does beyond the engine alone: access exceptions (1 per 100
members, a tenth of them expired, half on members and half on Discord accounts) filtered to the
live ones and applied by the engine, then removal confirmation against a previous run's findings
(nine in ten of this table's issues). Both timings alternate within one process, so their ratio
is not skewed by the machine's mood.

    python benchmarks/bench_drift.py                 # 10k, 100k, 1M
    python benchmarks/bench_drift.py --sizes 10000 --repeat 5
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import statistics
import sys
import time
from pathlib import Path

# The reference implementation lives with the tests, beside this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ORACLE_LIMIT = 100_000  # the per-member reference is too slow to be worth timing beyond this


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    # Writing 5 to clear_refs resets VmHWM (Linux ≥ 4.0), so the next peak is the engine's.
    Path("/proc/self/clear_refs").write_text("5")


def _exceptions(community, size: int):
    import numpy as np
    import pandas as pd

    from recon_pipeline.domain.columns import ExceptionCol

    rng = np.random.default_rng(size + 1)
    n = max(1, size // 100)
    on_member = rng.random(n) < 0.5
    members = community.members["id"].to_numpy()[rng.integers(0, len(community.members), n)]
    accounts = community.guild_member_roles["discord_id"].to_numpy()
    accounts = accounts[rng.integers(0, len(accounts), n)]
    return pd.DataFrame(
        {
            ExceptionCol.ID: np.arange(1, n + 1).astype(str),
            ExceptionCol.DISCORD_ID: np.where(on_member, None, accounts),
            ExceptionCol.MEMBER_ID: np.where(on_member, members, None),
            ExceptionCol.ROLE: rng.choice(["squire", "knight", "lord"], n),
            ExceptionCol.REASON: "staff",
            ExceptionCol.ADDED_BY: "bench",
            ExceptionCol.ADDED_AT: "2026-11-01T00:00:00",
            ExceptionCol.EXPIRES_ON: np.where(rng.random(n) < 0.1, "2026-11-01", None),
        }
    ).astype("str")


def _measure(size: int, repeat: int, with_oracle: bool) -> dict[str, float]:
    from recon_pipeline.domain.access_exceptions import live_exceptions
    from recon_pipeline.domain.confirmation import await_confirmation
    from recon_pipeline.domain.drift import find_drift_issues
    from recon_pipeline.domain.policy import AccessPolicy
    from recon_pipeline.sandbox.community import synthetic_community

    started = time.perf_counter()
    community = synthetic_community(size, seed=size)
    frames = {
        "members": community.members,
        "teams": community.teams,
        "subscriptions": community.subscriptions,
        "guild_member_roles": community.guild_member_roles,
        "guild_roles": community.guild_roles,
    }
    build_s = time.perf_counter() - started
    policy = AccessPolicy()
    exceptions = _exceptions(community, size)
    previous = find_drift_issues(**frames, policy=policy).sample(frac=0.9, random_state=1)
    # warm-up: imports, first-call costs

    def run_with_exceptions():
        live = live_exceptions(exceptions, "2026-11-30")
        found = find_drift_issues(**frames, policy=policy, exceptions=live)
        return await_confirmation(found, previous, first_seen_in="bench")

    run_with_exceptions()

    rss_before = _rss_mib("VmRSS")
    _reset_peak()
    times, full_times = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        issues = find_drift_issues(**frames, policy=policy)
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
        run_with_exceptions()
        full_times.append(time.perf_counter() - started)
    result = {
        "size": size,
        "build_s": build_s,
        "engine_s": statistics.median(times),
        "engine_best_s": min(times),
        "full_s": statistics.median(full_times),
        "exceptions": len(exceptions),
        "previous": len(previous),
        "issues": len(issues),
        "rss_inputs_mib": rss_before,
        "peak_rss_mib": _rss_mib("VmHWM"),
        "oracle_s": float("nan"),
    }
    if with_oracle:
        from recon_pipeline_tests.oracle import reference_drift_issues

        started = time.perf_counter()
        expected = reference_drift_issues(**frames, policy=policy)
        result["oracle_s"] = time.perf_counter() - started
        if len(expected) != len(issues):
            raise SystemExit(
                f"engine and oracle disagree at {size}: {len(issues)} vs {len(expected)}"
            )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="engine runs per size (median)")
    args = parser.parse_args()

    import pandas as pd
    import pyarrow as pa

    print(
        f"python {platform.python_version()}, pandas {pd.__version__}, pyarrow {pa.__version__}, "
        f"{multiprocessing.cpu_count()} cores"
    )
    header = (
        f"{'members':>9} {'issues':>7} {'engine s':>9} {'best s':>7} {'members/s':>11} "
        f"{'oracle s':>9} {'inputs MiB':>10} {'peak MiB':>9} {'exc.':>7} {'prev.':>7} "
        f"{'with exc. s':>11} {'ratio':>6}"
    )
    print(header)
    ctx = multiprocessing.get_context("spawn")
    for size in args.sizes:
        with ctx.Pool(1) as pool:
            r = pool.apply(_measure, (size, args.repeat, size <= ORACLE_LIMIT))
        oracle = f"{r['oracle_s']:9.2f}" if r["oracle_s"] == r["oracle_s"] else f"{'-':>9}"
        print(
            f"{r['size']:>9,} {r['issues']:>7,} {r['engine_s']:>9.3f} {r['engine_best_s']:>7.3f} "
            f"{r['size'] / r['engine_s']:>11,.0f} {oracle} {r['rss_inputs_mib']:>10.0f} "
            f"{r['peak_rss_mib']:>9.0f} {r['exceptions']:>7,} {r['previous']:>7,} "
            f"{r['full_s']:>11.3f} {r['full_s'] / r['engine_s']:>6.2f}"
        )


if __name__ == "__main__":
    main()
