"""Stripe billing through the official SDK: every subscription, as one complete snapshot.

The listing asks for `status=all` (without it Stripe silently leaves out canceled subscriptions,
and with them every revocation) and walks the cursor pages (`starting_after`) through the SDK's
`StripeClient.raw_request`, reading each page's JSON directly: turning every subscription into a
`StripeObject` cost most of the listing's time and only four fields are kept.

A small account is walked page by page, newest first. Once the walk has gone `sequential_pages`
pages and more follow, the rest is split into `created` ranges (`created[gte]`/`created[lt]`,
whole seconds, the oldest range unbounded below) that `concurrency` threads page through at the
same time. `created` never changes, so every subscription falls in exactly one range and the
union is the sequential listing; the newest range continues the sequential walk's cursor, so
subscriptions sharing the last walked second are neither repeated nor skipped. A few one-row
probes find roughly where the oldest subscription lies, so the ranges hold similar counts.

The SDK retries connection errors, timeouts and 5xx answers itself (`max_network_retries`), but
never a plain 429; this client retries those with a bounded, jittered exponential backoff. Any
page of any range that still fails aborts the snapshot with `StripeSnapshotError` (the other
ranges stop at their next page): a partial list would read as "canceled" downstream and revoke
access that was paid for.

The secret key never leaves the SDK's request headers: messages, logs and `repr` show it
redacted (`sk_test_****abcd`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import requests
import stripe
import tenacity

from recon_pipeline.domain.columns import SubscriptionCol

logger = logging.getLogger(__name__)

_ANY_KEY = re.compile(r"\b(?:sk|rk)_(?:test|live)_[0-9A-Za-z]+")
_MAX_DETAIL_CHARS = 400
_BACKOFF_INITIAL_S = 1.0
_BACKOFF_MAX_S = 30.0
_BACKOFF_JITTER_S = 1.0
_LIST_PATH = "/v1/subscriptions"
# No subscription predates Stripe (2011); older ones would only unbalance the ranges, since the
# oldest range has no lower bound.
_STRIPE_EPOCH = 1_293_840_000


class StripeSnapshotError(RuntimeError):
    """The subscription snapshot could not be taken in full; nothing partial is returned.

    Attributes:
        page: The 1-based page whose request failed, if a request failed.
        http_status: Stripe's HTTP status, when there was an answer.
        request_id: Stripe's `Request-Id`, for Stripe support and the dashboard's logs.
        code: Stripe's error code (`rate_limit`, `resource_missing`, …), when it sent one.
        detail: what went wrong, without the words about the snapshot.
    """

    def __init__(
        self,
        message: str,
        *,
        page: int | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        detail: str,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.detail = detail
        self.page = page
        self.http_status = http_status
        self.request_id = request_id
        self.code = code


@dataclass
class StripeListingStats:
    """Counters of the last `list_subscriptions` call, for run metadata.

    `requests` counts every HTTP attempt, the SDK's own retries, timed-out attempts and the
    one-row probes that place the `created` ranges included; `slices` is how many ranges the
    listing was split into after its sequential start (0: it was walked page by page only).
    """

    pages: int = 0
    requests: int = 0
    rate_limit_retries: int = 0
    rows: int = 0
    slices: int = 0

    def as_metadata(self) -> dict[str, int]:
        return {f"stripe_{name}": value for name, value in asdict(self).items()}


def redact_key(key: str) -> str:
    """`sk_test_51Hx…abcd` → `sk_test_****abcd`; short or odd keys become `****`."""
    prefix = re.match(r"(?:sk|rk|pk)_(?:test|live)_", key)
    if prefix is None or len(key) < prefix.end() + 8:
        return "****"
    return f"{prefix.group(0)}****{key[-4:]}"


class _CountingAdapter(requests.adapters.HTTPAdapter):
    """Counts every request the SDK sends, including its retries and ones that time out."""

    def __init__(self, on_send: Callable[[], None], pool_size: int) -> None:
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size)
        self._on_send = on_send

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self._on_send()
        return super().send(request, *args, **kwargs)


@dataclass
class _Slice:
    """One part of the listing: `created` bounds (whole seconds) and where its walk starts."""

    gte: int | None = None
    lt: int | None = None
    starting_after: str | None = None
    label: str = ""
    ids: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    created: list[int] = field(default_factory=list)

    customer: str | None = None

    def params(self) -> dict[str, Any]:
        bounds = {k: v for k, v in (("gte", self.gte), ("lt", self.lt)) if v is not None}
        params: dict[str, Any] = {"created": bounds} if bounds else {}
        if self.customer is not None:
            params["customer"] = self.customer
        return params


class _Aborted(Exception):
    """Another range failed; this one stops at its next page."""


class StripeBilling:
    """Read-only access to Stripe subscriptions, for the reconciliation snapshot.

    Args:
        secret_key: A secret (`sk_…`) or restricted (`rk_…`) key that may read subscriptions.
        api_base: Another API origin, e.g. the emulator's `http://127.0.0.1:PORT`; None for Stripe.
        max_network_retries: Retries the SDK makes on timeouts, connection errors and 5xx.
        timeout_s: Per-request timeout (connect and read).
        rate_limit_retries: Retries of a page answered with a plain 429, which the SDK does not
            retry itself.
        page_size: Subscriptions per page, 1–100.
        concurrency: How many `created` ranges are listed at the same time once the listing is
            long; 1 walks every page in turn. Each thread has at most one request in flight, so
            this bounds the request rate to `concurrency` / (Stripe's answer time); keep it well
            under the account's rate limit (live mode 100 requests/s, test mode 25/s).
        sequential_pages: Pages walked in turn before splitting the rest into ranges; a listing
            that ends within them is never split.
        slices_per_thread: Ranges per thread, so that uneven ranges still keep every thread busy.
        sleep: Waits between rate-limit retries; tests pass a recorder.
    """

    def __init__(
        self,
        secret_key: str,
        *,
        api_base: str | None = None,
        max_network_retries: int = 2,
        timeout_s: float = 20.0,
        rate_limit_retries: int = 5,
        page_size: int = 100,
        concurrency: int = 4,
        sequential_pages: int = 10,
        slices_per_thread: int = 4,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not secret_key:
            raise ValueError("a Stripe secret key is required")
        if not 1 <= page_size <= 100:
            raise ValueError(f"page_size must be between 1 and 100, not {page_size}")
        if not 1 <= concurrency <= 32:
            raise ValueError(f"concurrency must be between 1 and 32, not {concurrency}")
        if sequential_pages < 1 or slices_per_thread < 1:
            raise ValueError("sequential_pages and slices_per_thread must be at least 1")
        self._secret_key = secret_key
        self._api_base = api_base.rstrip("/") if api_base else None
        self._rate_limit_retries = rate_limit_retries
        self._max_network_retries = max_network_retries
        self._page_size = page_size
        self._concurrency = concurrency
        self._sequential_pages = sequential_pages
        self._slices_per_thread = slices_per_thread
        self._sleep = sleep
        self._lock = threading.Lock()
        self.stats = StripeListingStats()
        self._session = requests.Session()
        adapter = _CountingAdapter(self._count_request, pool_size=max(10, concurrency))
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": self._api_base} if self._api_base else None,
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout_s, session=self._session),
        )

    def __repr__(self) -> str:
        base = self._api_base or "https://api.stripe.com"
        return f"StripeBilling(api_base={base!r}, key={redact_key(self._secret_key)!r})"

    def __enter__(self) -> StripeBilling:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()

    def list_subscriptions(self) -> pd.DataFrame:
        """Every subscription of every status, one row each, as a `SubscriptionCol` frame.

        Raises:
            StripeSnapshotError: A page could not be fetched (after retries) or made no sense.
        """
        self.stats = StripeListingStats()
        start = _Slice()
        sequential_only = self._concurrency == 1
        more = self._walk(start, max_pages=None if sequential_only else self._sequential_pages)
        parts = [start]
        if more:
            parts += self._list_in_slices(start)
        ids = [i for part in parts for i in part.ids]
        if len(set(ids)) != len(ids):
            raise self._error("the listing returned some subscriptions more than once")
        self.stats.rows = len(ids)
        return _subscription_frame(parts)

    def probe_subscriptions(self) -> None:
        """List one subscription (`recon-pipeline check`): one request that fails as the
        snapshot would, with a rejected key or a restricted key that may not read them.

        Raises:
            StripeSnapshotError: with the HTTP status and Stripe's message.
        """
        self._fetch(lambda: self._raw_page({"status": "all", "limit": 1}), None, "listing")

    def customer_subscriptions(self, customer_id: str) -> pd.DataFrame:
        """One customer's subscriptions of every status now (`explain --live`), one row each.

        Raises:
            StripeSnapshotError: a page could not be fetched (after retries) or made no sense.
        """
        part = _Slice(label=f"customer {customer_id}", customer=customer_id)
        self._walk(part)
        return _subscription_frame([part])

    def _list_in_slices(self, start: _Slice) -> list[_Slice]:
        """The rest of the listing after `start`'s walk, as `created` ranges listed in parallel.

        Newest first: the ties of the last walked second (continuing `start`'s cursor), then
        ranges down to the oldest, which has no lower bound.
        """
        newest = start.created[-1]
        oldest = self._oldest_estimate(newest)
        count = self._concurrency * self._slices_per_thread
        width = max(1, -(-(newest - oldest) // count))  # ceiling
        head = _Slice(gte=newest, starting_after=start.ids[-1], label=f"created>={newest}")
        slices = [head]
        upper = newest
        while upper > oldest and len(slices) <= count:
            lower = upper - width
            slices.append(_Slice(gte=lower, lt=upper, label=f"created [{lower}, {upper})"))
            upper = lower
        last = slices[-1] if len(slices) > 1 else None
        if last is not None:
            last.gte, last.label = None, f"created<{last.lt}"
        else:
            slices.append(_Slice(lt=newest, label=f"created<{newest}"))
        self.stats.slices = len(slices)
        abort = threading.Event()
        errors: list[StripeSnapshotError] = []

        def walk(part: _Slice) -> None:
            try:
                self._walk(part, abort=abort)
            except _Aborted:
                pass
            except StripeSnapshotError as error:
                with self._lock:
                    errors.append(error)
                abort.set()

        with ThreadPoolExecutor(self._concurrency, thread_name_prefix="stripe-list") as pool:
            list(pool.map(walk, slices))
        if errors:
            raise errors[0]
        return slices

    def _oldest_estimate(self, newest: int) -> int:
        """Roughly the oldest `created` below `newest`, by bisection with one-row probes.

        Only the ranges' balance depends on it: the oldest range has no lower bound.
        """
        lo, hi = min(_STRIPE_EPOCH, newest - 1), newest  # nothing below lo, something below hi
        if not self._any_before(hi):
            return newest
        while hi - lo > max(1, (newest - hi) // 16):
            mid = (lo + hi) // 2
            if self._any_before(mid):
                hi = mid
            else:
                lo = mid
        return lo

    def _any_before(self, at: int) -> bool:
        params = {"status": "all", "limit": 1, "created": {"lt": at}}
        page = self._fetch(lambda: self._raw_page(params), None, f"probe created<{at}")
        try:
            return bool(page["data"])
        except (KeyError, TypeError) as error:
            raise self._error(f"a probe answer was not a list: {error!r}") from None

    def _walk(
        self, part: _Slice, *, max_pages: int | None = None, abort: threading.Event | None = None
    ) -> bool:
        """Append `part`'s pages to it; True when pages remain after `max_pages`."""
        where = f" of {part.label}" if part.label else ""
        page_no = 0
        while max_pages is None or page_no < max_pages:
            if abort is not None and abort.is_set():
                raise _Aborted
            page_no += 1
            params: dict[str, Any] = {"status": "all", "limit": self._page_size, **part.params()}
            if part.starting_after is not None:
                params["starting_after"] = part.starting_after
            page = self._fetch(
                lambda p=params: self._raw_page(p), page_no, f"page {page_no}{where}"
            )
            try:
                rows, has_more = page["data"], bool(page["has_more"])
                for sub in rows:
                    customer = sub["customer"]
                    part.ids.append(sub["id"])
                    part.customers.append(customer if isinstance(customer, str) else customer["id"])
                    part.statuses.append(sub["status"])
                    part.created.append(int(sub["created"]))
            except (KeyError, TypeError, ValueError) as error:
                detail = f"page {page_no}{where} was not a list of subscriptions: {error!r}"
                raise self._error(detail, page_no) from None
            if not has_more:
                return False
            if not rows:
                raise self._error(f"page {page_no}{where} was empty but said more follow", page_no)
            part.starting_after = part.ids[-1]
        return True

    def _raw_page(self, params: dict[str, Any]) -> Any:
        # The SDK's raw path: same auth, retries and error mapping, JSON parsed once.
        return self._client.raw_request("get", _LIST_PATH, **params).data

    def _count_request(self) -> None:
        with self._lock:
            self.stats.requests += 1

    def _fetch(self, call: Callable[[], Any], page_no: int | None, subject: str) -> Any:
        """One page (or probe) with bounded 429 retries; `subject` names it in messages."""

        def note_retry(state: tenacity.RetryCallState) -> None:
            with self._lock:
                self.stats.rate_limit_retries += 1
            wait = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "Stripe rate-limited subscriptions %s (attempt %d); retrying in %.1f s",
                subject,
                state.attempt_number,
                wait,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(stripe.RateLimitError),
            stop=tenacity.stop_after_attempt(self._rate_limit_retries + 1),
            wait=tenacity.wait_exponential_jitter(
                initial=_BACKOFF_INITIAL_S, max=_BACKOFF_MAX_S, jitter=_BACKOFF_JITTER_S
            ),
            sleep=self._sleep,
            before_sleep=note_retry,
            reraise=True,
        )
        try:
            page = retrying(call)
        except stripe.StripeError as error:
            raise self._stripe_error(error, page_no, subject) from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._error(f"{subject} answer made no sense: {error!r}", page_no) from None
        if page_no is not None:
            with self._lock:
                self.stats.pages += 1
        return page

    def _stripe_error(
        self, error: stripe.StripeError, page_no: int | None, subject: str
    ) -> StripeSnapshotError:
        status = error.http_status
        if isinstance(error, stripe.RateLimitError):
            attempts = self._rate_limit_retries + 1
            what = f"still rate-limited after {attempts} attempt{'s' if attempts > 1 else ''}"
        elif isinstance(error, stripe.AuthenticationError):
            what = "Stripe rejected the API key"
        elif isinstance(error, stripe.PermissionError):
            what = "the API key may not list subscriptions"
        elif isinstance(error, stripe.APIConnectionError):
            what = (
                "no answer from Stripe (timeout or connection error) after "
                f"{self._max_network_retries} SDK retries"
            )
        elif isinstance(error, stripe.APIError) and status is not None and status < 300:
            what = "Stripe's answer was not valid JSON"
        elif isinstance(error, stripe.InvalidRequestError):
            what = "Stripe refused the request"
        else:
            what = "Stripe API error"
        where = f"HTTP {status}" if status is not None else "no HTTP answer"
        if error.request_id:
            where += f", request {error.request_id}"
        detail = " ".join((error.user_message or type(error).__name__).split())
        # The SDK wraps a transport error in a plea to contact support; keep the error itself.
        _, network, transport = detail.partition("(Network error: ")
        if network:
            detail = transport.removesuffix(")")
        return self._error(
            f"{subject} failed ({where}): {what}: {detail}",
            page_no,
            http_status=status,
            request_id=error.request_id,
            code=error.code or getattr(error.error, "code", None),
        )

    def _error(
        self,
        detail: str,
        page: int | None = None,
        *,
        http_status: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
    ) -> StripeSnapshotError:
        text = self._scrub(detail)
        if len(text) > _MAX_DETAIL_CHARS:
            text = text[:_MAX_DETAIL_CHARS] + "…"
        return StripeSnapshotError(
            f"Stripe subscription snapshot aborted, no partial data kept: {text}",
            detail=text,
            page=page,
            http_status=http_status,
            request_id=request_id,
            code=code,
        )

    def _scrub(self, text: str) -> str:
        text = text.replace(self._secret_key, redact_key(self._secret_key))
        return _ANY_KEY.sub(lambda m: redact_key(m.group(0)), text)


def _subscription_frame(parts: list[_Slice]) -> pd.DataFrame:
    """The listed subscriptions as a `SubscriptionCol` frame."""
    ids = [i for part in parts for i in part.ids]
    frame = pd.DataFrame(
        {
            SubscriptionCol.ID: ids,
            SubscriptionCol.CUSTOMER_ID: [c for part in parts for c in part.customers],
            SubscriptionCol.STATUS: [s for part in parts for s in part.statuses],
            SubscriptionCol.CREATED: [c for part in parts for c in part.created],
        },
        columns=list(SubscriptionCol.ALL),
    )
    return frame.astype(
        {
            SubscriptionCol.ID: "str",
            SubscriptionCol.CUSTOMER_ID: "str",
            SubscriptionCol.STATUS: "str",
            SubscriptionCol.CREATED: "int64",
        }
    )
