"""The Stripe emulator speaks the protocol the fact sheet describes, checked with plain httpx.

One loopback server serves the whole module; each test swaps in a fresh emulator.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx
import pandas as pd
import pytest

from recon_pipeline.domain.columns import SubscriptionCol
from recon_pipeline.sandbox.stripe_emulator import (
    ACCOUNT_API_VERSION,
    STATUSES,
    StripeEmulator,
    redact_key,
)
from recon_pipeline_tests.loopback import FakeClock, Loopback

KEY = "sk_test_emulatorkey0001"
T0 = 1_700_000_000


@pytest.fixture
def emulator(loopback: Loopback, clock: FakeClock) -> StripeEmulator:
    """One subscription per status, created a second apart (the active one newest)."""
    emu = StripeEmulator(api_keys=(KEY,), clock=clock)
    for age, status in enumerate(STATUSES):
        emu.add_subscription(
            f"sub_{status}", customer=f"cus_{age % 3}", status=status, created=T0 - age
        )
    loopback.install(emu.app)
    return emu


@pytest.fixture
def http(loopback: Loopback) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=loopback.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=10
    ) as client:
        yield client


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["data"]]


def error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


# ---- auth and headers ---------------------------------------------------------------------------


def test_missing_key_is_401(emulator: StripeEmulator, http: httpx.Client) -> None:
    response = http.get("/v1/subscriptions", headers={"Authorization": ""})
    body = error(response, 401)
    assert body["type"] == "invalid_request_error"
    assert "did not provide an API key" in body["message"]
    assert response.headers["www-authenticate"] == 'Basic realm="Stripe"'


def test_unknown_key_is_401_and_shown_redacted(
    emulator: StripeEmulator, http: httpx.Client
) -> None:
    bad = "sk_test_abcdefgh1234"
    response = http.get("/v1/subscriptions", headers={"Authorization": f"Bearer {bad}"})
    body = error(response, 401)
    assert body["message"] == "Invalid API Key provided: sk_test_********1234"
    assert bad not in response.text


def test_a_restricted_key_without_subscription_access_is_403_and_shown_redacted(
    emulator: StripeEmulator, http: httpx.Client
) -> None:
    limited = "rk_test_limited0000abcd"
    emulator.restricted_keys = frozenset({limited})

    response = http.get("/v1/subscriptions", headers={"Authorization": f"Bearer {limited}"})

    body = error(response, 403)
    assert "does not have the required permissions" in body["message"]
    assert "rak_subscription_read" in body["message"]
    assert limited not in response.text


@pytest.mark.parametrize(
    ("key", "shown"),
    [("sk_test_abcdefgh1234", "sk_test_********1234"), ("undefined", "*****ined"), ("abc", "***")],
)
def test_redaction_keeps_prefix_and_last_four(key: str, shown: str) -> None:
    assert redact_key(key) == shown


@pytest.mark.parametrize(("key", "status"), [(KEY, 200), ("sk_test_other", 401)])
def test_basic_auth_with_key_as_username(
    emulator: StripeEmulator, http: httpx.Client, key: str, status: int
) -> None:
    token = base64.b64encode(f"{key}:".encode()).decode()
    response = http.get("/v1/subscriptions", headers={"Authorization": f"Basic {token}"})
    assert response.status_code == status


def test_every_response_has_a_request_id_and_echoes_the_version(
    emulator: StripeEmulator, http: httpx.Client
) -> None:
    responses = [
        http.get("/v1/subscriptions", headers={"Stripe-Version": "2024-06-20"}),
        http.get("/v1/subscriptions/sub_nope", headers={"Stripe-Version": "2024-06-20"}),
        http.get(
            "/v1/subscriptions", headers={"Authorization": "", "Stripe-Version": "2024-06-20"}
        ),
    ]
    assert [r.status_code for r in responses] == [200, 404, 401]
    assert all(r.headers["stripe-version"] == "2024-06-20" for r in responses)
    request_ids = [r.headers["request-id"] for r in responses]
    assert all(rid.startswith("req_") for rid in request_ids)
    assert len(set(request_ids)) == 3
    assert http.get("/v1/subscriptions").headers["stripe-version"] == ACCOUNT_API_VERSION


# ---- listing ----------------------------------------------------------------------------------


def test_no_status_leaves_out_only_canceled(emulator: StripeEmulator, http: httpx.Client) -> None:
    listed = ids(http.get("/v1/subscriptions"))
    assert listed == [f"sub_{s}" for s in STATUSES if s != "canceled"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("all", [f"sub_{s}" for s in STATUSES]),
        ("ended", ["sub_canceled", "sub_incomplete_expired"]),
        ("canceled", ["sub_canceled"]),
        ("past_due", ["sub_past_due"]),
    ],
)
def test_status_filter(
    emulator: StripeEmulator, http: httpx.Client, status: str, expected: list[str]
) -> None:
    assert ids(http.get("/v1/subscriptions", params={"status": status})) == expected


def test_invalid_status_is_400(emulator: StripeEmulator, http: httpx.Client) -> None:
    assert error(http.get("/v1/subscriptions?status=gone"), 400)["param"] == "status"


def test_newest_first_with_id_as_tie_breaker(http: httpx.Client, emulator: StripeEmulator) -> None:
    for sub_id in ("sub_b", "sub_a", "sub_c"):
        emulator.add_subscription(sub_id, customer="cus_9", status="active", created=T0 + 5)
    listed = ids(http.get("/v1/subscriptions", params={"customer": "cus_9"}))
    assert listed == ["sub_c", "sub_b", "sub_a"]


def test_customer_filter(emulator: StripeEmulator, http: httpx.Client) -> None:
    listed = ids(http.get("/v1/subscriptions", params={"status": "all", "customer": "cus_1"}))
    assert listed == ["sub_trialing", "sub_canceled", "sub_paused"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("created=1699999999", ["sub_trialing"]),
        ("created[gte]=1699999998", ["sub_active", "sub_trialing", "sub_past_due"]),
        ("created[gt]=1699999998", ["sub_active", "sub_trialing"]),
        ("created%5Blt%5D=1699999994&created%5Blte%5D=1699999993", ["sub_paused"]),
    ],
)
def test_created_filter(
    emulator: StripeEmulator, http: httpx.Client, query: str, expected: list[str]
) -> None:
    assert ids(http.get(f"/v1/subscriptions?status=all&{query}")) == expected


@pytest.mark.parametrize(
    ("query", "param", "code"),
    [
        ("created=yesterday", "created", "parameter_invalid_integer"),
        ("created[since]=1", "created[since]", "parameter_unknown"),
        ("colour=blue", "colour", "parameter_unknown"),
        ("expand[0]=data.customer&bogus[x]=1", "bogus", "parameter_unknown"),
    ],
)
def test_bad_parameters_are_400(
    emulator: StripeEmulator, http: httpx.Client, query: str, param: str, code: str
) -> None:
    body = error(http.get(f"/v1/subscriptions?{query}"), 400)
    assert (body["type"], body["param"], body["code"]) == ("invalid_request_error", param, code)


@pytest.mark.parametrize("limit", ["0", "101", "-1", "ten"])
def test_limit_outside_1_to_100_is_400(
    emulator: StripeEmulator, http: httpx.Client, limit: str
) -> None:
    body = error(http.get("/v1/subscriptions", params={"limit": limit}), 400)
    assert (body["type"], body["param"]) == ("invalid_request_error", "limit")


def test_limit_defaults_to_10_and_accepts_100(http: httpx.Client, emulator: StripeEmulator) -> None:
    for n in range(120):
        emulator.add_subscription(f"sub_x{n:03d}", customer="cus_x", status="active", created=T0)
    default = http.get("/v1/subscriptions").json()
    assert (len(default["data"]), default["has_more"]) == (10, True)
    full = http.get("/v1/subscriptions", params={"limit": 100, "status": "all"}).json()
    assert (len(full["data"]), full["has_more"]) == (100, True)


def test_cursor_pagination_walks_every_row_once(
    emulator: StripeEmulator, http: httpx.Client
) -> None:
    everything = ids(http.get("/v1/subscriptions", params={"status": "all", "limit": 100}))
    walked: list[str] = []
    params: dict[str, Any] = {"status": "all", "limit": 3}
    while True:
        page = http.get("/v1/subscriptions", params=params).json()
        assert page["object"] == "list"
        assert page["url"] == "/v1/subscriptions"
        walked += [row["id"] for row in page["data"]]
        if not page["has_more"]:
            break
        params["starting_after"] = page["data"][-1]["id"]
    assert walked == everything
    assert len(everything) == len(STATUSES)


def test_ending_before_returns_the_previous_page_newest_first(
    emulator: StripeEmulator, http: httpx.Client
) -> None:
    everything = ids(http.get("/v1/subscriptions", params={"status": "all", "limit": 100}))
    page = http.get(
        "/v1/subscriptions", params={"status": "all", "limit": 2, "ending_before": everything[4]}
    ).json()
    assert [row["id"] for row in page["data"]] == everything[2:4]
    assert page["has_more"] is True


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
def test_unknown_cursor_is_resource_missing(
    emulator: StripeEmulator, http: httpx.Client, cursor: str
) -> None:
    body = error(http.get("/v1/subscriptions", params={cursor: "sub_gone"}), 404)
    assert (body["code"], body["param"]) == ("resource_missing", cursor)


def test_both_cursors_at_once_is_400(emulator: StripeEmulator, http: httpx.Client) -> None:
    query = {"starting_after": "sub_active", "ending_before": "sub_paused"}
    error(http.get("/v1/subscriptions", params=query), 400)


@pytest.mark.parametrize(
    "query", ["expand%5B0%5D=data.customer", "expand[0]=data.customer", "expand[]=data.customer"]
)
def test_expand_customer_in_either_bracket_encoding(
    emulator: StripeEmulator, http: httpx.Client, query: str
) -> None:
    page = http.get(f"/v1/subscriptions?status=all&{query}").json()
    customers = [row["customer"] for row in page["data"]]
    assert all(c["object"] == "customer" and c["id"].startswith("cus_") for c in customers)
    plain = http.get("/v1/subscriptions?status=all").json()
    assert [c["id"] for c in customers] == [row["customer"] for row in plain["data"]]


def test_unsupported_expansion_is_400(emulator: StripeEmulator, http: httpx.Client) -> None:
    body = error(http.get("/v1/subscriptions?expand[]=data.latest_invoice"), 400)
    assert body["param"] == "expand"


def test_subscription_has_the_current_api_shape(
    emulator: StripeEmulator, http: httpx.Client
) -> None:
    emulator.add_subscription(
        "sub_shape",
        customer="cus_shape",
        status="active",
        created=T0,
        cancel_at_period_end=True,
        current_period_end=T0 + 86_400,
        metadata={"discord_user_id": "123"},
    )
    sub = http.get("/v1/subscriptions/sub_shape").json()
    assert "current_period_end" not in sub
    assert "current_period_start" not in sub
    item = sub["items"]["data"][0]
    assert (item["current_period_start"], item["current_period_end"]) == (
        T0 + 86_400 - 30 * 86_400,
        T0 + 86_400,
    )
    assert sub["items"]["url"] == "/v1/subscription_items?subscription=sub_shape"
    expected = {
        "id": "sub_shape",
        "object": "subscription",
        "customer": "cus_shape",
        "status": "active",
        "created": T0,
        "cancel_at_period_end": True,
        "cancel_at": T0 + 86_400,
        "canceled_at": None,
        "ended_at": None,
        "metadata": {"discord_user_id": "123"},
    }
    assert {k: sub[k] for k in expected} == expected


def test_ending_a_subscription_sets_ended_at(emulator: StripeEmulator, http: httpx.Client) -> None:
    emulator.set_status("sub_active", "canceled")
    sub = http.get("/v1/subscriptions/sub_active").json()
    assert sub["status"] == "canceled"
    assert sub["canceled_at"] == sub["ended_at"] == sub["items"]["data"][0]["current_period_end"]


def test_retrieve_expands_customer(emulator: StripeEmulator, http: httpx.Client) -> None:
    sub = http.get("/v1/subscriptions/sub_paused", params={"expand[]": "customer"}).json()
    assert sub["customer"]["id"] == "cus_1"


def test_retrieve_unknown_is_404_with_param_id(
    emulator: StripeEmulator, http: httpx.Client
) -> None:
    body = error(http.get("/v1/subscriptions/sub_gone"), 404)
    assert body == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "doc_url": "https://stripe.com/docs/error-codes/resource-missing",
        "param": "id",
        "message": "No such subscription: 'sub_gone'",
    }


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/charges"), ("POST", "/v1/subscriptions")]
)
def test_unemulated_routes_are_404(
    emulator: StripeEmulator, http: httpx.Client, method: str, path: str
) -> None:
    body = error(http.request(method, path), 404)
    assert body["message"] == f"Unrecognized request URL ({method}: {path})."


def test_load_frame_adds_every_row(emulator: StripeEmulator, http: httpx.Client) -> None:
    frame = pd.DataFrame(
        {
            SubscriptionCol.ID: [f"sub_f{n:03d}" for n in range(250)],
            SubscriptionCol.CUSTOMER_ID: [f"cus_f{n % 40}" for n in range(250)],
            SubscriptionCol.STATUS: [STATUSES[n % len(STATUSES)] for n in range(250)],
            SubscriptionCol.CREATED: [T0 + 10 + n for n in range(250)],
        }
    ).astype({SubscriptionCol.ID: "str"})
    emulator.load_frame(frame)
    newest = http.get("/v1/subscriptions", params={"status": "all", "limit": 100}).json()["data"]
    assert newest[0]["id"] == "sub_f249"
    counted = ids(http.get("/v1/subscriptions", params={"customer": "cus_f7", "status": "all"}))
    assert len(counted) == 7  # n = 7, 47, …, 247


def test_unknown_status_is_refused_when_adding(emulator: StripeEmulator) -> None:
    with pytest.raises(ValueError, match="unknown subscription status"):
        emulator.add_subscription("sub_z", customer="cus_z", status="ACTIVE", created=T0)


def test_requests_are_recorded(emulator: StripeEmulator, http: httpx.Client) -> None:
    http.get("/v1/subscriptions?status=all&created[gte]=5&expand[0]=data.customer")
    http.get("/v1/subscriptions/sub_gone")
    first, second = emulator.requests
    assert (first.method, first.path, first.status) == ("GET", "/v1/subscriptions", 200)
    assert first.query == {"status": "all", "created": {"gte": "5"}, "expand": ["data.customer"]}
    assert (second.path, second.status) == ("/v1/subscriptions/sub_gone", 404)


# ---- faults -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("should_retry", "header"), [(None, None), (False, "false"), (True, "true")]
)
def test_fail_next_500_with_or_without_should_retry(
    emulator: StripeEmulator, http: httpx.Client, should_retry: bool | None, header: str | None
) -> None:
    emulator.fail_next(2, status=500, should_retry=should_retry)
    for _ in range(2):
        response = http.get("/v1/subscriptions")
        assert error(response, 500)["type"] == "api_error"
        assert response.headers.get("stripe-should-retry") == header
        assert response.headers["request-id"].startswith("req_")
    assert http.get("/v1/subscriptions").status_code == 200


@pytest.mark.parametrize("should_retry", [None, True])
def test_fail_next_429_is_rate_limit(
    emulator: StripeEmulator, http: httpx.Client, should_retry: bool | None
) -> None:
    emulator.fail_next(1, status=429, should_retry=should_retry)
    response = http.get("/v1/subscriptions")
    assert error(response, 429)["code"] == "rate_limit"
    assert ("stripe-should-retry" in response.headers) is (should_retry is not None)


def test_faults_are_not_used_up_by_unauthenticated_requests(
    emulator: StripeEmulator, http: httpx.Client
) -> None:
    emulator.fail_next(1, status=503)
    assert http.get("/v1/subscriptions", headers={"Authorization": ""}).status_code == 401
    assert http.get("/v1/subscriptions").status_code == 503


def test_fail_page_counts_pages_by_cursor_position(
    emulator: StripeEmulator, http: httpx.Client
) -> None:
    emulator.fail_page(2, status=500, should_retry=False, times=2)
    page_one = http.get("/v1/subscriptions", params={"status": "all", "limit": 3})
    assert page_one.status_code == 200
    cursor = {"status": "all", "limit": 3, "starting_after": ids(page_one)[-1]}
    for _ in range(2):  # a retry of page 2 is page 2 again
        failed = http.get("/v1/subscriptions", params=cursor)
        assert failed.status_code == 500
        assert failed.headers["stripe-should-retry"] == "false"
    page_two = http.get("/v1/subscriptions", params=cursor)
    cursor["starting_after"] = ids(page_two)[-1]
    assert http.get("/v1/subscriptions", params=cursor).status_code == 200
    assert http.get("/v1/subscriptions", params={"status": "all", "limit": 3}).status_code == 200


def test_non_json_next(emulator: StripeEmulator, http: httpx.Client) -> None:
    emulator.non_json_next(1)
    response = http.get("/v1/subscriptions")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    with pytest.raises(ValueError):
        response.json()
    assert http.get("/v1/subscriptions").headers["content-type"] == "application/json"


def test_hang_longer_than_the_client_waits_times_out(
    emulator: StripeEmulator, http: httpx.Client
) -> None:
    emulator.hang_next(1, 30.0)
    with pytest.raises(httpx.ReadTimeout):
        http.get("/v1/subscriptions", timeout=0.2)
    assert http.get("/v1/subscriptions").status_code == 200


def test_short_hang_then_answers(emulator: StripeEmulator, http: httpx.Client) -> None:
    emulator.hang_next(1, 0.05)
    assert ids(http.get("/v1/subscriptions", params={"limit": 1})) == ["sub_active"]


def test_reset_faults(emulator: StripeEmulator, http: httpx.Client) -> None:
    emulator.fail_next(3)
    emulator.fail_page(1)
    emulator.non_json_next(1)
    emulator.reset_faults()
    assert http.get("/v1/subscriptions").status_code == 200


def test_requests_per_second_limit(
    emulator: StripeEmulator, http: httpx.Client, clock: FakeClock
) -> None:
    emulator.requests_per_second = 2
    assert [http.get("/v1/subscriptions").status_code for _ in range(3)] == [200, 200, 429]
    limited = http.get("/v1/subscriptions")
    assert error(limited, 429)["code"] == "rate_limit"
    assert "stripe-should-retry" not in limited.headers
    clock.now += 1.0
    assert http.get("/v1/subscriptions").status_code == 200


# ---- created ranges with cursors (what the client's parallel listing sends) ----------------------


def _walk(http: httpx.Client, query: str, limit: int = 4) -> list[str]:
    """Every id of a listing, following `starting_after` until `has_more` is false."""
    seen: list[str] = []
    cursor = ""
    while True:
        response = http.get(f"/v1/subscriptions?status=all&limit={limit}&{query}{cursor}")
        page = ids(response)
        seen += page
        if not response.json()["has_more"]:
            return seen
        cursor = f"&starting_after={page[-1]}"


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        ("created[gte]=1700000003&created[lt]=1700000007", lambda at: 3 <= at - T0 < 7),
        ("created[gt]=1700000003&created[lte]=1700000007", lambda at: 3 < at - T0 <= 7),
        ("created[lt]=1700000002", lambda at: at - T0 < 2),
        ("created[gte]=1700000009", lambda at: at - T0 >= 9),
        ("created=1700000005", lambda at: at - T0 == 5),
        ("created[gte]=1700000020", lambda at: False),
        ("created[gte]=1700000005&created[lt]=1700000005", lambda at: False),
    ],
)
def test_created_range_pages_hold_exactly_the_range_newest_first(
    loopback: Loopback, http: httpx.Client, query: str, keep: Any
) -> None:
    emu = StripeEmulator(api_keys=(KEY,))
    # Three subscriptions per second over ten seconds, added out of order.
    rows = [(f"sub_{n:03d}", T0 + n // 3) for n in range(30)]
    for sub_id, created in reversed(rows):
        emu.add_subscription(sub_id, customer="cus_1", status="active", created=created)
    loopback.install(emu.app)
    newest_first = [s for s, _ in sorted(rows, key=lambda r: (r[1], r[0]), reverse=True)]

    listed = _walk(http, query)

    assert listed == [s for s in newest_first if keep(dict(rows)[s])]


def test_created_range_continues_from_a_cursor_outside_the_range(
    loopback: Loopback, http: httpx.Client
) -> None:
    emu = StripeEmulator(api_keys=(KEY,))
    for n in range(12):
        emu.add_subscription(f"sub_{n:03d}", customer="cus_1", status="active", created=T0 + n // 3)
    loopback.install(emu.app)

    # sub_010 is in the newest second (T0+3); the range asks for T0+1 only.
    after = http.get(
        "/v1/subscriptions?status=all&limit=10&created[gte]=1700000001&created[lt]=1700000002"
        "&starting_after=sub_010"
    )
    before = http.get(
        "/v1/subscriptions?status=all&limit=10&created[lt]=1700000002&ending_before=sub_001"
    )

    assert ids(after) == ["sub_005", "sub_004", "sub_003"]
    assert ids(before) == ["sub_005", "sub_004", "sub_003", "sub_002"]
