-- cartflow schema 3 for SQLite: which record holds each record kept inside another (a cart
-- line's CartTax rows, a cart's offered delivery methods, an order's items, delivery group
-- and payment authorisation), so that each is found by its Id. Every commit rewrites the
-- rows of the holders it writes.
CREATE TABLE record_owners (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL
);
CREATE INDEX record_owners_by_owner ON record_owners (owner_id);
