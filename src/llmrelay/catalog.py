"""The model catalog: client-facing names -> provider, upstream id, tier, limits, capabilities, price.

Prices come from the maintained ``genai-prices`` snapshot (offline; never auto-updated here), or
from a per-model ``price`` override in the config. Cost is computed per request from its usage,
cached-read and cache-write tokens priced at their own rates (1-hour cache writes at theirs).

``genai_prices.calc_price`` costs ~65 us a call, a sixth of the gateway's CPU per request, most of
it finding the model. So each model's per-million-token rates are read from the library once, at
start-up, and checked against ``calc_price`` on a spread of usage shapes; per request only the
arithmetic is left. A model whose rates cannot be read that way, or do not reproduce the library's
figures, is priced by ``calc_price`` itself.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from itertools import product
from typing import Any

import genai_prices
from genai_prices.types import TieredPrices

from .config import ModelSettings, Price, PromptCachingSettings, ProviderSettings, Settings
from .errors import ModelNotFoundError
from .types import Usage

log = logging.getLogger(__name__)

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a model is served: an endpoint and its model id there."""

    model: str  # the client-facing model name
    provider_name: str
    provider: ProviderSettings
    upstream: str
    weight: float = 1.0
    prompt_caching: PromptCachingSettings = PromptCachingSettings()  # the model entry's, resolved
    key: str = ""  # "<provider>/<upstream>": identifies it for breakers and load balancing

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.provider_name}/{self.upstream}")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model clients can name, with the deployments that serve it."""

    settings: ModelSettings
    deployments: tuple[Deployment, ...]

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def simulated(self) -> bool:
        return any(d.provider.simulated for d in self.deployments)

    @property
    def owner(self) -> str:
        return self.deployments[0].provider_name


class Catalog:
    def __init__(self, settings: Settings) -> None:
        self._entries = {m.name: _entry(m, settings) for m in settings.models}
        self._rates = {
            (d.model, d.key): _rates_for(e.settings, d) for e in self._entries.values() for d in e.deployments
        }
        for entry in self._entries.values():
            for d in entry.deployments:
                if self.cost(d, Usage(prompt_tokens=1)) is None:
                    log.warning(
                        "no price known for model %s (%s): its cost will be recorded as unknown",
                        entry.name,
                        d.key,
                    )

    def __iter__(self) -> Iterator[ModelEntry]:
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

    def chain(self, name: str) -> list[ModelEntry]:
        """The model and its fallbacks, in the order to try them."""
        entry = self.get(name)
        return [entry, *(self._entries[f] for f in entry.settings.fallbacks)]

    def cost(self, deployment: Deployment, usage: Usage) -> Decimal | None:
        """USD for one request's usage, or None when the price is unknown (never a guessed zero)."""
        rates = self._rates.get((deployment.model, deployment.key))
        if rates is not None:
            return rates.cost(usage)
        entry = self._entries.get(deployment.model)
        return cost_usd(entry.settings, deployment, usage) if entry is not None else None


def _entry(model: ModelSettings, settings: Settings) -> ModelEntry:
    caching = settings.prompt_caching
    if model.prompt_caching is not None:
        caching = model.prompt_caching.under(caching)
    deployments = tuple(
        Deployment(
            model=model.name,
            provider_name=d.provider,
            provider=settings.providers[d.provider],
            upstream=d.upstream or model.upstream_id,
            weight=d.weight,
            prompt_caching=caching,
        )
        for d in model.deployment_list()
    )
    return ModelEntry(settings=model, deployments=deployments)


def cost_usd(model: ModelSettings, deployment: Deployment, usage: Usage) -> Decimal | None:
    """USD for one request's usage, straight from the config override or ``genai_prices``."""
    if model.price is not None:
        return Rates.from_config(model.price).cost(usage)
    try:
        calc = genai_prices.calc_price(
            _library_usage(usage),
            _price_ref(model, deployment),
            provider_id=_price_provider(model, deployment),
        )
    except (LookupError, ValueError):  # unknown model; usage the library finds inconsistent
        return None
    return calc.total_price


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each kind (tiered by the request's prompt tokens), plus any fee
    per request. Uncached prompt tokens are the prompt less its cached-read and cache-write ones;
    cache writes are 5-minute ones but for their 1-hour share."""

    input: Decimal | TieredPrices
    cache_read: Decimal | TieredPrices
    cache_write: Decimal | TieredPrices
    cache_write_1h: Decimal | TieredPrices
    output: Decimal | TieredPrices
    per_request: Decimal = Decimal(0)

    @classmethod
    def from_config(cls, price: Price) -> Rates:
        def dec(value: float | None, default: float | Decimal) -> Decimal:
            return Decimal(str(default if value is None else value))

        cache_write = dec(price.cache_write, price.input)
        return cls(
            input=dec(price.input, 0),
            cache_read=dec(price.cache_read, price.input),
            cache_write=cache_write,
            cache_write_1h=dec(price.cache_write_1h, cache_write),
            output=dec(price.output, 0),
        )

    def cost(self, usage: Usage) -> Decimal | None:
        prompt = usage.prompt_tokens
        uncached = prompt - usage.cached_tokens - usage.cache_write_tokens
        written_5m = usage.cache_write_tokens - usage.cache_write_1h_tokens
        if uncached < 0 or written_5m < 0:
            return None  # inconsistent usage from upstream: no figure rather than a wrong one
        total = (
            _at(self.input, prompt) * uncached
            + _at(self.cache_read, prompt) * usage.cached_tokens
            + _at(self.cache_write, prompt) * written_5m
            + _at(self.cache_write_1h, prompt) * usage.cache_write_1h_tokens
            + _at(self.output, prompt) * usage.completion_tokens
        )
        return total / _MILLION + self.per_request


def _at(price: Decimal | TieredPrices, prompt_tokens: int) -> Decimal:
    """The price that applies at this prompt size: the highest tier whose start it passes."""
    if isinstance(price, Decimal):
        return price
    for tier in reversed(price.tiers):
        if prompt_tokens > tier.start:
            return tier.price
    return price.base


def _rates_for(model: ModelSettings, deployment: Deployment) -> Rates | None:
    """The model's rates, if they reproduce the library's figures exactly; else None."""
    if model.price is not None:
        return Rates.from_config(model.price)
    try:
        calc = genai_prices.calc_price(
            _library_usage(Usage()),
            _price_ref(model, deployment),
            provider_id=_price_provider(model, deployment),
        )
    except LookupError:
        return None
    if isinstance(calc.model.prices, list):  # prices that change by date: ask the library each time
        return None
    prices: dict[str, Any] = vars(calc.model_price)
    if "input_mtok" not in prices or "output_mtok" not in prices:
        return None
    cache_write = prices.get("cache_write_mtok") or prices["input_mtok"]
    rates = Rates(
        input=prices["input_mtok"],
        cache_read=prices.get("cache_read_mtok") or prices["input_mtok"],
        cache_write=cache_write,
        # Without a 1-hour price the library bills those writes as plain cache writes.
        cache_write_1h=prices.get("cache_write_1h_mtok") or cache_write,
        output=prices["output_mtok"],
        per_request=(prices.get("requests_kcount") or Decimal(0)) / 1000,
    )
    for usage in _usage_shapes(rates):
        if rates.cost(usage) != cost_usd(model, deployment, usage):
            log.debug("price rates of %s do not reproduce genai-prices; calling it per request", model.name)
            return None
    return rates


def _usage_shapes(rates: Rates) -> Iterator[Usage]:
    """Usage with every mix of cached, written (some for 1 hour) and output tokens, around every
    tier threshold."""
    starts = {
        t.start
        for p in (rates.input, rates.cache_read, rates.cache_write, rates.cache_write_1h, rates.output)
        if isinstance(p, TieredPrices)
        for t in p.tiers
    }
    for prompt in sorted({0, 7, 1234, 98765, *(s + d for s in starts for d in (0, 1, 54321))}):
        for cached, written, completion in product((0, 1), (0, 1, 2), (0, 1)):  # written 2: some for 1h
            yield Usage(
                prompt_tokens=prompt,
                cached_tokens=cached * (prompt // 3),
                cache_write_tokens=min(written, 1) * (prompt // 4),
                cache_write_1h_tokens=written // 2 * (prompt // 7),
                completion_tokens=completion * 321,
            )


def _library_usage(usage: Usage) -> genai_prices.Usage:
    return genai_prices.Usage(
        input_tokens=usage.prompt_tokens,
        cache_read_tokens=usage.cached_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        cache_write_1h_tokens=usage.cache_write_1h_tokens,
        output_tokens=usage.completion_tokens,
    )


def _price_ref(model: ModelSettings, deployment: Deployment) -> str:
    return model.price_ref or deployment.upstream


def _price_provider(model: ModelSettings, deployment: Deployment) -> str:
    return model.price_provider or deployment.provider.kind
