//! `/tokens`: a logged-in user's API tokens — create (shown once), list,
//! revoke. Only hashes are stored; the token text exists in one response.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};

use super::{Caller, Via};
use crate::app::Master;

pub struct TokenRow {
    pub id: i64,
    pub label: String,
    pub created: String,
    pub revoked: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "tokens.html")]
pub struct TokensPage {
    pub title: String,
    pub user: String,
    pub csrf: String,
    pub tokens: Vec<TokenRow>,
    pub created: Option<String>,
}

/// The logged-in visitor (a page session), or the response to send instead.
async fn visitor(m: &Master, headers: &HeaderMap) -> Result<(String, String), Response> {
    match super::caller(m, headers, None).await {
        Ok(Some(Caller { user, via: Via::Session { csrf } })) => Ok((user.name, csrf)),
        Ok(_) => Err(Redirect::to("/login?next=%2Ftokens").into_response()),
        Err(e) => Err(e.into_response()),
    }
}

async fn render(m: &Master, user: String, csrf: String, created: Option<String>) -> Response {
    let tokens = match m.store.list_api_tokens().await {
        Ok(t) => t,
        Err(e) => return crate::api::ApiError::from(e).into_response(),
    };
    let tokens = tokens
        .into_iter()
        .filter(|t| t.user == user)
        .map(|t| TokenRow {
            id: t.id,
            label: t.label,
            created: chrono::DateTime::from_timestamp(t.created_at, 0)
                .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default(),
            revoked: t.revoked,
        })
        .collect();
    let page = TokensPage { title: m.config.master.title.clone(), user, csrf, tokens, created };
    let mut response = page.into_response();
    // The one response holding a token's text is never cached.
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    response
}

pub async fn list(State(m): State<Arc<Master>>, headers: HeaderMap) -> Response {
    match visitor(&m, &headers).await {
        Ok((user, csrf)) => render(&m, user, csrf, None).await,
        Err(r) => r,
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
}

pub async fn create(
    State(m): State<Arc<Master>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<CreateForm>,
) -> Response {
    let from = connect.map(|c| c.0.0);
    let user = match super::actor(&m, &headers, from, "token", Some(&f.csrf)).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let (token, hash) = super::new_token();
    let label: String = f.label.chars().take(200).collect();
    if let Err(e) = m.store.create_api_token(&user.name, &label, &hash, crate::clock::now()).await {
        return crate::api::ApiError::from(e).into_response();
    }
    tracing::info!(user = %user.name, %label, "API token created");
    match visitor(&m, &headers).await {
        Ok((name, csrf)) => render(&m, name, csrf, Some(token)).await,
        Err(r) => r,
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

pub async fn revoke(
    State(m): State<Arc<Master>>,
    Path(id): Path<i64>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Response {
    let from = connect.map(|c| c.0.0);
    let user = match super::actor(&m, &headers, from, "token", Some(&f.csrf)).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let owned = m.store.list_api_tokens().await.map(|t| t.iter().any(|t| t.id == id && t.user == user.name));
    match owned {
        Ok(true) => {}
        Ok(false) => return (StatusCode::NOT_FOUND, "no such token of yours").into_response(),
        Err(e) => return crate::api::ApiError::from(e).into_response(),
    }
    if let Err(e) = m.store.revoke_api_token(id, crate::clock::now()).await {
        return crate::api::ApiError::from(e).into_response();
    }
    tracing::info!(user = %user.name, token = id, "API token revoked");
    Redirect::to("/tokens").into_response()
}
