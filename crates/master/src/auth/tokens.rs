//! `/tokens`: a logged-in user's API tokens — create (shown once), list,
//! revoke. Only hashes are stored; the token text exists in one response.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};

use super::{Access, Caller, Intent, Via};
use crate::error::HttpError;

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
async fn visitor(access: &Access, headers: &HeaderMap) -> Result<Result<(String, String), Response>, HttpError> {
    match access.caller(headers, None).await? {
        Some(Caller { user, via: Via::Session { csrf } }) => Ok(Ok((user.name, csrf))),
        _ => Ok(Err(Redirect::to("/login?next=%2Ftokens").into_response())),
    }
}

async fn render(access: &Access, user: String, csrf: String, created: Option<String>) -> Result<Response, HttpError> {
    let tokens = access
        .store
        .list_api_tokens()
        .await?
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
    let page = TokensPage { title: access.catalog.config.master.title.clone(), user, csrf, tokens, created };
    let mut response = page.into_response();
    // The one response holding a token's text is never cached.
    response.headers_mut().insert(axum::http::header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /tokens`: the visitor's tokens.
pub async fn list(State(access): State<Arc<Access>>, headers: HeaderMap) -> Result<Response, HttpError> {
    match visitor(&access, &headers).await? {
        Ok((user, csrf)) => render(&access, user, csrf, None).await,
        Err(redirect) => Ok(redirect),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    label: String,
}

/// `POST /tokens`: a new token, shown once.
pub async fn create(
    State(access): State<Arc<Access>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<CreateForm>,
) -> Result<Response, HttpError> {
    let from = connect.map(|c| c.0.0);
    let user = access.actor(&headers, from, Intent::ManageTokens, Some(&f.csrf)).await?;
    let (token, hash) = super::new_token();
    let label = cascade_model::text::clean(&f.label, 200);
    access.store.create_api_token(&user.name, &label, &hash, access.clock.now()).await?;
    tracing::info!(user = %user.name, %label, "API token created");
    match visitor(&access, &headers).await? {
        Ok((name, csrf)) => render(&access, name, csrf, Some(token)).await,
        Err(redirect) => Ok(redirect),
    }
}

#[derive(Debug, serde::Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /tokens/{id}/revoke`: one of the visitor's own tokens.
pub async fn revoke(
    State(access): State<Arc<Access>>,
    Path(id): Path<i64>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(f): Form<RevokeForm>,
) -> Result<Response, HttpError> {
    let from = connect.map(|c| c.0.0);
    let user = access.actor(&headers, from, Intent::ManageTokens, Some(&f.csrf)).await?;
    let owned = access.store.list_api_tokens().await?.iter().any(|t| t.id == id && t.user == user.name);
    if !owned {
        return Err(HttpError::not_found("no such token of yours"));
    }
    access.store.revoke_api_token(id, access.clock.now()).await?;
    tracing::info!(user = %user.name, token = id, "API token revoked");
    Ok(Redirect::to("/tokens").into_response())
}
