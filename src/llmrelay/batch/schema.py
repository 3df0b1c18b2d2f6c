"""The batch tables, one migration in each call store's list (like the key tables, ``keys/schema.py``):
files (their content too, so every replica sharing the database serves them), batches, and one row
per finished request. A trigger counts each finished request on its batch in the same statement
that stores it, so a request stored twice (a job run again after a crash) is never counted twice.
"""

_TABLES = """
CREATE TABLE batch_files (
    id          TEXT PRIMARY KEY,                -- file-<ULID>
    owner       TEXT NOT NULL,                   -- key id ('' when no key was presented)
    purpose     TEXT NOT NULL,                   -- batch | batch_output
    filename    TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    content     {blob} NOT NULL
);
CREATE INDEX batch_files_owner ON batch_files (owner, id);
CREATE TABLE batches (
    id                 TEXT PRIMARY KEY,         -- batch_<ULID>
    owner              TEXT NOT NULL,
    status             TEXT NOT NULL,            -- OpenAI's: validating ... completed, cancelled
    mode               TEXT NOT NULL,            -- provider | local
    endpoint           TEXT NOT NULL,
    input_file_id      TEXT NOT NULL,
    completion_window  TEXT NOT NULL,
    model              TEXT NOT NULL,
    metadata           TEXT NOT NULL,            -- JSON object
    errors             TEXT,                     -- JSON list of (code, message, line, param)
    output_file_id     TEXT,
    error_file_id      TEXT,
    total              INTEGER NOT NULL,
    completed          INTEGER NOT NULL DEFAULT 0,
    failed             INTEGER NOT NULL DEFAULT 0,
    skipped            INTEGER NOT NULL DEFAULT 0,  -- cancelled or expired before they ran
    usage              TEXT,                     -- JSON, set when it ends
    cost_usd           TEXT,                     -- a Decimal as text, set when it ends
    provider           TEXT,                     -- forwarded: the provider and its batch id
    upstream_id        TEXT,
    polled_at          DOUBLE PRECISION,
    created_at         DOUBLE PRECISION NOT NULL,
    in_progress_at     DOUBLE PRECISION,
    expires_at         DOUBLE PRECISION NOT NULL,
    finalizing_at      DOUBLE PRECISION,
    completed_at       DOUBLE PRECISION,
    failed_at          DOUBLE PRECISION,
    expired_at         DOUBLE PRECISION,
    cancelling_at      DOUBLE PRECISION,
    cancelled_at       DOUBLE PRECISION
);
CREATE INDEX batches_owner ON batches (owner, id);
CREATE INDEX batches_status ON batches (status);
CREATE TABLE batch_items (
    batch_id   TEXT NOT NULL,
    idx        INTEGER NOT NULL,                 -- the request's position in the input file
    outcome    INTEGER NOT NULL,                 -- 1 answered, 0 failed, -1 not run (cancelled, expired)
    line       TEXT NOT NULL,                    -- its line of the output or error file
    cost_usd   TEXT,
    PRIMARY KEY (batch_id, idx)
);
"""

_COUNT = (
    "UPDATE batches SET completed = completed + (CASE WHEN NEW.outcome = 1 THEN 1 ELSE 0 END),"
    " failed = failed + (CASE WHEN NEW.outcome = 0 THEN 1 ELSE 0 END),"
    " skipped = skipped + (CASE WHEN NEW.outcome = -1 THEN 1 ELSE 0 END) WHERE id = NEW.batch_id;"
)

SQLITE_MIGRATION = (
    _TABLES.format(blob="BLOB")
    + f"CREATE TRIGGER batch_items_count AFTER INSERT ON batch_items BEGIN {_COUNT} END;"
)

POSTGRES_MIGRATION = (
    _TABLES.format(blob="BYTEA")
    + f"""
CREATE FUNCTION batch_items_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN {_COUNT} RETURN NULL; END $$;
CREATE TRIGGER batch_items_count AFTER INSERT ON batch_items
    FOR EACH ROW EXECUTE FUNCTION batch_items_count();
"""
)
