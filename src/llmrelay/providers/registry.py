"""Build one provider per configured endpoint."""

from __future__ import annotations

from ..config import ProviderKind, Settings
from .anthropic import AnthropicAdapter
from .base import Adapter, HttpClient, HTTPProvider
from .openai import OpenAIAdapter

ADAPTERS: dict[ProviderKind, type[Adapter]] = {"openai": OpenAIAdapter, "anthropic": AnthropicAdapter}


def build_providers(settings: Settings, client: HttpClient) -> dict[str, HTTPProvider]:
    return {name: HTTPProvider(name, p, ADAPTERS[p.kind](), client) for name, p in settings.providers.items()}
