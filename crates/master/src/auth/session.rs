//! Page logins: the login form (local users with argon2 hashes), the
//! session cookie, logout. Cookies are HttpOnly and SameSite=Lax, and Secure
//! when the master's public URL is https. The login form itself is
//! protected by a double-submit token (a cookie and a form field that must
//! match), so no other site can log a visitor in as someone else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use cascade_store::NewSession;
use subtle::ConstantTimeEq;

use super::Access;
use super::{User, hash_token, random_token};

pub const SESSION_COOKIE: &str = "cascade_session";
const LOGIN_COOKIE: &str = "cascade_login";

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
pub fn set_cookie(access: &Access, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if access.catalog.config.master.url.starts_with("https://") { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// Only paths on this site are followed after a login (no open redirect).
pub fn local_next(next: Option<&str>) -> String {
    match next {
        Some(n) if is_local_path(n) => n.to_string(),
        _ => "/".to_string(),
    }
}

/// A path on this site and nothing a browser could read as another: it
/// starts with one `/`, and holds only visible ASCII without a backslash
/// (browsers drop tabs and newlines and read a backslash as `/`, so
/// `/<tab>/evil` would lead off-site). Anything else is percent-encoded by whoever made
/// the link.
fn is_local_path(next: &str) -> bool {
    let mut chars = next.chars();
    chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && next.len() <= 2048
        && next.chars().all(|c| c.is_ascii_graphic() && c != '\\')
}

/// The client's address (without connection info, as in tests: unspecified).
pub fn client_ip(connect: Option<&ConnectInfo<SocketAddr>>) -> IpAddr {
    connect.map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Starts a session for `user`: the row, then the cookie; answers with a
/// redirect to `next`.
pub async fn start(access: &Access, user: &User, source: &str, next: &str) -> Response {
    let token = random_token();
    let csrf = random_token();
    let now = access.clock.now();
    let lifetime = access.catalog.config.auth.session_lifetime.as_secs();
    let new = NewSession {
        token_hash: &hash_token(&token),
        user: &user.name,
        roles: &user.roles,
        source,
        csrf_token: &csrf,
        expires_at: now + lifetime as i64,
    };
    if let Err(e) = access.store.create_session(&new, now).await {
        return crate::error::HttpError::from(e).into_response();
    }
    tracing::info!(user = %user.name, %source, "logged in");
    let mut response = Redirect::to(next).into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(access, SESSION_COOKIE, &token, lifetime));
    response.headers_mut().append(header::SET_COOKIE, set_cookie(access, LOGIN_COOKIE, "", 0));
    response
}

#[derive(Template, WebTemplate)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub title: String,
    pub csrf: String,
    pub next: String,
    pub error: Option<String>,
    pub github: bool,
    pub username: String,
}

#[derive(Debug, serde::Deserialize)]
pub struct NextParam {
    next: Option<String>,
}

fn login_page(access: &Access, status: StatusCode, next: &str, error: Option<String>, username: &str) -> Response {
    let csrf = random_token();
    let page = LoginPage {
        title: access.catalog.config.master.title.clone(),
        csrf: csrf.clone(),
        next: next.to_string(),
        error,
        github: access.catalog.config.auth.github.is_some(),
        username: username.to_string(),
    };
    let mut response = (status, page).into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(access, LOGIN_COOKIE, &csrf, 3600));
    response
}

/// `GET /login`: the form, returning to `next`, or else to the page of this
/// site the visitor came from (its `Referer`; pages send it to their own site
/// only), so "Log in" on any page leads back to that page.
pub async fn form(State(access): State<Arc<Access>>, headers: HeaderMap, Query(q): Query<NextParam>) -> Response {
    let next = q.next.or_else(|| came_from(&headers));
    login_page(&access, StatusCode::OK, &local_next(next.as_deref()), None, "")
}

/// The path and query of a `Referer` on this host (as the `Host` header names it).
fn came_from(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let rest = referer.strip_prefix("http://").or_else(|| referer.strip_prefix("https://"))?;
    let path = rest.strip_prefix(host)?;
    let path = path.split('#').next().unwrap_or("");
    (path.starts_with('/') && !path.starts_with("/login")).then(|| path.to_string())
}

#[derive(Debug, serde::Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

pub async fn login(
    State(access): State<Arc<Access>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let ip = client_ip(connect.as_ref().map(|c| &c.0));
    let next = local_next(f.next.as_deref());
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(f.csrf.as_bytes())) {
        tracing::warn!(address = %ip, "login refused: the form's token does not match its cookie");
        return login_page(
            &access,
            StatusCode::FORBIDDEN,
            &next,
            Some("The form expired; please try again.".into()),
            "",
        );
    }
    if let Err(wait) = access.limiter.begin(&cascade_model::net::client_key(ip), Instant::now()) {
        tracing::warn!(address = %ip, "login refused: too many attempts");
        let why = format!("Too many failed logins from your address; try again in {} s.", wait.as_secs().max(1));
        return with_retry_after(
            login_page(&access, StatusCode::TOO_MANY_REQUESTS, &next, Some(why), &f.username),
            wait,
        );
    }
    let configured = access.catalog.config.users.iter().find(|u| u.name == f.username).cloned();
    let hash = configured.as_ref().and_then(|u| u.password_hash.clone());
    // Unknown users cost the same as known ones, so timing does not tell names apart.
    let Ok(ok) = access.gate.verify(&f.password, hash.as_deref()).await else {
        tracing::warn!(address = %ip, "login refused: too many password checks at once");
        let why = "The master is busy checking passwords; try again in a moment.".to_string();
        let page = login_page(&access, StatusCode::SERVICE_UNAVAILABLE, &next, Some(why), &f.username);
        return with_retry_after(page, std::time::Duration::from_secs(1));
    };
    match (ok, configured) {
        (true, Some(u)) => {
            access.limiter.succeeded(&cascade_model::net::client_key(ip));
            start(&access, &User { name: u.name, roles: u.roles }, "password", &next).await
        }
        (_, known) => {
            // The name is logged only when it is a user's: a password typed
            // into the name field must not reach the log.
            let user = known.map(|u| u.name);
            let user = user.as_deref().unwrap_or("-");
            tracing::warn!(address = %ip, user = %user, "login refused: wrong user name or password");
            login_page(
                &access,
                StatusCode::UNAUTHORIZED,
                &next,
                Some("Wrong user name or password.".into()),
                &f.username,
            )
        }
    }
}

fn with_retry_after(mut response: Response, wait: std::time::Duration) -> Response {
    if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

#[derive(Debug, serde::Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(access): State<Arc<Access>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Response {
    let from = connect.map(|c| c.0.0);
    match access.actor(&headers, from, super::Intent::Logout, Some(&f.csrf)).await {
        Ok(user) => {
            if let Some(token) = cookie(&headers, SESSION_COOKIE) {
                let _ = access.store.delete_session(&hash_token(&token)).await;
            }
            tracing::info!(user = %user.name, "logged out");
            let mut response = Redirect::to("/").into_response();
            response.headers_mut().append(header::SET_COOKIE, set_cookie(&access, SESSION_COOKIE, "", 0));
            response
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_next(Some("/builders/3")), "/builders/3");
        assert_eq!(local_next(Some("https://evil.example/")), "/");
        assert_eq!(local_next(Some("//evil.example/")), "/");
        assert_eq!(local_next(Some("/\\evil.example")), "/");
        assert_eq!(local_next(None), "/");
        for hostile in ["/\t/evil.example", "/\n/evil.example", "/\r\nSet-Cookie: a=b", "/ /x", "\\\\evil", "/\u{2028}"]
        {
            assert_eq!(local_next(Some(hostile)), "/", "{hostile:?}");
        }
        assert_eq!(local_next(Some("/")), "/");
        assert_eq!(local_next(Some("/builders/3?x=1&y=%2F#top")), "/builders/3?x=1&y=%2F#top");
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; cascade_session=abc; b=2"));
        h.append(header::COOKIE, HeaderValue::from_static("c=3"));
        assert_eq!(cookie(&h, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "c").as_deref(), Some("3"));
        assert_eq!(cookie(&h, "d"), None);
    }
}
