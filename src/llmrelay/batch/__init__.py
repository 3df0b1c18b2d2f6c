"""The OpenAI-compatible batch API (docs/batch.md): uploaded JSONL files of requests, run either by
the provider's own batch API (forwarded, at its discount) or by llmrelay's workers through the
pipeline. Nothing is imported here: ``config`` imports ``batch.settings`` on every start."""
