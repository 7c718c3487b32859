-- cartflow schema 2 for SQLite: the answers kept for HTTP requests made with an
-- Idempotency-Key, per user. `status` and `body` stay NULL while the first request runs;
-- `expires_at` is in milliseconds since the Unix epoch, after which the key is new again.
CREATE TABLE idempotency_keys (
    user_id TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    status INTEGER,
    body BLOB,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
