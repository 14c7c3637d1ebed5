-- Schema 2 to 3 (trust tiers): each event's source and its twin, each dedup key's event, and
-- three priorities. Run once, in the transaction that sets `PRAGMA user_version` to 3.
ALTER TABLE outbox ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
ALTER TABLE outbox ADD COLUMN twin BLOB;
ALTER TABLE dedup ADD COLUMN event_id INTEGER;
ALTER TABLE dedup ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
-- Page views were priority 1; 1 is now a browser's conversion.
UPDATE outbox SET priority = 2 WHERE priority = 1;
-- An idempotency key was "idem:KEY"; it is "idem:NAME:KEY" now (identity per event name).
-- Keys whose event is still in the outbox are carried over; the others lapse.
CREATE TEMP TABLE old_idem AS SELECT * FROM dedup WHERE key LIKE 'idem:%';
DELETE FROM dedup WHERE key LIKE 'idem:%';
INSERT OR IGNORE INTO dedup (space, key, expires_at, event_id, source)
    SELECT d.space, 'idem:' || o.event_name || ':' || o.idempotency_key, d.expires_at, o.id, 'api'
    FROM old_idem d JOIN outbox o ON o.space = d.space AND o.idempotency_key = substr(d.key, 6);
DROP TABLE old_idem;
