-- cartflow schema 4 for PostgreSQL: the history as an event log, and webhooks' state.
-- Each history row records the transaction that committed it. Transactions draw sequence
-- numbers before they commit, so the sequence alone is not commit order: events are read in
-- (transaction, sequence) order, and only from transactions older than every transaction
-- still running, so that no event can later appear before one already read.
ALTER TABLE history ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX history_in_commit_order ON history (xid, seq);

-- Each webhook's cursor: the position up to which it has delivered or skipped the events.
CREATE TABLE webhook_cursors (
    hook text PRIMARY KEY,
    xid bigint NOT NULL,
    seq bigint NOT NULL
);

-- Every delivery attempt, in the order made.
CREATE TABLE webhook_deliveries (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hook text NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (hook, seq);
