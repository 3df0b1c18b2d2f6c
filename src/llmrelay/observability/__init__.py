"""Recording calls: timings, usage, cost (and, later, the durable call log, metrics, traces)."""
