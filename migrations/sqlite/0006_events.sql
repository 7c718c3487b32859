-- cartflow schema 6 for SQLite: webhooks' state. The history is the event log as it is: one
-- writer commits at a time and its rowids only grow, so its sequence is commit order.

-- Each webhook's cursor: the position up to which it has delivered or skipped the events.
CREATE TABLE webhook_cursors (
    hook TEXT PRIMARY KEY,
    xid INTEGER NOT NULL,
    seq INTEGER NOT NULL
);

-- Every delivery attempt, in the order made.
CREATE TABLE webhook_deliveries (
    seq INTEGER PRIMARY KEY,
    hook TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_by_hook ON webhook_deliveries (hook, seq);
