-- cartflow schema 1. Records are stored whole as JSON (the Salesforce field names of the
-- model); the columns beside them are what queries and constraints need.
CREATE TABLE stores (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE accounts (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE users (id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE carts (
    id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE cart_items (id TEXT PRIMARY KEY, cart_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX cart_items_by_cart ON cart_items (cart_id);
CREATE TABLE stock (
    store_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    quantity TEXT NOT NULL,
    PRIMARY KEY (store_id, sku)
);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    cart_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    is_archived INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX sessions_by_cart ON sessions (cart_id);
-- At most one active session per cart, whatever the engine believes.
CREATE UNIQUE INDEX one_active_session_per_cart ON sessions (cart_id) WHERE is_archived = 0;
CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    cart_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    expires_at TEXT,
    body TEXT NOT NULL
);
CREATE INDEX operations_by_cart ON operations (cart_id, submitted_at);
CREATE INDEX operations_new ON operations (submitted_at) WHERE status = 'New';
CREATE INDEX operations_running ON operations (expires_at) WHERE status = 'Running';
-- At most one New or Running operation per cart, whatever the engine believes.
CREATE UNIQUE INDEX one_active_operation_per_cart ON operations (cart_id)
    WHERE status IN ('New', 'Running');
CREATE TABLE validation_outputs (id TEXT PRIMARY KEY, cart_id TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX validation_outputs_by_cart ON validation_outputs (cart_id);
CREATE TABLE orders (
    id TEXT PRIMARY KEY,
    cart_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    status TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX orders_by_cart ON orders (cart_id);
CREATE TABLE history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    cart_id TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX history_by_cart ON history (cart_id, seq);
