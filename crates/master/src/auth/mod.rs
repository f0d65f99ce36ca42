//! Who is asking, and may they? Scripts send API tokens
//! (`Authorization: Bearer`); people log in to the pages (a password form or
//! GitHub) and carry a session cookie, whose every state-changing request
//! must also carry the session's CSRF token. The config's `[auth]` rules say
//! what each role may do; a build's owner may also stop and rebuild it.
//! Tokens and session cookies are 256 random bits; only their SHA-256 is
//! stored.

pub mod github;
pub mod limiter;
pub mod session;
pub mod tokens;

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::api::ApiError;
use crate::app::Master;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub roles: Vec<String>,
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Token,
    /// A page login; state changes need this CSRF token too.
    Session {
        csrf: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: User,
    pub via: Via,
}

/// Actions a build's owner may take on it whatever the rules say.
const OWNER_ACTIONS: &[&str] = &["stop", "rebuild"];

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// 256 random bits, hex.
pub fn random_token() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// A new API token and the hash to store.
pub fn new_token() -> (String, String) {
    let token = format!("cascade_{}", random_token());
    let hash = hash_token(&token);
    (token, hash)
}

pub fn refuse(
    status: StatusCode,
    reason: &str,
    user: Option<&str>,
    from: Option<SocketAddr>,
    action: &str,
) -> ApiError {
    tracing::warn!(%status, user = user.unwrap_or("-"), address = ?from, %action, %reason, "refused");
    ApiError::new(status, reason)
}

/// The roles of a configured user (`None`: not configured, or an admin by name only).
fn config_roles(master: &Master, name: &str) -> Option<Vec<String>> {
    match master.config.users.iter().find(|u| u.name == name) {
        Some(u) => Some(u.roles.clone()),
        None if master.config.auth.admins.iter().any(|a| a == name) => Some(Vec::new()),
        None => None,
    }
}

/// The caller, if the request says who it is: a bearer token (which must
/// be valid) or a session cookie (an unknown or expired one is ignored).
pub async fn caller(
    master: &Master,
    headers: &HeaderMap,
    from: Option<SocketAddr>,
) -> Result<Option<Caller>, ApiError> {
    // Only bearer tokens are ours; another scheme (a proxy's Basic) claims nothing here.
    let bearer =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|a| a.strip_prefix("Bearer "));
    if let Some(token) = bearer {
        let token = token.trim();
        let name = master
            .store
            .api_token_user(&hash_token(token))
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "unknown or revoked token", None, from, "-"))?;
        let roles = config_roles(master, &name).ok_or_else(|| {
            refuse(StatusCode::UNAUTHORIZED, "the token's user is no longer configured", Some(&name), from, "-")
        })?;
        return Ok(Some(Caller { user: User { name, roles }, via: Via::Token }));
    }
    let Some(cookie) = session::cookie(headers, session::SESSION_COOKIE) else { return Ok(None) };
    let found = master.store.session(&hash_token(&cookie), crate::clock::now()).await.map_err(ApiError::from)?;
    Ok(found.map(|s| Caller { user: User { name: s.user, roles: s.roles }, via: Via::Session { csrf: s.csrf_token } }))
}

/// The caller of a state-changing request: authenticated, and for a page
/// session, with the session's CSRF token in `X-CSRF-Token` or the form.
pub async fn actor(
    master: &Master,
    headers: &HeaderMap,
    from: Option<SocketAddr>,
    action: &str,
    form_csrf: Option<&str>,
) -> Result<User, ApiError> {
    let Some(caller) = caller(master, headers, from).await? else {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "authentication required: log in, or send Authorization: Bearer <token>",
            None,
            from,
            action,
        ));
    };
    if let Via::Session { csrf } = &caller.via {
        let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).or(form_csrf).unwrap_or("");
        if !bool::from(sent.as_bytes().ct_eq(csrf.as_bytes())) || sent.is_empty() {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token",
                Some(&caller.user.name),
                from,
                action,
            ));
        }
    }
    Ok(caller.user)
}

/// Whether `user` may do `action`; `owner` is who asked for the build the
/// action is about, if it is about one.
pub fn allowed(master: &Master, user: &User, action: &str, owner: Option<&str>) -> bool {
    master.config.auth.allows(&user.name, &user.roles, action)
        || (OWNER_ACTIONS.contains(&action) && owner.is_some_and(|o| o == user.name))
}

/// Checks that `user` may do `action` (403 with the reason otherwise).
pub fn authorize(
    master: &Master,
    user: &User,
    from: Option<SocketAddr>,
    action: &str,
    owner: Option<&str>,
) -> Result<(), ApiError> {
    if allowed(master, user, action, owner) {
        Ok(())
    } else {
        Err(refuse(StatusCode::FORBIDDEN, &format!("{} may not {action}", user.name), Some(&user.name), from, action))
    }
}
