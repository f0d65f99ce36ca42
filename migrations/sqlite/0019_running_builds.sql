-- The builds still running, for the home and workers pages: a partial
-- index holds only them, in id order, so the read costs the same at ten
-- million builds as at a hundred (without it PostgreSQL may walk the
-- primary key and filter).
CREATE INDEX builds_running ON builds (id) WHERE complete_at IS NULL;
