//! Who is asking, and may they? Scripts send API tokens
//! (`Authorization: Bearer`); people log in to the pages (a password form or
//! GitHub) and carry a session cookie, whose every state-changing request
//! must also carry the session's CSRF token. The config's `[auth]` rules say
//! what each role may do; a build's owner may also stop and rebuild it.
//! Tokens and session cookies are 256 random bits; only their SHA-256 is
//! stored.

pub mod github;
pub mod session;
pub mod tokens;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use cascade_config::{Action, SecretString};
use cascade_store::Store;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::error::HttpError;

/// What deciding who someone is, and what they may do, needs.
pub struct Access {
    /// Tokens and sessions.
    pub store: Store,
    /// Users, `[auth]`, the public URL.
    pub catalog: Arc<Catalog>,
    /// What time it is (session expiry).
    pub clock: Clock,
    /// Page logins per address (an attempt counts until it succeeds).
    pub limiter: crate::limiter::Limiter<std::net::IpAddr>,
    /// Bounds the password checks running at once.
    pub gate: Arc<crate::password::Gate>,
    /// For calls to GitHub (login).
    pub http: reqwest::Client,
    /// The GitHub OAuth application's secret, when GitHub login is on.
    pub github_client_secret: Option<SecretString>,
}

/// The login, logout, token and GitHub login routes.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Access>: FromRef<S>,
{
    Router::new()
        .route("/login", get(session::form).post(session::login))
        .route("/logout", post(session::logout))
        .route("/tokens", get(tokens::list).post(tokens::create))
        .route("/tokens/{id}/revoke", post(tokens::revoke))
        .route("/auth/github/login", get(github::start_login))
        .route("/auth/github/callback", get(github::callback))
        .layer(axum::middleware::map_response(crate::error::as_page))
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The user's name.
    pub name: String,
    /// The roles the rules are checked against.
    pub roles: Vec<String>,
}

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// An API token.
    Token,
    /// A page login; state changes need this CSRF token too.
    Session {
        /// The session's CSRF token.
        csrf: String,
    },
}

/// Who is calling, and how they proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Who.
    pub user: User,
    /// How.
    pub via: Via,
}

/// What a caller is trying to do, for decisions and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// One of the actions `[auth] rules` govern.
    Act(Action),
    /// Read a private master's pages or API.
    Read,
    /// Log out.
    Logout,
    /// Make or revoke one's own API tokens.
    ManageTokens,
    /// Present a token or cookie (before any intent is known).
    Identify,
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Intent::Act(a) => a.fmt(f),
            Intent::Read => f.write_str("read"),
            Intent::Logout => f.write_str("logout"),
            Intent::ManageTokens => f.write_str("token"),
            Intent::Identify => f.write_str("-"),
        }
    }
}

/// Actions a build's owner may take on it whatever the rules say.
const OWNER_ACTIONS: [Action; 2] = [Action::Stop, Action::Rebuild];

/// The SHA-256 of a token, hex: what is stored.
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

/// A refusal, logged with who, from where and what for.
pub fn refuse(
    status: StatusCode,
    reason: &str,
    user: Option<&str>,
    from: Option<SocketAddr>,
    intent: Intent,
) -> HttpError {
    tracing::warn!(%status, user = user.unwrap_or("-"), address = ?from, action = %intent, %reason, "refused");
    HttpError::new(status, reason)
}

impl Access {
    /// The roles of a configured user (`None`: not configured, or an admin by name only).
    fn config_roles(&self, name: &str) -> Option<Vec<String>> {
        let config = &self.catalog.config;
        match config.users.iter().find(|u| u.name == name) {
            Some(u) => Some(u.roles.clone()),
            None if config.auth.admins.iter().any(|a| a == name) => Some(Vec::new()),
            None => None,
        }
    }

    /// The caller, if the request says who it is: a bearer token (which must
    /// be valid) or a session cookie (an unknown or expired one is ignored).
    pub async fn caller(&self, headers: &HeaderMap, from: Option<SocketAddr>) -> Result<Option<Caller>, HttpError> {
        // Only bearer tokens are ours; another scheme (a proxy's Basic) claims nothing here.
        let bearer =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|a| a.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            let refused = |reason: &str, user: Option<&str>| {
                refuse(StatusCode::UNAUTHORIZED, reason, user, from, Intent::Identify)
            };
            let name = self
                .store
                .api_token_user(&hash_token(token.trim()))
                .await?
                .ok_or_else(|| refused("unknown or revoked token", None))?;
            let roles = self
                .config_roles(&name)
                .ok_or_else(|| refused("the token's user is no longer configured", Some(&name)))?;
            return Ok(Some(Caller { user: User { name, roles }, via: Via::Token }));
        }
        let Some(cookie) = session::cookie(headers, session::SESSION_COOKIE) else { return Ok(None) };
        let found = self.store.session(&hash_token(&cookie), self.clock.now()).await?;
        Ok(found
            .map(|s| Caller { user: User { name: s.user, roles: s.roles }, via: Via::Session { csrf: s.csrf_token } }))
    }

    /// The caller of a state-changing request: authenticated, and for a page
    /// session, with the session's CSRF token in `X-CSRF-Token` or the form.
    pub async fn actor(
        &self,
        headers: &HeaderMap,
        from: Option<SocketAddr>,
        intent: Intent,
        form_csrf: Option<&str>,
    ) -> Result<User, HttpError> {
        let Some(caller) = self.caller(headers, from).await? else {
            let reason = "authentication required: log in, or send Authorization: Bearer <token>";
            return Err(refuse(StatusCode::UNAUTHORIZED, reason, None, from, intent));
        };
        if let Via::Session { csrf } = &caller.via {
            let sent = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).or(form_csrf).unwrap_or("");
            if !bool::from(sent.as_bytes().ct_eq(csrf.as_bytes())) || sent.is_empty() {
                let reason = "missing or wrong CSRF token";
                return Err(refuse(StatusCode::FORBIDDEN, reason, Some(&caller.user.name), from, intent));
            }
        }
        Ok(caller.user)
    }

    /// Whether `user` may do `action`; `owner` is who asked for the build the
    /// action is about, if it is about one.
    pub fn allowed(&self, user: &User, action: Action, owner: Option<&str>) -> bool {
        self.catalog.config.auth.allows(&user.name, &user.roles, action)
            || (OWNER_ACTIONS.contains(&action) && owner.is_some_and(|o| o == user.name))
    }

    /// Checks that `user` may do `action` (403 with the reason otherwise).
    pub fn authorize(
        &self,
        user: &User,
        from: Option<SocketAddr>,
        action: Action,
        owner: Option<&str>,
    ) -> Result<(), HttpError> {
        if self.allowed(user, action, owner) {
            return Ok(());
        }
        let reason = format!("{} may not {action}", user.name);
        Err(refuse(StatusCode::FORBIDDEN, &reason, Some(&user.name), from, Intent::Act(action)))
    }

    /// The logged-in visitor of a page, for its header and forms.
    pub async fn session_view(&self, headers: &HeaderMap) -> Option<SessionView> {
        match self.caller(headers, None).await {
            Ok(Some(Caller { user, via: Via::Session { csrf } })) => Some(SessionView { user: user.name, csrf }),
            _ => None,
        }
    }
}

/// Who is logged in, and the token their forms carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The user's name.
    pub user: String,
    /// The session's CSRF token.
    pub csrf: String,
}

/// Paths open to everyone even on a private master: logging in, health,
/// GitHub's webhook (it has its own signature), the stylesheet.
fn always_open(path: &str) -> bool {
    matches!(path, "/login" | "/healthz" | "/change_hook/github")
        || path.starts_with("/auth/github/")
        || path.starts_with("/static/")
}

/// With `[auth] private = true`, nothing is shown to a caller who is not
/// logged in (pages redirect to the login form, the API answers 401).
pub async fn private_gate(
    State(access): State<Arc<Access>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let auth = &access.catalog.config.auth;
    let path = request.uri().path();
    let guarded = if path == "/metrics" { auth.private_metrics } else { auth.private && !always_open(path) };
    if !guarded {
        return next.run(request).await;
    }
    let from = request.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0);
    match access.caller(request.headers(), from).await {
        Ok(Some(_)) => next.run(request).await,
        Ok(None) if request.uri().path().starts_with("/api/") || request.uri().path() == "/metrics" => {
            let reason = "this master is private: log in or send a token";
            refuse(StatusCode::UNAUTHORIZED, reason, None, from, Intent::Read).into_response()
        }
        Ok(None) => {
            let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
            let query = serde_urlencoded::to_string([("next", target)]).unwrap_or_default();
            axum::response::Redirect::to(&format!("/login?{query}")).into_response()
        }
        Err(e) => e.into_response(),
    }
}
