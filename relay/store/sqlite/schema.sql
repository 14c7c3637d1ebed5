-- The outbox's tables, indexes and triggers; run at every start, in the transaction that
-- sets `PRAGMA user_version` to SCHEMA_VERSION (schema.py), so every statement is idempotent.

CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    space TEXT NOT NULL,
    event_name TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    priority INTEGER NOT NULL,
    payload BLOB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until REAL,
    received_at REAL NOT NULL,
    delivered_at REAL,
    died_at REAL,
    last_status INTEGER,
    last_message TEXT,
    changed_at REAL,  -- `now` of the last step after the insert; NULL until then
    source TEXT NOT NULL DEFAULT 'api',  -- 'api' or 'browser' (relay.rules.events.Source)
    twin BLOB  -- the payload of the browser twin an API event met, merged when it is sent
);
-- Claim order. Index entries sort by (space, priority, id), so claim reads the first due
-- entries without sorting; the trailing columns let it skip leased or not-yet-due entries
-- without touching the table.
CREATE INDEX IF NOT EXISTS outbox_claim
    ON outbox (space, priority, id, next_attempt_at, lease_until) WHERE status = 'queued';
-- next_due: the unleased minimum is one index seek; leased rows are few (in flight).
CREATE INDEX IF NOT EXISTS outbox_due
    ON outbox (space, lease_until, next_attempt_at) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS outbox_delivered ON outbox (delivered_at) WHERE status = 'delivered';
CREATE INDEX IF NOT EXISTS outbox_dead ON outbox (id) WHERE status = 'dead';

-- Each live dedup key names the event it ended in and that event's source (kept here too:
-- the key outlives a delivered event pruned before the key expires).
CREATE TABLE IF NOT EXISTS dedup (
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    expires_at REAL NOT NULL,
    event_id INTEGER,
    source TEXT NOT NULL DEFAULT 'api',
    PRIMARY KEY (space, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (expires_at);

-- outbox_counts is kept by triggers so that stats (and /healthz) cost O(spaces), not a scan
-- of millions of delivered rows; the triggers also cover writes made by other processes.
CREATE TABLE IF NOT EXISTS outbox_counts (
    space TEXT NOT NULL,
    bucket TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (space, bucket)
) WITHOUT ROWID;
-- Inserts are counted by the enqueue (enqueue.py), once per batch and Space: a trigger per
-- row cost a third of the enqueue's time. Every insert into outbox must go through it.
DROP TRIGGER IF EXISTS outbox_counts_insert;
-- A row leaves its buckets (its status, and 'retrying' if queued after an attempt) when it
-- is deleted or changes them, and enters its new ones. (`WHERE 1`: SQLite's parser needs a
-- WHERE before the ON CONFLICT of an INSERT ... SELECT.)
CREATE TRIGGER IF NOT EXISTS outbox_counts_delete AFTER DELETE ON outbox BEGIN
    INSERT INTO outbox_counts (space, bucket, n) SELECT old.space, old.status, -1 WHERE 1
        ON CONFLICT (space, bucket) DO UPDATE SET n = n - 1;
    INSERT INTO outbox_counts (space, bucket, n) SELECT old.space, 'retrying', -1
        WHERE old.status = 'queued' AND old.attempts > 0 ON CONFLICT (space, bucket)
        DO UPDATE SET n = n - 1;
END;
CREATE TRIGGER IF NOT EXISTS outbox_counts_update AFTER UPDATE OF status, attempts ON outbox
    WHEN old.status IS NOT new.status OR (old.attempts > 0) IS NOT (new.attempts > 0)
BEGIN
    INSERT INTO outbox_counts (space, bucket, n) SELECT old.space, old.status, -1 WHERE 1
        ON CONFLICT (space, bucket) DO UPDATE SET n = n - 1;
    INSERT INTO outbox_counts (space, bucket, n) SELECT old.space, 'retrying', -1
        WHERE old.status = 'queued' AND old.attempts > 0 ON CONFLICT (space, bucket)
        DO UPDATE SET n = n - 1;
    INSERT INTO outbox_counts (space, bucket, n) SELECT new.space, new.status, 1 WHERE 1
        ON CONFLICT (space, bucket) DO UPDATE SET n = n + 1;
    INSERT INTO outbox_counts (space, bucket, n) SELECT new.space, 'retrying', 1
        WHERE new.status = 'queued' AND new.attempts > 0 ON CONFLICT (space, bucket)
        DO UPDATE SET n = n + 1;
END;

-- Every step after the insert (retrying, delivered, dead, replayed), in commit order, for
-- `changes`. Acceptances need no row here: outbox ids are already in commit order, so the
-- enqueue does no extra work. AUTOINCREMENT: a seq is never reused, even after pruning.
CREATE TABLE IF NOT EXISTS outbox_steps (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id INTEGER NOT NULL,
    state TEXT NOT NULL,
    at REAL,
    attempts INTEGER NOT NULL,
    last_status INTEGER,
    last_message TEXT
);
CREATE TRIGGER IF NOT EXISTS outbox_steps_log AFTER UPDATE OF status, attempts ON outbox
    WHEN old.status IS NOT new.status OR old.attempts IS NOT new.attempts
BEGIN
    INSERT INTO outbox_steps (event_id, state, at, attempts, last_status, last_message)
    VALUES (
        new.id,
        CASE WHEN new.status != 'queued' THEN new.status
             WHEN old.status = 'dead' THEN 'replayed' ELSE 'retrying' END,
        new.changed_at,
        new.attempts + (new.status = 'delivered'),  -- delivered() counts no attempt itself
        CASE WHEN new.status = 'delivered' THEN NULL ELSE new.last_status END,
        CASE WHEN new.status = 'delivered' THEN NULL ELSE new.last_message END
    );
END;
