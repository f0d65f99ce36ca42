//! Who is asking, and may they? API tokens (`Authorization: Bearer`) name a
//! user of the config; the config's `[auth]` rules say what each role may do.
//! Tokens are 256 random bits shown once; only their SHA-256 is stored.

use std::net::SocketAddr;

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest, Sha256};

use crate::api::ApiError;
use crate::app::Master;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub roles: Vec<String>,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token and the hash to store.
pub fn new_token() -> (String, String) {
    let token = format!("cascade_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let hash = hash_token(&token);
    (token, hash)
}

fn refuse(status: StatusCode, reason: &str, user: Option<&str>, from: Option<SocketAddr>, action: &str) -> ApiError {
    tracing::warn!(%status, user = user.unwrap_or("-"), address = ?from, %action, %reason, "refused");
    ApiError::new(status, reason)
}

/// The caller of a request, from its bearer token.
pub async fn authenticate(
    master: &Master,
    headers: &HeaderMap,
    from: Option<SocketAddr>,
    action: &str,
) -> Result<User, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            refuse(
                StatusCode::UNAUTHORIZED,
                "authentication required: Authorization: Bearer <token>",
                None,
                from,
                action,
            )
        })?;
    let name = master
        .store
        .api_token_user(&hash_token(token))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "unknown or revoked token", None, from, action))?;
    let roles = master.config.users.iter().find(|u| u.name == name).map(|u| u.roles.clone());
    match roles {
        Some(roles) => Ok(User { name, roles }),
        None if master.config.auth.admins.contains(&name) => Ok(User { name, roles: vec![] }),
        None => {
            Err(refuse(StatusCode::UNAUTHORIZED, "the token's user is no longer configured", Some(&name), from, action))
        }
    }
}

/// Checks that `user` may do `action`.
pub fn authorize(master: &Master, user: &User, from: Option<SocketAddr>, action: &str) -> Result<(), ApiError> {
    if master.config.auth.allows(&user.name, &user.roles, action) {
        Ok(())
    } else {
        Err(refuse(StatusCode::FORBIDDEN, &format!("{} may not {action}", user.name), Some(&user.name), from, action))
    }
}
