"""Time `StripeBilling.list_subscriptions()` against the Stripe emulator.

The emulator runs in its own process, so the figures are the client's (SDK, HTTP, frame
building) plus the emulator's answer time and latency, without the two sharing one GIL.

    python benchmarks/bench_stripe.py                      # 10k and 100k, at 0 and 20 ms
    python benchmarks/bench_stripe.py --sizes 10000 --latencies-ms 0
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import sys
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KEY = "sk_test_benchmark"
READY_TIMEOUT_S = 60.0


def _subscriptions(size: int) -> pd.DataFrame:
    import numpy as np
    import pandas as pd

    from recon_pipeline.domain.columns import SubscriptionCol
    from recon_pipeline.sandbox.stripe_emulator import STATUSES

    rng = np.random.default_rng(size)
    numbers = np.arange(size)
    return pd.DataFrame(
        {
            SubscriptionCol.ID: pd.Series(numbers).map("sub_{:08d}".format),
            SubscriptionCol.CUSTOMER_ID: pd.Series(numbers).map("cus_{:08d}".format),
            SubscriptionCol.STATUS: rng.choice(np.array(STATUSES), size=size),
            SubscriptionCol.CREATED: 1_700_000_000 + rng.integers(0, 60_000_000, size=size),
        }
    )


def _serve(size: int, latency_s: float, port: int, ready: Event, stop: Event) -> None:
    from recon_pipeline.sandbox.server import LoopbackServer
    from recon_pipeline.sandbox.stripe_emulator import StripeEmulator

    emulator = StripeEmulator(api_keys=(KEY,), latency_s=latency_s)
    emulator.load_frame(_subscriptions(size))
    with LoopbackServer(emulator.app, port=port):
        ready.set()
        stop.wait()


def _measure(size: int, latency_ms: float, page_size: int) -> tuple[int, int, float]:
    from recon_pipeline.clients.stripe import StripeBilling
    from recon_pipeline.sandbox.server import free_port

    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    port = free_port()
    server = context.Process(target=_serve, args=(size, latency_ms / 1000, port, ready, stop))
    server.start()
    try:
        if not ready.wait(READY_TIMEOUT_S):
            raise RuntimeError("the emulator process did not start")
        with StripeBilling(
            KEY, api_base=f"http://127.0.0.1:{port}", page_size=page_size
        ) as billing:
            started = time.perf_counter()
            frame = billing.list_subscriptions()
            seconds = time.perf_counter() - started
        if len(frame) != size:
            raise RuntimeError(f"listed {len(frame)} subscriptions, expected {size}")
        return billing.stats.requests, len(frame), seconds
    finally:
        stop.set()
        server.join(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--latencies-ms", type=float, nargs="+", default=[0.0, 20.0])
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()

    print(f"Python {platform.python_version()} on {platform.machine()}, page size {args.page_size}")
    print(f"{'subscriptions':>13} {'latency':>8} {'requests':>9} {'seconds':>8} {'rows/s':>9}")
    for size in args.sizes:
        for latency_ms in args.latencies_ms:
            requests, rows, seconds = _measure(size, latency_ms, args.page_size)
            print(
                f"{size:>13,} {latency_ms:>6.0f}ms {requests:>9,} {seconds:>8.2f} "
                f"{rows / seconds:>9,.0f}"
            )


if __name__ == "__main__":
    main()
