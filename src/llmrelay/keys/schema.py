"""The key tables, one migration in each call store's ordered list (SQLite and PostgreSQL).

Portable SQL: JSON and money are TEXT (a Decimal as text is exact in both; SQLite's NUMERIC would
turn it into a float), times are unix seconds, spend is an integer of pico-dollars (1e-12 USD:
every catalog price per million tokens with up to six decimals is a whole number of them).
"""

KEYS_MIGRATION = """
CREATE TABLE api_keys (
    id                  TEXT PRIMARY KEY,
    secret_hash         TEXT NOT NULL UNIQUE,  -- sha256 hex of the secret (keys/hashing.py)
    hint                TEXT NOT NULL,         -- sk-llmrelay-...abcd
    owner               TEXT NOT NULL,
    models              TEXT NOT NULL,         -- JSON list; [] = all
    rpm                 INTEGER,
    tpm                 INTEGER,
    budget_daily_usd    TEXT,
    budget_monthly_usd  TEXT,
    priority            INTEGER NOT NULL,
    metadata            TEXT NOT NULL,         -- JSON object
    source              TEXT NOT NULL,         -- api | config
    created_at          DOUBLE PRECISION NOT NULL,
    rotated_at          DOUBLE PRECISION,
    revoked_at          DOUBLE PRECISION
);
CREATE TABLE budget_spend (
    scope       TEXT NOT NULL,                 -- key:<id> | user:<key id>:<user>
    period      TEXT NOT NULL,                 -- d:YYYY-MM-DD | m:YYYY-MM (UTC)
    spent_pico  BIGINT NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (scope, period)
);
"""

# A key's guardrail policy (guardrails/policy.py), JSON: a policy name (a JSON string) or inline
# overrides (an object); NULL: none. An added column: every existing key keeps NULL.
KEY_GUARDRAILS_MIGRATION = "ALTER TABLE api_keys ADD COLUMN guardrails TEXT"
