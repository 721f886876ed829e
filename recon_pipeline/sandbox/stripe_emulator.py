"""A stateful Stripe API emulator for subscriptions, served on loopback under `/v1`.

It answers what the pipeline reads, the way the real API does for the SDK's pinned version:
`GET /v1/subscriptions` (status, customer, created and period filters, newest first, cursor
pagination, `expand[]=data.customer`) and `GET /v1/subscriptions/{id}`. Writes and Search are not
emulated; any other route answers Stripe's 404 "Unrecognized request URL".

Every request goes through the same steps, in this order:

1. latency (`latency_s`), then authentication (401 for a missing or unknown key);
2. the per-second limit, if any (429 `rate_limit`);
3. the next queued fault from `fail_next` / `hang_next` / `non_json_next`, first queued first;
4. parameter validation, then `fail_page` (listings only), then the answer.

Faults are consumed only by authenticated requests, so a bad-key request never uses one up.
A listing request's page number comes from its position, not from a request counter: page k
is the request whose first row is the ((k-1)·limit)-th subscription of the filtered listing. A
request without a cursor is page 1, the SDK's `starting_after=<last id of page 1>` is page 2,
and a retry of a request is the same page again, so `times` says how many attempts fail.

All handlers run on the one event loop of the server thread and never await halfway through a
state change, so the state needs no locks.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import itertools
import json
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import pandas as pd
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from recon_pipeline.domain.columns import SubscriptionCol, require_columns
from recon_pipeline.domain.policy import STRIPE_SUBSCRIPTION_STATUS_ORDER

# In a fixed order: the error message lists them, and tests cycle through them.
STATUSES = STRIPE_SUBSCRIPTION_STATUS_ORDER
TERMINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})
# What the account answers with when a request names no version (the SDK always names one).
ACCOUNT_API_VERSION = "2026-10-28.endive"
SANDBOX_PRICE_ID = "price_sandbox_monthly"
PERIOD_S = 30 * 86_400
MAX_LIMIT = 100
CLIENT_CLOSED = 499  # recorded (never sent) when the client hung up during a hang

_LIST_PARAMS = frozenset(
    {
        "automatic_tax",
        "collection_method",
        "created",
        "current_period_end",
        "current_period_start",
        "customer",
        "customer_account",
        "ending_before",
        "expand",
        "limit",
        "plan",
        "price",
        "starting_after",
        "status",
        "test_clock",
    }
)
_RANGE_KEYS = frozenset({"gt", "gte", "lt", "lte"})
_KEY = re.compile(r"^([A-Za-z0-9_.]+)(?:\[([^\[\]]*)\])?$")
_SUBSCRIPTION_PATH = re.compile(r"^/v1/subscriptions/([^/]+)$")
_NO_KEY_MESSAGE = (
    "You did not provide an API key. You need to provide your API key in the Authorization "
    "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). See "
    "https://stripe.com/docs/api#authentication for details, or we can help at "
    "https://support.stripe.com/."
)


def redact_key(key: str) -> str:
    """Mask a key as the real API does in its 401 message: `sk_test_****abcd`."""
    if len(key) <= 4:
        return "*" * len(key)
    if len(key) <= 12:
        return "*" * (len(key) - 4) + key[-4:]
    return key[:8] + "*" * (len(key) - 12) + key[-4:]


class StripeApiError(Exception):
    """An error answer in Stripe's `{"error": {...}}` shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}
        self.body: dict[str, Any] = {"type": type_, "message": message}
        if code is not None:
            self.body["code"] = code
            self.body["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param is not None:
            self.body["param"] = param


@dataclass(slots=True)
class _Subscription:
    id: str
    customer: str
    status: str
    created: int
    cancel_at_period_end: bool
    current_period_end: int
    metadata: dict[str, str]
    ended_at: int | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator saw it, for tests to inspect."""

    method: str
    path: str
    query: dict[str, Any]
    status: int
    time: float


@dataclass
class _Fault:
    kind: str  # "error" | "hang" | "non_json"
    status: int = 500
    should_retry: bool | None = None
    code: str | None = None
    seconds: float = 0.0
    times: int = 1


@dataclass
class _Listing:
    rows: list[_Subscription]
    has_more: bool
    offset: int = 0


class StripeEmulator:
    """Stripe's subscription reads, with state, auth, pagination and fault injection."""

    def __init__(
        self,
        *,
        api_keys: Iterable[str] = ("sk_test_sandbox",),
        restricted_keys: Iterable[str] = (),
        latency_s: float = 0.0,
        requests_per_second: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api_keys = frozenset(api_keys)
        # Restricted keys (`rk_…`) the account knows, without the permission to read
        # subscriptions: authenticated, then refused with 403 as Stripe refuses them.
        self.restricted_keys = frozenset(restricted_keys)
        self.latency_s = latency_s
        self.requests_per_second = requests_per_second
        self.clock = clock
        self.requests: list[RecordedRequest] = []
        self._subs: dict[str, _Subscription] = {}
        self._customer_created: dict[str, int] = {}
        self._order: list[_Subscription] | None = None
        self._position: dict[str, int] = {}
        self._created_desc_negated: list[int] = []
        self._faults: deque[_Fault] = deque()
        self._page_faults: dict[int, _Fault] = {}
        self._admitted: deque[float] = deque()
        self._request_ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route(
                    "/{path:path}",
                    self._endpoint,
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
                )
            ]
        )

    # ---- state -------------------------------------------------------------------------------

    def add_subscription(
        self,
        sub_id: str,
        *,
        customer: str,
        status: str,
        created: int,
        cancel_at_period_end: bool = False,
        current_period_end: int | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Add (or replace) a subscription; its customer exists from then on."""
        _check_status(status)
        sub = _Subscription(
            id=sub_id,
            customer=customer,
            status=status,
            created=int(created),
            cancel_at_period_end=cancel_at_period_end,
            current_period_end=int(current_period_end or created + PERIOD_S),
            metadata=dict(metadata or {}),
        )
        sub.ended_at = sub.current_period_end if status in TERMINAL_STATUSES else None
        self._subs[sub_id] = sub
        known = self._customer_created.get(customer)
        self._customer_created[customer] = sub.created if known is None else min(known, created)
        self._order = None

    def set_status(self, sub_id: str, status: str) -> None:
        """Move a subscription to another status (ending it, or reviving it, as Stripe would)."""
        _check_status(status)
        sub = self._subs[sub_id]
        if status in TERMINAL_STATUSES and sub.ended_at is None:
            sub.ended_at = sub.current_period_end
        elif status not in TERMINAL_STATUSES:
            sub.ended_at = None
        sub.status = status

    def load_frame(self, subscriptions: pd.DataFrame) -> None:
        """Add every row of a `SubscriptionCol` frame (rows with a known id replace it)."""
        require_columns(subscriptions, SubscriptionCol.ALL, "subscriptions")
        columns = (subscriptions[c].tolist() for c in SubscriptionCol.ALL)
        for sub_id, customer, status, created in zip(*columns, strict=True):
            self.add_subscription(sub_id, customer=customer, status=status, created=int(created))

    # ---- faults ------------------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        should_retry: bool | None = None,
        code: str | None = None,
    ) -> None:
        """Answer the next `n` requests with an error; a 429 defaults to code `rate_limit`.

        `should_retry` sends `Stripe-Should-Retry: true/false`; None sends no such header.
        """
        for _ in range(n):
            self._faults.append(_Fault("error", status, should_retry, code))

    def fail_page(
        self,
        k: int,
        *,
        status: int = 500,
        should_retry: bool | None = None,
        times: int = 1,
    ) -> None:
        """Answer the first `times` requests for page `k` (1-based) of a listing with an error."""
        self._page_faults[k] = _Fault("error", status, should_retry, times=times)

    def hang_next(self, n: int, seconds: float) -> None:
        """Hold the next `n` requests for `seconds` (or until the client hangs up), then answer."""
        for _ in range(n):
            self._faults.append(_Fault("hang", seconds=seconds))

    def non_json_next(self, n: int = 1) -> None:
        """Answer the next `n` requests with a 200 whose body is HTML, not JSON."""
        for _ in range(n):
            self._faults.append(_Fault("non_json"))

    def reset_faults(self) -> None:
        """Drop every queued fault (the per-second limit stays as configured)."""
        self._faults.clear()
        self._page_faults.clear()

    # ---- HTTP --------------------------------------------------------------------------------

    async def _endpoint(self, request: Request) -> Response:
        arrived = self.clock()
        headers = {
            "Request-Id": f"req_emu{next(self._request_ids):010d}",
            "Stripe-Version": request.headers.get("stripe-version", ACCOUNT_API_VERSION),
        }
        query_error: StripeApiError | None = None
        try:
            query = _parse_query(request.scope["query_string"])
        except StripeApiError as error:
            query = dict(parse_qsl(request.scope["query_string"].decode("latin-1")))
            query_error = error
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        try:
            key = self._authenticate(request.headers.get("authorization"))
            if key in self.restricted_keys:
                raise StripeApiError(
                    403,
                    f"The provided key '{redact_key(key)}' does not have the required "
                    "permissions for this endpoint on account 'acct_sandbox'. Having the "
                    "'rak_subscription_read' permission would allow this request to continue.",
                )
            self._throttle(arrived)
            fault = self._faults.popleft() if self._faults else None
            if fault is not None and fault.kind == "hang":
                if await _client_left_within(request, fault.seconds):
                    return self._record(
                        request, query, arrived, Response(status_code=CLIENT_CLOSED)
                    )
            elif fault is not None and fault.kind == "non_json":
                body = "<html><body><h1>502 Bad Gateway</h1></body></html>"
                response = Response(body, 200, headers, media_type="text/html")
                return self._record(request, query, arrived, response)
            elif fault is not None:
                raise _fault_error(fault)
            if query_error is not None:
                raise query_error
            body_json = self._route(request.method, request.url.path, query)
            response = Response(json.dumps(body_json), 200, headers, "application/json")
        except StripeApiError as error:
            response = Response(
                json.dumps({"error": error.body}),
                error.status,
                {**headers, **error.headers},
                "application/json",
            )
        return self._record(request, query, arrived, response)

    def _record(
        self, request: Request, query: dict[str, Any], arrived: float, response: Response
    ) -> Response:
        self.requests.append(
            RecordedRequest(request.method, request.url.path, query, response.status_code, arrived)
        )
        return response

    def _authenticate(self, authorization: str | None) -> str:
        """The request's API key, once it is one the account knows."""
        challenge = {"WWW-Authenticate": 'Basic realm="Stripe"'}
        if not authorization:
            raise StripeApiError(401, _NO_KEY_MESSAGE, headers=challenge)
        scheme, _, credentials = authorization.partition(" ")
        key = credentials.strip()
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(key, validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        elif scheme.lower() != "bearer":
            key = authorization
        if key not in self.api_keys | self.restricted_keys:
            message = f"Invalid API Key provided: {redact_key(key)}"
            raise StripeApiError(401, message, headers=challenge)
        return key

    def _throttle(self, now: float) -> None:
        if self.requests_per_second is None:
            return
        while self._admitted and self._admitted[0] <= now - 1.0:
            self._admitted.popleft()
        if len(self._admitted) >= self.requests_per_second:
            raise StripeApiError(
                429,
                "Request rate limit exceeded. Learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
                code="rate_limit",
            )
        self._admitted.append(now)

    def _route(self, method: str, path: str, query: dict[str, Any]) -> dict[str, Any]:
        if method == "GET" and path == "/v1/subscriptions":
            return self._list(query)
        match = _SUBSCRIPTION_PATH.match(path)
        if method == "GET" and match and match.group(1) != "search":
            return self._retrieve(match.group(1), query)
        raise StripeApiError(404, f"Unrecognized request URL ({method}: {path}).")

    def _retrieve(self, sub_id: str, query: dict[str, Any]) -> dict[str, Any]:
        _reject_unknown(query, {"expand"})
        expand = _expand(query, "customer")
        sub = self._subs.get(sub_id)
        if sub is None:
            raise StripeApiError(
                404, f"No such subscription: '{sub_id}'", code="resource_missing", param="id"
            )
        return self._subscription_json(sub, expand)

    def _list(self, query: dict[str, Any]) -> dict[str, Any]:
        _reject_unknown(query, _LIST_PARAMS)
        expand = _expand(query, "data.customer")
        limit = _integer(query.get("limit", "10"), "limit")
        if not 1 <= limit <= MAX_LIMIT:
            raise StripeApiError(
                400, f"Invalid limit: must be between 1 and {MAX_LIMIT}", param="limit"
            )
        if "starting_after" in query and "ending_before" in query:
            raise StripeApiError(
                400, "You may only specify one of these parameters: ending_before, starting_after."
            )
        keep = _filter(query)
        listing = self._window(query, limit, keep)
        fault = self._page_faults.get(listing.offset // limit + 1)
        if fault is not None and fault.times > 0:
            fault.times -= 1
            raise _fault_error(fault)
        return {
            "object": "list",
            "url": "/v1/subscriptions",
            "has_more": listing.has_more,
            "data": [self._subscription_json(s, expand) for s in listing.rows],
        }

    def _window(
        self, query: dict[str, Any], limit: int, keep: Callable[[_Subscription], bool]
    ) -> _Listing:
        order = self._ordered()
        backwards = "ending_before" in query
        cursor = query.get("ending_before" if backwards else "starting_after")
        if cursor is None:
            start = 0
        elif not isinstance(cursor, str) or cursor not in self._position:
            name = "ending_before" if backwards else "starting_after"
            raise StripeApiError(
                404, f"No such subscription: '{cursor}'", code="resource_missing", param=name
            )
        else:
            start = self._position[cursor] + (-1 if backwards else 1)
        # `created` bounds cut the newest-first order to one stretch; only it is scanned.
        first, stop = self._created_stretch(query.get("created"))
        if backwards:
            indexes: Iterable[int] = range(min(start, stop - 1), first - 1, -1)
        else:
            indexes = range(max(start, first), stop)
        found = list(itertools.islice((i for i in indexes if keep(order[i])), limit + 1))
        has_more = len(found) > limit
        found = sorted(found[:limit])
        listing = _Listing([order[i] for i in found], has_more)
        if self._page_faults:
            first = found[0] if found else start
            listing.offset = sum(1 for i in range(first) if keep(order[i]))
        return listing

    def _created_stretch(self, created: Any) -> tuple[int, int]:
        """The index range of the order in which `created` bounds (already validated) can hold.

        The order is newest first, so an upper bound moves the start and a lower bound the end.
        """
        newest_first = self._created_desc_negated
        first, stop = 0, len(newest_first)
        if created is None:
            return first, stop
        bounds = created if isinstance(created, dict) else {"gte": created, "lte": created}
        for key, raw in bounds.items():
            at = -int(raw)
            if key == "lt":  # created < b: skip every created >= b
                first = max(first, bisect.bisect_right(newest_first, at))
            elif key == "lte":
                first = max(first, bisect.bisect_left(newest_first, at))
            elif key == "gte":
                stop = min(stop, bisect.bisect_right(newest_first, at))
            elif key == "gt":
                stop = min(stop, bisect.bisect_left(newest_first, at))
        return first, max(first, stop)

    def _ordered(self) -> list[_Subscription]:
        if self._order is None:
            self._order = sorted(self._subs.values(), key=lambda s: (s.created, s.id), reverse=True)
            self._position = {s.id: i for i, s in enumerate(self._order)}
            self._created_desc_negated = [-s.created for s in self._order]
        return self._order

    def _subscription_json(self, sub: _Subscription, expand_customer: bool) -> dict[str, Any]:
        period_start = sub.current_period_end - PERIOD_S
        customer: Any = sub.customer
        if expand_customer:
            customer = {
                "id": sub.customer,
                "object": "customer",
                "created": self._customer_created.get(sub.customer, sub.created),
                "email": None,
                "name": None,
                "metadata": {},
                "livemode": False,
            }
        suffix = sub.id.removeprefix("sub_")
        return {
            "id": sub.id,
            "object": "subscription",
            "billing_cycle_anchor": sub.created,
            "cancel_at": sub.current_period_end if sub.cancel_at_period_end else None,
            "cancel_at_period_end": sub.cancel_at_period_end,
            "canceled_at": sub.ended_at if sub.status == "canceled" else None,
            "collection_method": "charge_automatically",
            "created": sub.created,
            "currency": "usd",
            "customer": customer,
            "ended_at": sub.ended_at,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": f"si_{suffix}",
                        "object": "subscription_item",
                        "created": sub.created,
                        "current_period_start": period_start,
                        "current_period_end": sub.current_period_end,
                        "metadata": {},
                        "price": {"id": SANDBOX_PRICE_ID, "object": "price", "currency": "usd"},
                        "quantity": 1,
                        "subscription": sub.id,
                    }
                ],
                "has_more": False,
                "total_count": 1,
                "url": f"/v1/subscription_items?subscription={sub.id}",
            },
            "latest_invoice": None,
            "livemode": False,
            "metadata": sub.metadata,
            "pause_collection": None,
            "start_date": sub.created,
            "status": sub.status,
            "test_clock": None,
        }


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown subscription status {status!r}; expected one of {STATUSES}")


async def _client_left_within(request: Request, seconds: float) -> bool:
    """Wait up to `seconds`; True as soon as the client disconnects."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(disconnected(), timeout=seconds)
    except TimeoutError:
        return False
    return True


def _fault_error(fault: _Fault) -> StripeApiError:
    headers = {}
    if fault.should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if fault.should_retry else "false"
    if fault.status == 429:
        return StripeApiError(
            429, "Request rate limit exceeded.", code=fault.code or "rate_limit", headers=headers
        )
    return StripeApiError(
        fault.status,
        "An unknown error occurred while processing the request.",
        type_="api_error",
        code=fault.code,
        headers=headers,
    )


def _parse_query(raw: bytes) -> dict[str, Any]:
    """Percent-decode, then read brackets: `expand[0]`/`expand[]` lists, `created[gte]` dicts."""
    params: dict[str, Any] = {}
    indexed: dict[str, list[tuple[int, int, str]]] = {}
    for order, (key, value) in enumerate(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)):
        match = _KEY.match(key)
        if match is None:
            raise StripeApiError(400, f"Invalid parameter name: {key}", param=key)
        name, sub = match.group(1), match.group(2)
        if sub is None:
            if name in params or name in indexed:
                raise StripeApiError(400, f"Parameter given more than once: {name}", param=name)
            params[name] = value
        elif sub == "" or sub.isdigit():
            if name in params:
                raise StripeApiError(400, f"Invalid array: {name}", param=name)
            indexed.setdefault(name, []).append((int(sub) if sub else order, order, value))
        else:
            mapping = params.setdefault(name, {})
            if not isinstance(mapping, dict) or name in indexed:
                raise StripeApiError(400, f"Invalid hash: {name}", param=name)
            mapping[sub] = value
    for name, items in indexed.items():
        params[name] = [value for _, _, value in sorted(items)]
    return params


def _reject_unknown(query: dict[str, Any], allowed: Iterable[str]) -> None:
    for name in query:
        if name not in allowed:
            raise StripeApiError(
                400, f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )


def _string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise StripeApiError(400, f"Invalid string: {value!r}", param=param)
    return value


def _integer(value: Any, param: str) -> int:
    if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
        raise StripeApiError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param
        )
    return int(value)


def _expand(query: dict[str, Any], allowed: str) -> bool:
    paths = query.get("expand", [])
    if not isinstance(paths, list):
        raise StripeApiError(400, "Invalid array", param="expand")
    for path in paths:
        if path != allowed:
            raise StripeApiError(400, f"This property cannot be expanded ({path}).", param="expand")
    return allowed in paths


def _range(value: Any, name: str) -> Callable[[int], bool]:
    """`created=123` or `created[gte]=…&created[lt]=…` as a test on one integer field."""
    if not isinstance(value, dict):
        exact = _integer(value, name)
        return lambda at: at == exact
    bounds: list[Callable[[int], bool]] = []
    for key, raw in value.items():
        if key not in _RANGE_KEYS:
            raise StripeApiError(
                400,
                f"Received unknown parameter: {name}[{key}]",
                code="parameter_unknown",
                param=f"{name}[{key}]",
            )
        bound = _integer(raw, f"{name}[{key}]")
        bounds.append(
            {
                "gt": lambda at, b=bound: at > b,
                "gte": lambda at, b=bound: at >= b,
                "lt": lambda at, b=bound: at < b,
                "lte": lambda at, b=bound: at <= b,
            }[key]
        )
    return lambda at: all(test(at) for test in bounds)


def _filter(query: dict[str, Any]) -> Callable[[_Subscription], bool]:
    """The listing's filters as one predicate (every emulated subscription has one item)."""
    checks: list[Callable[[_Subscription], bool]] = []
    status = _string(query.get("status", "default"), "status")
    if status == "default":
        checks.append(lambda s: s.status != "canceled")
    elif status == "ended":
        checks.append(lambda s: s.status in TERMINAL_STATUSES)
    elif status in STATUSES:
        checks.append(lambda s: s.status == status)
    elif status != "all":
        raise StripeApiError(
            400,
            f"Invalid status: must be one of {', '.join(STATUSES)}, all, or ended",
            param="status",
        )
    if "customer" in query:
        customer = _string(query["customer"], "customer")
        checks.append(lambda s: s.customer == customer)
    for name in ("price", "plan"):
        if name in query:
            price = _string(query[name], name)
            checks.append(lambda s, p=price: p == SANDBOX_PRICE_ID)
    if "collection_method" in query:
        method = _string(query["collection_method"], "collection_method")
        if method not in ("charge_automatically", "send_invoice"):
            raise StripeApiError(
                400, f"Invalid collection_method: {method}", param="collection_method"
            )
        checks.append(lambda s: method == "charge_automatically")
    if "automatic_tax" in query:
        enabled = query["automatic_tax"]
        if not isinstance(enabled, dict) or enabled.get("enabled") not in ("true", "false"):
            raise StripeApiError(400, "Invalid boolean", param="automatic_tax[enabled]")
        checks.append(lambda s: enabled["enabled"] == "false")
    for name in ("customer_account", "test_clock"):
        # No emulated subscription belongs to an Account customer or runs on a test clock.
        if name in query:
            _string(query[name], name)
            checks.append(lambda s: False)
    if "created" in query:
        created = _range(query["created"], "created")
        checks.append(lambda s: created(s.created))
    if "current_period_end" in query:
        end = _range(query["current_period_end"], "current_period_end")
        checks.append(lambda s: end(s.current_period_end))
    if "current_period_start" in query:
        start = _range(query["current_period_start"], "current_period_start")
        checks.append(lambda s: start(s.current_period_end - PERIOD_S))
    return lambda s: all(check(s) for check in checks)
