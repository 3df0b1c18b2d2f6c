"""The model catalog: client-facing names -> provider, upstream id, tier, limits, capabilities, price.

Prices come from the maintained ``genai-prices`` snapshot (offline; never auto-updated here), or
from a per-model ``price`` override in the config. Cost is computed per request from its usage,
cached-read and cache-write tokens priced at their own rates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

import genai_prices

from .config import ModelSettings, Price, ProviderSettings, Settings
from .errors import ModelNotFoundError
from .types import Usage

log = logging.getLogger(__name__)

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model clients can name, joined with the endpoint that serves it."""

    settings: ModelSettings
    provider: ProviderSettings
    provider_name: str

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def upstream(self) -> str:
        return self.settings.upstream_id

    @property
    def simulated(self) -> bool:
        return self.provider.simulated


class Catalog:
    def __init__(self, settings: Settings) -> None:
        self._entries = {
            m.name: ModelEntry(settings=m, provider=settings.providers[m.provider], provider_name=m.provider)
            for m in settings.models
        }
        for entry in self._entries.values():
            if cost_usd(entry.settings, entry.provider, Usage(prompt_tokens=1)) is None:
                log.warning("no price known for model %s: its cost will be recorded as unknown", entry.name)

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise ModelNotFoundError(
                f"The model '{name}' does not exist on this gateway. GET /v1/models lists the models served.",
                param="model",
            ) from None

    def cost(self, entry: ModelEntry, usage: Usage) -> Decimal | None:
        return cost_usd(entry.settings, entry.provider, usage)


def cost_usd(model: ModelSettings, provider: ProviderSettings, usage: Usage) -> Decimal | None:
    """USD for one request's usage, or None when the model's price is unknown."""
    if model.price is not None:
        return _cost_from_override(model.price, usage)
    try:
        calc = genai_prices.calc_price(
            genai_prices.Usage(
                input_tokens=usage.prompt_tokens,
                cache_read_tokens=usage.cached_tokens,
                cache_write_tokens=usage.cache_write_tokens,
                output_tokens=usage.completion_tokens,
            ),
            model.price_ref or model.upstream_id,
            provider_id=model.price_provider or provider.kind,
        )
    except LookupError:
        return None
    return calc.total_price


def _cost_from_override(price: Price, usage: Usage) -> Decimal:
    cache_read = price.cache_read if price.cache_read is not None else price.input
    cache_write = price.cache_write if price.cache_write is not None else price.input
    uncached = usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens
    total = (
        uncached * Decimal(str(price.input))
        + usage.cached_tokens * Decimal(str(cache_read))
        + usage.cache_write_tokens * Decimal(str(cache_write))
        + usage.completion_tokens * Decimal(str(price.output))
    )
    return total / _MILLION
