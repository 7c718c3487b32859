-- cartflow schema 4 for PostgreSQL: a commit is sent as one batch of statements, and a
-- version-guarded write inside it must write exactly one row. This function fails the batch
-- (and so rolls its transaction back) with the SQLSTATE the store maps back to its error:
-- CF409 a version moved on, CF404 a cart's version moved on or the cart does not exist,
-- CF422 the commit would break an invariant.
CREATE FUNCTION cartflow_expect_one(written bigint, code text, message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF written <> 1 THEN
        RAISE EXCEPTION USING ERRCODE = code, MESSAGE = message;
    END IF;
END
$$;
