"""Executing requests against providers: timeouts (and, later, retries, fallback, breakers)."""
