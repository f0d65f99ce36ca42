//! Web sessions: who is logged in to the pages. The cookie holds a random
//! token; the row holds its SHA-256, the user's roles as fixed at login, the
//! session's CSRF token and its expiry.

use crate::records::get;
use crate::{Result, Store};

/// A live web session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The session's id.
    pub id: i64,
    /// The user logged in.
    pub user: String,
    /// The user's roles, fixed at login.
    pub roles: Vec<String>,
    /// `password` or `github`.
    pub source: String,
    /// The token each write made in this session must carry (against CSRF).
    pub csrf_token: String,
    /// When the session ends, Unix seconds.
    pub expires_at: i64,
}

/// A session to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession<'a> {
    /// Hex SHA-256 of the cookie's token; the token itself is never stored.
    pub token_hash: &'a str,
    /// The user logging in.
    pub user: &'a str,
    /// The user's roles, fixed for the session's life.
    pub roles: &'a [String],
    /// `password` or `github`.
    pub source: &'a str,
    /// The token each write made in this session must carry (against CSRF).
    pub csrf_token: &'a str,
    /// When the session ends, Unix seconds.
    pub expires_at: i64,
}

impl Store {
    /// Records a session; returns its id.
    pub async fn create_session(&self, s: &NewSession<'_>, now: i64) -> Result<i64> {
        let roles = serde_json::to_string(s.roles).unwrap_or_else(|_| "[]".into());
        let row = sqlx::query(
            "INSERT INTO web_sessions (token_hash, user_name, roles, source, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(s.token_hash.to_string())
        .bind(s.user.to_string())
        .bind(roles)
        .bind(s.source.to_string())
        .bind(s.csrf_token.to_string())
        .bind(now)
        .bind(s.expires_at)
        .fetch_one(&self.pool)
        .await?;
        get(&row, "id")
    }

    /// A live session by its token's hash.
    pub async fn session(&self, token_hash: &str, now: i64) -> Result<Option<SessionRecord>> {
        let row = sqlx::query(
            "SELECT id, user_name, roles, source, csrf_token, expires_at FROM web_sessions \
             WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash.to_string())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(SessionRecord {
            id: get(&r, "id")?,
            user: get(&r, "user_name")?,
            roles: serde_json::from_str(&get::<String>(&r, "roles")?).unwrap_or_default(),
            source: get(&r, "source")?,
            csrf_token: get(&r, "csrf_token")?,
            expires_at: get(&r, "expires_at")?,
        }))
    }

    /// Logs a session out; false if there was none with that token.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
            .bind(token_hash.to_string())
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets expired sessions; returns how many.
    pub async fn prune_sessions(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1").bind(now).execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}
