-- cartflow schema 4 for SQLite, for the hot paths.
--
-- The history's sequence is the table's rowid alone, without AUTOINCREMENT. History rows are
-- never deleted, so a new row's rowid is still above every earlier one (the order `history`
-- is read in), and an insert no longer updates the sqlite_sequence table as well.
CREATE TABLE history_new (
    seq INTEGER PRIMARY KEY,
    cart_id TEXT NOT NULL,
    body TEXT NOT NULL
);
INSERT INTO history_new (seq, cart_id, body) SELECT seq, cart_id, body FROM history ORDER BY seq;
DROP TABLE history;
ALTER TABLE history_new RENAME TO history;
CREATE INDEX history_by_cart ON history (cart_id, seq);

-- A cart's lines are read in Id order: the index gives them in that order, with no sort.
DROP INDEX cart_items_by_cart;
CREATE INDEX cart_items_by_cart ON cart_items (cart_id, id);

-- The queue is read oldest first, ties broken by Id: the partial indexes give that order.
DROP INDEX operations_new;
CREATE INDEX operations_new ON operations (submitted_at, id) WHERE status = 'New';
DROP INDEX operations_running;
CREATE INDEX operations_running ON operations (expires_at, id) WHERE status = 'Running';
