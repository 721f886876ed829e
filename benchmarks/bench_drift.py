"""Time the drift engine (and the reference implementation) on synthetic communities.

Each size runs in a fresh process so memory figures do not leak between sizes. Peak memory is
the kernel's high-water mark of resident memory (VmHWM), reset just before the engine runs, so it
covers the engine's working memory plus the input frames it holds.

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


def _measure(size: int, repeat: int, with_oracle: bool) -> dict[str, float]:
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
    find_drift_issues(**frames, policy=policy)  # warm-up: imports, first-call costs

    rss_before = _rss_mib("VmRSS")
    _reset_peak()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        issues = find_drift_issues(**frames, policy=policy)
        times.append(time.perf_counter() - started)
    result = {
        "size": size,
        "build_s": build_s,
        "engine_s": statistics.median(times),
        "engine_best_s": min(times),
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
        f"{'oracle s':>9} {'inputs MiB':>10} {'peak MiB':>9}"
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
            f"{r['peak_rss_mib']:>9.0f}"
        )


if __name__ == "__main__":
    main()
