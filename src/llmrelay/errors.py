"""The one error tree. Each class owns its HTTP status and its OpenAI and Anthropic error types.

    GatewayError                      500  api_error
    ├── ConfigError                   500  api_error           (bad config file, missing credential)
    ├── InvalidRequestError           400  invalid_request_error
    │   ├── ModelNotFoundError        404  invalid_request_error / not_found_error
    │   ├── ContextLengthExceeded     400  invalid_request_error (code context_length_exceeded)
    │   └── PayloadTooLargeError      413  invalid_request_error / request_too_large
    ├── NotFoundError                 404  not_found_error     (unknown route)
    ├── MethodNotAllowedError         405  invalid_request_error
    ├── AuthenticationError           401  authentication_error
    ├── PermissionDeniedError         403  permission_error
    ├── RateLimitError                429  rate_limit_error    (our own limits; retry_after)
    │   └── BudgetExceeded            429  rate_limit_error    (code budget_exceeded; retry_after: the reset)
    ├── QueueTimeout                  503  overloaded_error    (code queue_timeout: waited max_wait_s for a deployment)
    │   └── QueueFull                 503  overloaded_error    (code queue_full: max_depth already waiting)
    ├── LimiterUnavailable            503  overloaded_error    (code rate_limiter_unavailable: Redis down, fail-closed)
    ├── StoreUnavailable              503  overloaded_error    (code store_unavailable: PostgreSQL down; calllog_unavailable, key_store_unavailable)
    ├── ClientDisconnected            499                      (the client left while queued; on record only)
    ├── GuardrailBlocked              400  invalid_request_error (code guardrail_<guard>, e.g. guardrail_injection)
    │   └── GuardrailOutputInvalid    502  api_error           (code guardrail_json: no valid answer after the re-ask)
    └── UpstreamError                 502  api_error           (provider, status_code, body, headers)
        ├── UpstreamBadRequest        400  invalid_request_error (the provider rejected the request)
        ├── UpstreamAuthError         502  api_error           (our credential for the provider is bad)
        ├── UpstreamRateLimited       429  rate_limit_error    (retry_after)
        ├── UpstreamUnavailable       503  overloaded_error    (5xx from the provider)
        ├── UpstreamTimeout           504  timeout_error
        ├── UpstreamConnectionError   502  api_error           (refused, reset, dropped)
        ├── UpstreamProtocolError     502  api_error           (malformed body, truncated stream)
        └── AllAttemptsFailed         the attempts' common status, else 502 (every attempt listed)

Upstream failures are translated into this tree by each provider adapter; the server renders it into
the route's wire format in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .types import Usage


class GatewayError(Exception):
    status: int = 500
    openai_type: str = "api_error"
    anthropic_type: str = "api_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code

    def headers(self) -> dict[str, str]:
        """Extra response headers the client should see (e.g. Retry-After)."""
        return {}

    attempts: list[str] | None = None  # set when the error ends several attempts (see AllAttemptsFailed)
    usage: Usage | None = None  # tokens already spent when it was raised (an answer a guardrail refused)

    def details(self) -> dict[str, Any]:
        """Extra fields for the error object in the response body."""
        return {"attempts": self.attempts} if self.attempts else {}


class ConfigError(GatewayError):
    pass


def first_problem(exc: Any) -> str:
    """A pydantic ``ValidationError``'s first problem on one line: ``setting.path: message``."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "top level"
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"  # pydantic's prefix for our checks


class InvalidRequestError(GatewayError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class ModelNotFoundError(InvalidRequestError):
    status = 404
    anthropic_type = "not_found_error"
    default_code = "model_not_found"


class ContextLengthExceeded(InvalidRequestError):
    default_code = "context_length_exceeded"


class PayloadTooLargeError(InvalidRequestError):
    status = 413
    anthropic_type = "request_too_large"
    default_code = "request_too_large"


class NotFoundError(GatewayError):
    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    default_code = "not_found"


class MethodNotAllowedError(GatewayError):
    status = 405
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = "method_not_allowed"


class ConflictError(GatewayError):
    """The request contradicts one already accepted (an idempotency key reused for another body)."""

    status = 409
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = "conflict"


class RequestTimeoutError(GatewayError):
    """The client stopped sending its request body."""

    status = 408
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = "request_timeout"


class AuthenticationError(GatewayError):
    status = 401
    openai_type = "authentication_error"
    anthropic_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status = 403
    openai_type = "permission_error"
    anthropic_type = "permission_error"


class _RetryAfter:
    """An error that tells the client when to try again (the Retry-After header)."""

    retry_after: float | None

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)  # type: ignore[call-arg]  # GatewayError's, next in the MRO
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, round(self.retry_after)))}


class RateLimitError(_RetryAfter, GatewayError):
    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class BudgetExceeded(RateLimitError):
    """A key's or end user's spend budget would be exceeded (docs/keys.md). A 429, as OpenAI answers
    an exhausted quota, with Retry-After at the period's reset; not 402, which no SDK handles."""

    default_code = "budget_exceeded"


class QueueTimeout(_RetryAfter, GatewayError):
    """A request waited for its deployment (at its concurrency or rate limit) as long as allowed."""

    status = 503
    anthropic_type = "overloaded_error"
    default_code = "queue_timeout"


class QueueFull(QueueTimeout):
    default_code = "queue_full"


class LimiterUnavailable(GatewayError):
    """The shared limits' store is down and the config says to refuse rather than go unlimited."""

    status = 503
    anthropic_type = "overloaded_error"
    default_code = "rate_limiter_unavailable"


class StoreUnavailable(GatewayError):
    """A database the gateway reads (the call log, keys, jobs) cannot be reached right now."""

    status = 503
    anthropic_type = "overloaded_error"
    default_code = "store_unavailable"


class ClientDisconnected(GatewayError):
    """The client hung up while its request waited: nobody to answer (on record under this name)."""

    status = 499  # nginx's "client closed request"; never seen by the client
    default_code = "client_disconnected"


class GuardrailBlocked(GatewayError):
    """A guardrail stopped the call: the input, or the answer before (or while) it reached the client."""

    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"

    def __init__(self, message: str, *, guard: str, **kw: Any) -> None:
        super().__init__(message, code=f"guardrail_{guard}", **kw)
        self.guard = guard

    def details(self) -> dict[str, Any]:
        # Anthropic's error shape has no `code`: the guard's name rides along in both formats.
        return {**super().details(), "guardrail": self.guard}


class GuardrailOutputInvalid(GuardrailBlocked):
    """The model's answer broke the required format (JSON, a schema) even after one re-ask. The
    client's request was fine and the upstream's answer was not: a 502, as for any malformed
    upstream answer (a 4xx would tell the client to change a request it has no reason to change)."""

    status = 502
    openai_type = "api_error"
    anthropic_type = "api_error"


class UpstreamError(GatewayError):
    status = 502
    default_code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        provider: str = "",
        status_code: int | None = None,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        self.provider = provider
        self.status_code = status_code
        self.body = body
        self.headers_in = {k.lower(): v for k, v in (headers or {}).items()}


class UpstreamBadRequest(UpstreamError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = None


class UpstreamAuthError(UpstreamError):
    default_code = "upstream_auth_error"


class UpstreamRateLimited(_RetryAfter, UpstreamError):
    status = 429
    openai_type = "rate_limit_error"
    anthropic_type = "rate_limit_error"
    default_code = "upstream_rate_limited"


class UpstreamUnavailable(UpstreamError):
    status = 503
    anthropic_type = "overloaded_error"
    default_code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    anthropic_type = "timeout_error"
    default_code = "upstream_timeout"


class UpstreamConnectionError(UpstreamError):
    default_code = "upstream_connection_error"


class UpstreamProtocolError(UpstreamError):
    default_code = "upstream_protocol_error"


class AllAttemptsFailed(UpstreamError):
    """Every deployment of every model in the chain was tried (or skipped), none answered, and the
    failures were of several kinds (all of one kind: that error itself, with every attempt listed,
    so a client still sees e.g. a 429 with Retry-After). No attempt possible at all: 503."""

    default_code = "all_attempts_failed"

    @classmethod
    def from_errors(cls, errors: list[GatewayError], skipped: list[str]) -> GatewayError:
        attempts = [f"{_where(e)}{type(e).__name__}: {e.message}" for e in errors] + skipped
        listed = "; ".join(f"{i}) {a}" for i, a in enumerate(attempts, 1))
        if not errors:
            error: GatewayError = cls(f"No model could serve this request: {listed}")
            error.status, error.anthropic_type = 503, "overloaded_error"
        elif len({type(e) for e in errors}) == 1:
            error = errors[-1]
            error.message = f"All {len(errors)} attempts failed: {listed}"
            error.args = (error.message,)
        else:
            error = cls(f"All {len(errors)} attempts failed: {listed}")
        error.attempts = attempts
        return error


def _where(error: GatewayError) -> str:
    provider = getattr(error, "provider", "")
    return f"{provider}: " if provider else ""


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a ``Retry-After`` (or OpenAI's ``retry-after-ms``) header, if present and numeric."""
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        if "retry-after-ms" in lower:
            return float(lower["retry-after-ms"]) / 1000
        if "retry-after" in lower:
            return float(lower["retry-after"])
    except ValueError:
        return None  # an HTTP-date; rare from LLM providers, and a guess is worse than none
    return None


def error_for_status(
    status: int, message: str, *, provider: str, body: str | None, headers: Mapping[str, str]
) -> UpstreamError:
    """Map an upstream HTTP error status to our tree (shared by every adapter)."""
    kw: dict[str, Any] = {"provider": provider, "status_code": status, "body": body, "headers": headers}
    if status == 429:
        return UpstreamRateLimited(message, retry_after=parse_retry_after(headers), **kw)
    if status in (401, 403):
        return UpstreamAuthError(f"{provider} rejected our credentials: {message}", **kw)
    if status == 408:
        return UpstreamTimeout(message, **kw)
    if status == 529 or status >= 500:
        return UpstreamUnavailable(message, **kw)
    if "context" in message.lower() and ("length" in message.lower() or "window" in message.lower()):
        return UpstreamBadRequest(message, code="context_length_exceeded", **kw)
    return UpstreamBadRequest(message, **kw)


_TYPE_STEPS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def invalid_request_from(exc: Any, *, prefix: str = "") -> InvalidRequestError:
    """Turn a pydantic ``ValidationError`` on a client body into a 400 naming the offending field.

    Union branches and tags show up in pydantic's error locations (``str``, ``list[...]``,
    ``part:text``); they mean nothing to a client, so they are dropped from the reported path.
    """
    errors = exc.errors(include_url=False)
    first = max(errors, key=lambda e: len(e["loc"]))  # the most specific failure
    steps = [
        str(p)
        for p in first["loc"]
        if not (isinstance(p, str) and (p in _TYPE_STEPS or "[" in p or ":" in p or "-" in p))
    ]
    param = prefix + ".".join(steps) if steps else None
    where = f" at '{param}'" if param else ""
    return InvalidRequestError(f"Invalid request{where}: {first['msg']}", param=param)
