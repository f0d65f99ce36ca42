//! The links a Buildbot master's users already have: `/all/…` (the prefix
//! of `buildbot.python.org/all/`), CPython's shortcuts (`/3.x`,
//! `/3.14.stable`, `/stable`) and `/builds/{id}`. Buildbot's own
//! `/#/builders/5/builds/3` never reaches the server past the `#`: the
//! page it lands on sends the browser on (`static/cascade.js`).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Pages, unknown_branch};
use crate::error::HttpError;

/// A permanent redirect that keeps the method (and, in the browser, the `#` part).
fn moved(to: String) -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, to)]).into_response()
}

fn with_query(path: String, q: Option<String>) -> String {
    match q {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path,
    }
}

/// `/all` and `/all/{rest}`: the same address without the prefix.
pub async fn all(rest: Option<Path<String>>, RawQuery(q): RawQuery) -> Response {
    let rest = rest.map(|Path(r)| r).unwrap_or_default();
    moved(with_query(format!("/{rest}"), q))
}

/// `/{name}`: `3.x` is its grid, `3.x.stable` the grid of its stable
/// builders, `stable` every branch's stable builders.
pub async fn shortcut(State(m): State<Arc<Pages>>, Path(name): Path<String>) -> Result<Response, HttpError> {
    let name = name.trim_end_matches('/');
    let (branch, stable) = match name.strip_suffix(".stable") {
        Some(b) => (Some(b), true),
        None if name == "stable" => (None, true),
        None => (Some(name), false),
    };
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    if let Some(b) = branch {
        if !m.catalog.config.branches.iter().any(|x| x.name == b) {
            return Err(if stable {
                HttpError::not_found(unknown_branch(b, &m.catalog))
            } else {
                HttpError::not_found("no such page")
            });
        }
        pairs.push(("branch", b));
    }
    if stable {
        pairs.push(("tag", "stable"));
    }
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    Ok((StatusCode::FOUND, [(header::LOCATION, format!("/grid?{query}"))]).into_response())
}

/// `/builds/{id}`: Buildbot's address of a build by id.
pub async fn build(State(m): State<Arc<Pages>>, Path(raw): Path<String>) -> Result<Response, HttpError> {
    let id: i64 = raw.parse().map_err(|_| HttpError::not_found("no such build"))?;
    let b = m.store.get_build(id).await?.ok_or_else(|| HttpError::not_found("no such build"))?;
    Ok(moved(super::build_href(b.builderid, b.number)))
}
