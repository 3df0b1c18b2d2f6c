"""Virtual API keys: the key model, the hashed key store, budgets, and the admin API."""

from .model import KeyLimits, VirtualKey

__all__ = ["KeyLimits", "VirtualKey"]
