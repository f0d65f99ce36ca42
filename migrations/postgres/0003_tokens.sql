-- API tokens (PostgreSQL). Kept identical to migrations/sqlite/0003_tokens.sql but for the id type.
-- Only a SHA-256 of each token is stored; the token itself is shown once, at creation.
CREATE TABLE api_tokens (
    id BIGSERIAL PRIMARY KEY,
    user_name TEXT NOT NULL,
    label TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
