-- Notifications (SQLite): what reporters are to send, written from the
-- event log (itself written in the transaction of the change it describes,
-- the outbox) and sent after. Kept identical to PostgreSQL's but for the id type.
-- dedupe is unique per reporter: an event's notification is written once
-- however many masters read the log ('event:<id>'), and a pull request's
-- comment once per builder ('pr:<n>:builder:<id>').
-- state: 'pending', 'sent' or 'failed' (given up; last_error says why).
-- A master sending one holds it until claimed_until.
CREATE TABLE notifications (
    id INTEGER PRIMARY KEY,
    reporter TEXT NOT NULL,
    dedupe TEXT NOT NULL,
    event_id BIGINT NOT NULL,
    build_id BIGINT,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    give_up_at BIGINT NOT NULL,
    claimed_by BIGINT,
    claimed_until BIGINT,
    sent_at BIGINT,
    last_error TEXT,
    UNIQUE (reporter, dedupe)
);
CREATE INDEX notifications_due ON notifications (state, next_attempt_at);
CREATE INDEX notifications_build ON notifications (build_id);
