"""Stripe billing through the official SDK: every subscription, as one complete snapshot.

The listing asks for `status=all` (without it Stripe silently leaves out canceled subscriptions,
and with them every revocation) and walks the cursor pages with the SDK's `next_page`. The SDK
retries connection errors, timeouts and 5xx answers itself (`max_network_retries`), but never a
plain 429; this client retries those with a bounded, jittered exponential backoff. Any page that
still fails aborts the snapshot with `StripeSnapshotError`: a partial list would read as
"canceled" downstream and revoke access that was paid for.

The secret key never leaves the SDK's request headers: messages, logs and `repr` show it
redacted (`sk_test_****abcd`).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
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


class StripeSnapshotError(RuntimeError):
    """The subscription snapshot could not be taken in full; nothing partial is returned.

    Attributes:
        page: The 1-based page whose request failed, if a request failed.
        http_status: Stripe's HTTP status, when there was an answer.
        request_id: Stripe's `Request-Id`, for Stripe support and the dashboard's logs.
        code: Stripe's error code (`rate_limit`, `resource_missing`, …), when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        page: int | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.page = page
        self.http_status = http_status
        self.request_id = request_id
        self.code = code


@dataclass
class StripeListingStats:
    """Counters of the last `list_subscriptions` call, for run metadata.

    `requests` counts every HTTP attempt, the SDK's own retries and timed-out attempts included.
    """

    pages: int = 0
    requests: int = 0
    rate_limit_retries: int = 0
    rows: int = 0

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

    def __init__(self, on_send: Callable[[], None]) -> None:
        super().__init__()
        self._on_send = on_send

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self._on_send()
        return super().send(request, *args, **kwargs)


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
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not secret_key:
            raise ValueError("a Stripe secret key is required")
        if not 1 <= page_size <= 100:
            raise ValueError(f"page_size must be between 1 and 100, not {page_size}")
        self._secret_key = secret_key
        self._api_base = api_base.rstrip("/") if api_base else None
        self._rate_limit_retries = rate_limit_retries
        self._max_network_retries = max_network_retries
        self._page_size = page_size
        self._sleep = sleep
        self.stats = StripeListingStats()
        self._session = requests.Session()
        adapter = _CountingAdapter(self._count_request)
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
        ids: list[str] = []
        customers: list[str] = []
        statuses: list[str] = []
        created: list[int] = []
        params = {"status": "all", "limit": self._page_size}
        page_no = 1
        page = self._fetch(lambda: self._client.v1.subscriptions.list(params=params), page_no)
        while True:
            try:
                rows, has_more = page["data"], bool(page["has_more"])
                for sub in rows:
                    customer = sub["customer"]
                    ids.append(sub["id"])
                    customers.append(customer if isinstance(customer, str) else customer["id"])
                    statuses.append(sub["status"])
                    created.append(int(sub["created"]))
            except (KeyError, TypeError, ValueError) as error:
                detail = f"page {page_no} was not a list of subscriptions: {error!r}"
                raise self._error(detail, page_no) from None
            if not has_more:
                break
            if not rows:
                raise self._error(f"page {page_no} was empty but said more follow", page_no)
            page_no += 1
            page = self._fetch(page.next_page, page_no)
        if len(set(ids)) != len(ids):
            raise self._error("the listing returned some subscriptions more than once")
        self.stats.rows = len(ids)
        frame = pd.DataFrame(
            {
                SubscriptionCol.ID: ids,
                SubscriptionCol.CUSTOMER_ID: customers,
                SubscriptionCol.STATUS: statuses,
                SubscriptionCol.CREATED: created,
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

    def _count_request(self) -> None:
        self.stats.requests += 1

    def _fetch(self, call: Callable[[], Any], page_no: int) -> Any:
        def note_retry(state: tenacity.RetryCallState) -> None:
            self.stats.rate_limit_retries += 1
            wait = state.next_action.sleep if state.next_action else 0.0
            logger.warning(
                "Stripe rate-limited subscriptions page %d (attempt %d); retrying in %.1f s",
                page_no,
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
            raise self._stripe_error(error, page_no) from None
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise self._error(f"page {page_no} answer made no sense: {error!r}", page_no) from None
        self.stats.pages += 1
        return page

    def _stripe_error(self, error: stripe.StripeError, page_no: int) -> StripeSnapshotError:
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
            f"page {page_no} failed ({where}): {what}: {detail}",
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
            page=page,
            http_status=http_status,
            request_id=request_id,
            code=code,
        )

    def _scrub(self, text: str) -> str:
        text = text.replace(self._secret_key, redact_key(self._secret_key))
        return _ANY_KEY.sub(lambda m: redact_key(m.group(0)), text)
