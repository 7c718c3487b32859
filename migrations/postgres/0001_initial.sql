-- cartflow schema 1 for PostgreSQL. Records are stored whole as jsonb (the Salesforce field
-- names of the model); the columns beside them are what queries, locks and constraints need.
-- `seq` columns keep insertion order, which listings return.
CREATE TABLE stores (id text PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE accounts (id text PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE users (id text PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE carts (
    id text PRIMARY KEY,
    version bigint NOT NULL,
    status text NOT NULL,
    body jsonb NOT NULL
);
CREATE TABLE cart_items (id text PRIMARY KEY, cart_id text NOT NULL, body jsonb NOT NULL);
CREATE INDEX cart_items_by_cart ON cart_items (cart_id, id);
CREATE TABLE stock (
    store_id text NOT NULL,
    sku text NOT NULL,
    quantity numeric NOT NULL,
    PRIMARY KEY (store_id, sku)
);
CREATE TABLE sessions (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    cart_id text NOT NULL,
    version bigint NOT NULL,
    is_archived boolean NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX sessions_by_cart ON sessions (cart_id, seq);
-- At most one active session per cart, whatever any engine process believes.
CREATE UNIQUE INDEX one_active_session_per_cart ON sessions (cart_id) WHERE NOT is_archived;
CREATE TABLE operations (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    cart_id text NOT NULL,
    version bigint NOT NULL,
    status text NOT NULL,
    submitted_at timestamptz NOT NULL,
    expires_at timestamptz,
    body jsonb NOT NULL
);
CREATE INDEX operations_by_cart ON operations (cart_id, submitted_at, seq);
-- The queue: workers lock the oldest New row with FOR UPDATE SKIP LOCKED.
CREATE INDEX operations_new ON operations (submitted_at, id) WHERE status = 'New';
CREATE INDEX operations_running ON operations (expires_at, id) WHERE status = 'Running';
-- At most one New or Running operation per cart, whatever any engine process believes.
CREATE UNIQUE INDEX one_active_operation_per_cart ON operations (cart_id)
    WHERE status IN ('New', 'Running');
CREATE TABLE validation_outputs (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    cart_id text NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX validation_outputs_by_cart ON validation_outputs (cart_id, seq);
CREATE TABLE orders (
    id text PRIMARY KEY,
    cart_id text NOT NULL,
    version bigint NOT NULL,
    status text NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX orders_by_cart ON orders (cart_id);
CREATE TABLE history (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cart_id text NOT NULL,
    body jsonb NOT NULL
);
CREATE INDEX history_by_cart ON history (cart_id, seq);
