-- The event log (sqlite). Kept identical to PostgreSQL's but for the id type.
-- Every durable event is written in the same transaction as the change it
-- describes (an outbox), so a consumer that was away (a notifier after a
-- restart, another master) reads what it missed. Ids ascend in commit order
-- on SQLite; on PostgreSQL two transactions can commit out of id order,
-- which readers tolerate (cascade_model::event::Cursor).
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    -- cascade_model::EventKind's name, e.g. 'build_finished'.
    kind TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- The event as JSON (cascade_model::Event).
    body TEXT NOT NULL
);
CREATE INDEX events_created_at ON events (created_at);

-- Where each durable consumer (a notifier, say) has read up to: every event
-- below next_id was handled.
CREATE TABLE event_cursors (
    consumer TEXT PRIMARY KEY,
    next_id BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
