"""The Anthropic Messages wire format <-> canonical (OpenAI-shaped) types. Pure functions, no I/O.

Two directions, both used:
- upstream edge (we call Anthropic): ``request_to_wire``, ``parse_response``, ``StreamDecoder``,
  ``error_message_from_wire``;
- client edge (an Anthropic SDK calls our ``/v1/messages``): ``parse_request``, ``response_to_wire``,
  ``StreamEncoder``, ``error_to_wire``.

The shapes differ in four ways that drive most of the code below: Anthropic keeps the system prompt
outside the message list; tool results are ``tool_result`` blocks inside a *user* turn rather than
``tool`` messages; roles must alternate; and ``input_tokens`` excludes cache reads and writes, where
canonical ``prompt_tokens`` includes them.

The code is split by concern: ``client_request`` (Anthropic client body -> canonical),
``upstream_request`` (canonical -> Anthropic body, incl. the forced JSON tool), ``responses``,
``streams``, ``errors``, ``caching`` (prompt-caching breakpoints); ``_common`` holds the helpers and mappings several of them share (and
``_now``, the one clock every module reads, so a test can freeze it in one place).
"""

from .caching import apply_prompt_caching, min_cacheable_tokens
from .client_request import parse_count_request, parse_request
from .errors import error_message_from_wire, error_to_wire
from .responses import parse_response, response_to_wire
from .streams import Event, StreamDecoder, StreamEncoder
from .upstream_request import (
    DEFAULT_MAX_TOKENS,
    JSON_TOOL,
    count_request_to_wire,
    request_to_wire,
    uses_json_tool,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "Event",
    "JSON_TOOL",
    "StreamDecoder",
    "StreamEncoder",
    "apply_prompt_caching",
    "count_request_to_wire",
    "error_message_from_wire",
    "error_to_wire",
    "min_cacheable_tokens",
    "parse_count_request",
    "parse_request",
    "parse_response",
    "request_to_wire",
    "response_to_wire",
    "uses_json_tool",
]
