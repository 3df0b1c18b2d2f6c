"""A fake LLM provider over real HTTP: OpenAI and Anthropic APIs, canned rules, latency and faults.

Upstream for tests, benchmarks and demos. See docs/simulator.md.

    from llmrelay.simulator import SimulatorServer, SimulatorSettings

    async with SimulatorServer(SimulatorSettings(port=0)) as sim:
        client = openai.AsyncOpenAI(base_url=sim.url + "/v1", api_key="x")
"""

from __future__ import annotations

from .app import SimulatorApp, build_app
from .rules import Rule, load_rules
from .server import SimulatorServer, run, serve
from .settings import FAULT_KINDS, ModelOverride, SimulatorSettings

__all__ = [
    "FAULT_KINDS",
    "ModelOverride",
    "Rule",
    "SimulatorApp",
    "SimulatorServer",
    "SimulatorSettings",
    "build_app",
    "load_rules",
    "run",
    "serve",
]
