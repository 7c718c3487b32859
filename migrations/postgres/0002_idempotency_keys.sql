-- cartflow schema 2 for PostgreSQL: the answers kept for HTTP requests made with an
-- Idempotency-Key, per user, shared by every process. `status` and `body` stay NULL while
-- the first request runs; after `expires_at` the key is new again.
CREATE TABLE idempotency_keys (
    user_id text NOT NULL,
    key text NOT NULL,
    fingerprint text NOT NULL,
    expires_at timestamptz NOT NULL,
    status integer,
    body bytea,
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
