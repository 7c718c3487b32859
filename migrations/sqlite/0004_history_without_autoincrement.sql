-- cartflow schema 4 for SQLite: the history's sequence is the table's rowid alone, without
-- AUTOINCREMENT. History rows are never deleted, so a new row's rowid is still above every
-- earlier one (the order `history` is read in), and an insert no longer updates the
-- sqlite_sequence table as well.
CREATE TABLE history_new (
    seq INTEGER PRIMARY KEY,
    cart_id TEXT NOT NULL,
    body TEXT NOT NULL
);
INSERT INTO history_new (seq, cart_id, body) SELECT seq, cart_id, body FROM history ORDER BY seq;
DROP TABLE history;
ALTER TABLE history_new RENAME TO history;
CREATE INDEX history_by_cart ON history (cart_id, seq);
