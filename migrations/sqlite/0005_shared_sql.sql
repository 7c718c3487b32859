-- cartflow schema 5 for SQLite: the statements SQLite and PostgreSQL share.
--
-- The index of active sessions is partial on `NOT is_archived`, as on PostgreSQL, so that
-- the shared query for a cart's active session (`... AND NOT is_archived`) is served by it:
-- SQLite uses a partial index only for a query that repeats the index's own condition. The
-- column holds 0 or 1, so the index keeps the same rows and the same rule as before.
DROP INDEX one_active_session_per_cart;
CREATE UNIQUE INDEX one_active_session_per_cart ON sessions (cart_id) WHERE NOT is_archived;
