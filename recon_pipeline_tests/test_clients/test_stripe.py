"""The Stripe client, through the real SDK, against the emulator on loopback.

Backoff waits for plain 429s go through an injected recorder, so no test waits for them. The
SDK's own retries (5xx without `Stripe-Should-Retry: false`, 429 with `Stripe-Should-Retry:
true`, timeouts) sleep inside the SDK for about half a second each; only a few tests need one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest

from recon_pipeline.clients.stripe import StripeBilling, StripeSnapshotError, redact_key
from recon_pipeline.domain.columns import SubscriptionCol
from recon_pipeline.sandbox.server import LoopbackServer
from recon_pipeline.sandbox.stripe_emulator import STATUSES, StripeEmulator
from recon_pipeline_tests.loopback import FakeClock, Loopback

KEY = "sk_test_clientkey00000000000001"
T0 = 1_700_000_000


@pytest.fixture
def emulator(loopback: Loopback, clock: FakeClock) -> StripeEmulator:
    emu = StripeEmulator(api_keys=(KEY,), clock=clock)
    loopback.install(emu.app)
    return emu


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def billing_for(loopback: Loopback, sleeps: list[float]) -> Iterator[Callable[..., StripeBilling]]:
    """Build clients pointed at the loopback server; they record their backoff waits."""
    made: list[StripeBilling] = []

    def build(key: str = KEY, **options: Any) -> StripeBilling:
        options.setdefault("sleep", sleeps.append)
        billing = StripeBilling(key, api_base=loopback.url + "/", **options)
        made.append(billing)
        return billing

    yield build
    for billing in made:
        billing.close()


def subscriptions_frame(n: int) -> pd.DataFrame:
    """`n` subscriptions cycling through every status, a few sharing a `created` second."""
    return pd.DataFrame(
        {
            SubscriptionCol.ID: [f"sub_{i:05d}" for i in range(n)],
            SubscriptionCol.CUSTOMER_ID: [f"cus_{i % 97:03d}" for i in range(n)],
            SubscriptionCol.STATUS: [STATUSES[i % len(STATUSES)] for i in range(n)],
            SubscriptionCol.CREATED: [T0 + i // 3 for i in range(n)],
        }
    ).astype(
        {
            SubscriptionCol.ID: "str",
            SubscriptionCol.CUSTOMER_ID: "str",
            SubscriptionCol.STATUS: "str",
            SubscriptionCol.CREATED: "int64",
        }
    )


def by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(SubscriptionCol.ID, ignore_index=True)


@pytest.fixture
def loaded(emulator: StripeEmulator) -> pd.DataFrame:
    frame = subscriptions_frame(250)
    emulator.load_frame(frame)
    return frame


def statuses_of_requests(emulator: StripeEmulator) -> list[int]:
    return [r.status for r in emulator.requests]


# ---- listing --------------------------------------------------------------------------------


def test_lists_every_subscription_once_over_three_pages(
    emulator: StripeEmulator, loaded: pd.DataFrame, billing_for: Callable[..., StripeBilling]
) -> None:
    billing = billing_for()
    frame = billing.list_subscriptions()

    assert list(frame.columns) == list(SubscriptionCol.ALL)
    pd.testing.assert_frame_equal(by_id(frame), by_id(loaded))
    assert set(frame[SubscriptionCol.STATUS]) == set(STATUSES)  # canceled included
    assert frame[SubscriptionCol.ID].is_unique
    queries = [r.query for r in emulator.requests]
    assert [q.get("starting_after") for q in queries] == [
        None,
        frame[SubscriptionCol.ID].iloc[99],
        frame[SubscriptionCol.ID].iloc[199],
    ]
    assert all(q["status"] == "all" and q["limit"] == "100" for q in queries)
    assert billing.stats.as_metadata() == {
        "stripe_pages": 3,
        "stripe_requests": 3,
        "stripe_rate_limit_retries": 0,
        "stripe_rows": 250,
        "stripe_slices": 0,  # three pages never reach the parallel ranges
    }


def test_empty_account_gives_an_empty_typed_frame(
    emulator: StripeEmulator, billing_for: Callable[..., StripeBilling]
) -> None:
    frame = billing_for().list_subscriptions()
    pd.testing.assert_frame_equal(frame, subscriptions_frame(0))
    assert len(emulator.requests) == 1


def test_expanded_customer_objects_give_their_id(
    loopback: Loopback,
    emulator: StripeEmulator,
    loaded: pd.DataFrame,
    billing_for: Callable[..., StripeBilling],
) -> None:
    async def expanding(scope: Any, receive: Any, send: Any) -> None:
        # Stripe inlines the customer when asked; ask on the client's behalf.
        scope = {**scope, "query_string": scope["query_string"] + b"&expand[0]=data.customer"}
        await emulator.app(scope, receive, send)

    loopback.install(expanding)
    frame = billing_for().list_subscriptions()
    pd.testing.assert_frame_equal(by_id(frame), by_id(loaded))
    assert all(r.query["expand"] == ["data.customer"] for r in emulator.requests)


# ---- failures that abort ------------------------------------------------------------------------


def test_500_on_a_middle_page_with_should_retry_false_aborts(
    emulator: StripeEmulator, loaded: pd.DataFrame, billing_for: Callable[..., StripeBilling]
) -> None:
    emulator.fail_page(2, status=500, should_retry=False)
    with pytest.raises(StripeSnapshotError, match=r"page 2 failed \(HTTP 500") as caught:
        billing_for().list_subscriptions()
    assert (caught.value.page, caught.value.http_status) == (2, 500)
    assert caught.value.request_id is not None
    assert statuses_of_requests(emulator) == [200, 500]  # the SDK honoured should-retry: false


def test_rate_limited_forever_gives_up_after_bounded_attempts(
    emulator: StripeEmulator,
    loaded: pd.DataFrame,
    billing_for: Callable[..., StripeBilling],
    sleeps: list[float],
) -> None:
    emulator.fail_page(1, status=429, times=1_000)
    billing = billing_for(rate_limit_retries=3)
    with pytest.raises(StripeSnapshotError, match="still rate-limited after 4 attempts") as caught:
        billing.list_subscriptions()
    assert (caught.value.page, caught.value.code) == (1, "rate_limit")
    assert statuses_of_requests(emulator) == [429] * 4
    assert len(sleeps) == 3
    assert billing.stats.rate_limit_retries == 3


def test_timeout_aborts(
    emulator: StripeEmulator, loaded: pd.DataFrame, billing_for: Callable[..., StripeBilling]
) -> None:
    emulator.hang_next(1, 30.0)
    billing = billing_for(timeout_s=0.2, max_network_retries=0)
    with pytest.raises(StripeSnapshotError, match=r"page 1 failed \(no HTTP answer\)") as caught:
        billing.list_subscriptions()
    assert "timeout" in str(caught.value)
    assert billing.stats.requests == 1


def test_non_json_body_aborts(
    emulator: StripeEmulator, loaded: pd.DataFrame, billing_for: Callable[..., StripeBilling]
) -> None:
    emulator.non_json_next(1)
    with pytest.raises(StripeSnapshotError, match=r"page 1 failed \(HTTP 200.*not valid JSON"):
        billing_for().list_subscriptions()


def test_bad_key_aborts_without_showing_the_key(
    emulator: StripeEmulator,
    loaded: pd.DataFrame,
    billing_for: Callable[..., StripeBilling],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad_key = "sk_test_wrongkey0000000000009876"
    caplog.set_level(logging.DEBUG)
    billing = billing_for(bad_key)
    with pytest.raises(StripeSnapshotError, match=r"HTTP 401.*rejected the API key") as caught:
        billing.list_subscriptions()
    error = caught.value
    assert "Invalid API Key provided: sk_test_*" in str(error)
    for text in (str(error), repr(error), repr(billing), caplog.text):
        assert bad_key not in text
    assert error.__cause__ is None
    assert error.__suppress_context__


async def answer(send: Any, status: int, body: dict[str, Any]) -> None:
    headers = [(b"content-type", b"application/json"), (b"request-id", b"req_handmade")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def test_a_key_echoed_by_the_server_is_scrubbed(
    loopback: Loopback, billing_for: Callable[..., StripeBilling]
) -> None:
    async def leaky(scope: Any, receive: Any, send: Any) -> None:
        authorization = dict(scope["headers"])[b"authorization"].decode()
        message = f"Bad: {authorization}"
        await answer(send, 400, {"error": {"type": "invalid_request_error", "message": message}})

    loopback.install(leaky)
    with pytest.raises(StripeSnapshotError, match="Stripe refused the request") as caught:
        billing_for().list_subscriptions()
    assert KEY not in str(caught.value)
    assert redact_key(KEY) in str(caught.value)


@pytest.mark.parametrize(
    ("page", "problem"),
    [
        ({"has_more": True, "data": []}, "page 1 was empty but said more follow"),
        ({"data": [{"id": "sub_1", "object": "subscription"}]}, "page 1 was not a list"),
    ],
)
def test_a_page_that_makes_no_sense_aborts(
    loopback: Loopback,
    billing_for: Callable[..., StripeBilling],
    page: dict[str, Any],
    problem: str,
) -> None:
    async def odd(scope: Any, receive: Any, send: Any) -> None:
        await answer(send, 200, {"object": "list", "url": "/v1/subscriptions", **page})

    loopback.install(odd)
    with pytest.raises(StripeSnapshotError, match=problem):
        billing_for().list_subscriptions()


def test_repr_shows_only_a_redacted_key(billing_for: Callable[..., StripeBilling]) -> None:
    shown = repr(billing_for())
    assert KEY not in shown
    assert "sk_test_****0001" in shown


# ---- retries that recover -----------------------------------------------------------------------


def test_plain_429_is_retried_with_bounded_jittered_backoff(
    emulator: StripeEmulator,
    loaded: pd.DataFrame,
    billing_for: Callable[..., StripeBilling],
    sleeps: list[float],
) -> None:
    emulator.fail_page(2, status=429, times=2)
    billing = billing_for()
    frame = billing.list_subscriptions()
    pd.testing.assert_frame_equal(by_id(frame), by_id(loaded))
    assert statuses_of_requests(emulator) == [200, 429, 429, 200, 200]
    assert len(sleeps) == 2
    assert 1.0 <= sleeps[0] <= 2.0
    assert 2.0 <= sleeps[1] <= 3.0
    assert (billing.stats.rate_limit_retries, billing.stats.requests) == (2, 5)


def test_per_second_limit_is_waited_out(
    emulator: StripeEmulator, loaded: pd.DataFrame, clock: FakeClock
) -> None:
    emulator.requests_per_second = 2
    with (
        LoopbackServer(emulator.app) as server,
        StripeBilling(
            KEY, api_base=server.url, sleep=lambda s: setattr(clock, "now", clock.now + s)
        ) as billing,
    ):
        frame = billing.list_subscriptions()
    assert len(frame) == 250
    assert statuses_of_requests(emulator) == [200, 200, 429, 200]


def test_500_without_header_is_retried_by_the_sdk(
    emulator: StripeEmulator,
    loaded: pd.DataFrame,
    billing_for: Callable[..., StripeBilling],
    sleeps: list[float],
) -> None:
    emulator.fail_page(2, status=500)
    billing = billing_for()
    frame = billing.list_subscriptions()
    pd.testing.assert_frame_equal(by_id(frame), by_id(loaded))
    assert statuses_of_requests(emulator) == [200, 500, 200, 200]
    assert sleeps == []  # the SDK waited, not our backoff
    assert (billing.stats.pages, billing.stats.requests) == (3, 4)


def test_429_with_should_retry_true_is_retried_by_the_sdk(
    emulator: StripeEmulator,
    loaded: pd.DataFrame,
    billing_for: Callable[..., StripeBilling],
    sleeps: list[float],
) -> None:
    emulator.fail_page(3, status=429, should_retry=True)
    billing = billing_for()
    assert len(billing.list_subscriptions()) == 250
    assert statuses_of_requests(emulator) == [200, 200, 429, 200]
    assert sleeps == []
    assert billing.stats.rate_limit_retries == 0


def test_a_timed_out_request_is_retried_by_the_sdk(
    emulator: StripeEmulator, loaded: pd.DataFrame, billing_for: Callable[..., StripeBilling]
) -> None:
    emulator.hang_next(1, 30.0)
    billing = billing_for(timeout_s=0.2, max_network_retries=1)
    assert len(billing.list_subscriptions()) == 250
    assert (billing.stats.pages, billing.stats.requests) == (3, 4)


def test_page_size_is_checked() -> None:
    with pytest.raises(ValueError, match="page_size"):
        StripeBilling(KEY, page_size=101)


# ---- long listings: created ranges listed in parallel -------------------------------------------


def _ranged(emulator: StripeEmulator, n: int = 300) -> pd.DataFrame:
    """`n` subscriptions, three per second, so every range boundary cuts through a tie."""
    frame = subscriptions_frame(n)
    emulator.load_frame(frame)
    return frame


SPLIT = {"page_size": 10, "sequential_pages": 2, "concurrency": 3, "slices_per_thread": 2}


def _split_listing(billing_for: Callable[..., StripeBilling]) -> StripeBilling:
    """A client that walks two pages of ten, then lists the rest in six ranges."""
    return billing_for(**SPLIT)


def test_a_long_listing_split_into_ranges_equals_the_sequential_listing(
    emulator: StripeEmulator, billing_for: Callable[..., StripeBilling]
) -> None:
    loaded = _ranged(emulator)
    sequential = billing_for(page_size=10, concurrency=1).list_subscriptions()
    emulator.requests.clear()

    billing = _split_listing(billing_for)
    split = billing.list_subscriptions()

    pd.testing.assert_frame_equal(split, sequential)  # same rows, same newest-first order
    pd.testing.assert_frame_equal(by_id(split), by_id(loaded))
    assert billing.stats.slices > 2
    assert billing.stats.rows == 300
    queries = [r.query for r in emulator.requests]
    ranged = [q for q in queries if "created" in q and q["limit"] == "10"]
    assert len(ranged) > 2
    # The newest range continues the sequential walk's cursor through the tied second ...
    assert ranged[0]["starting_after"] == sequential[SubscriptionCol.ID].iloc[19]
    assert set(ranged[0]["created"]) == {"gte"}
    # ... and the oldest range has no lower bound, so nothing older can be missed.
    assert any(set(q["created"]) == {"lt"} for q in ranged)


def test_sequential_listing_never_sends_created_ranges(
    emulator: StripeEmulator, billing_for: Callable[..., StripeBilling]
) -> None:
    _ranged(emulator)

    billing = billing_for(page_size=10, concurrency=1, sequential_pages=2)
    frame = billing.list_subscriptions()

    assert len(frame) == 300
    assert billing.stats.slices == 0
    assert all("created" not in r.query for r in emulator.requests)
    assert billing.stats.pages == billing.stats.requests == 30


def test_subscriptions_at_every_range_boundary_are_listed_once(
    emulator: StripeEmulator, billing_for: Callable[..., StripeBilling]
) -> None:
    # One per second, plus a second subscription on every fifth second.
    seconds = list(range(200)) + list(range(0, 200, 5))
    for n, second in enumerate(seconds):
        emulator.add_subscription(
            f"sub_b{n:04d}", customer="cus_b", status="active", created=T0 + second
        )

    frame = _split_listing(billing_for).list_subscriptions()

    lower_bounds = {
        int(r.query["created"]["gte"])
        for r in emulator.requests
        if isinstance(r.query.get("created"), dict) and "gte" in r.query["created"]
    }
    assert len(lower_bounds & {T0 + s for s in seconds}) > 2  # ranges start on occupied seconds
    assert sorted(frame[SubscriptionCol.ID]) == sorted(f"sub_b{n:04d}" for n in range(240))
    assert frame[SubscriptionCol.CREATED].is_monotonic_decreasing


def test_a_failure_in_any_range_fails_the_whole_snapshot(
    loopback: Loopback, emulator: StripeEmulator, billing_for: Callable[..., StripeBilling]
) -> None:
    _ranged(emulator)
    failed: list[bytes] = []

    async def failing_one_range(scope: Any, receive: Any, send: Any) -> None:
        query = scope["query_string"]
        # The second page of the first middle range to get there: one failure, never retried.
        middle = b"created%5Bgte%5D" in query and b"created%5Blt%5D" in query
        if middle and b"starting_after" in query and not failed:
            failed.append(query)
            await answer(send, 500, {"error": {"type": "api_error", "message": "boom"}})
            return
        await emulator.app(scope, receive, send)

    loopback.install(failing_one_range)
    billing = billing_for(max_network_retries=0, **SPLIT)

    with pytest.raises(
        StripeSnapshotError, match=r"page 2 of created.*failed \(HTTP 500"
    ) as caught:
        billing.list_subscriptions()

    assert failed, "the range boundary the test aims at was never listed"
    assert (caught.value.page, caught.value.http_status) == (2, 500)
    assert "no partial data kept" in str(caught.value)


def test_a_rate_limited_range_is_retried_and_the_listing_completes(
    emulator: StripeEmulator, billing_for: Callable[..., StripeBilling], sleeps: list[float]
) -> None:
    loaded = _ranged(emulator)
    emulator.fail_next(1, status=429)  # whichever request comes next: the first page

    billing = _split_listing(billing_for)
    frame = billing.list_subscriptions()

    pd.testing.assert_frame_equal(by_id(frame), by_id(loaded))
    assert billing.stats.rate_limit_retries == 1
    assert len(sleeps) == 1


@pytest.mark.parametrize("option", ["concurrency", "sequential_pages", "slices_per_thread"])
def test_listing_options_are_checked(option: str) -> None:
    with pytest.raises(ValueError, match=option):
        StripeBilling(KEY, **{option: 0})
