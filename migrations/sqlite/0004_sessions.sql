-- Web sessions (SQLite). Kept identical to migrations/postgres/0004_sessions.sql but for the id type.
-- A session is a random cookie value; only its SHA-256 is stored, so a copy
-- of the database logs nobody in. Rows live in the database so every master
-- sharing it knows every session.
CREATE TABLE web_sessions (
    id INTEGER PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_name TEXT NOT NULL,
    -- JSON array of role names, fixed at login (GitHub teams are looked up then).
    roles TEXT NOT NULL,
    -- How the user logged in: 'password' or 'github'.
    source TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at);
