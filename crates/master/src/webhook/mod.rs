//! `POST /change_hook/github`: GitHub deliveries become changes.
//!
//! Order of checks: size (413, enforced while reading), event header (400),
//! signature over the raw bytes (401), body decoding (400/415), then the
//! event. The changes are committed before the 2xx goes out; scheduling
//! happens afterwards, so the answer does not grow with the fleet.

pub mod push;
pub mod signature;

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_store::{Delivery, IngestOutcome};
use serde_json::{Value, json};

use crate::app::Master;
use push::{PushEvent, PushPlan, plan_push};
use signature::{Algorithm, verify};

/// GitHub caps payloads at 25 MB; anything bigger is not from GitHub.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// A refusal: status and a one-line reason, as JSON.
#[derive(Debug)]
pub struct HookError(StatusCode, String);

impl IntoResponse for HookError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty())
}

/// Checks the signature, if a secret is configured.
fn authenticate(master: &Master, headers: &HeaderMap, body: &[u8]) -> Result<(), HookError> {
    let Some(secret) = &master.webhook_secret else { return Ok(()) };
    let secret = secret.expose().as_bytes();
    let unauthorized = |msg: String| HookError(StatusCode::UNAUTHORIZED, msg);
    let result = if let Some(sig) = header_str(headers, "x-hub-signature-256") {
        verify(Algorithm::Sha256, secret, body, sig)
    } else if let Some(sig) =
        header_str(headers, "x-hub-signature").filter(|_| master.config.github.allow_sha1_signature)
    {
        verify(Algorithm::Sha1, secret, body, sig)
    } else {
        return Err(unauthorized("missing X-Hub-Signature-256 header".into()));
    };
    result.map_err(|e| unauthorized(e.to_string()))
}

/// The JSON payload's bytes, from a JSON body or a form body's `payload` field.
fn payload_bytes<'b>(headers: &HeaderMap, body: &'b [u8]) -> Result<std::borrow::Cow<'b, [u8]>, HookError> {
    let bad = |msg: String| HookError(StatusCode::BAD_REQUEST, msg);
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str()).unwrap_or("application/json");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json_bytes: std::borrow::Cow<[u8]> = match mime.as_str() {
        "application/json" => body.into(),
        "application/x-www-form-urlencoded" => {
            let fields: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body).map_err(|e| bad(format!("malformed form body: {e}")))?;
            let payload = fields
                .into_iter()
                .find(|(k, _)| k == "payload")
                .map(|(_, v)| v)
                .ok_or_else(|| bad("form body has no payload field".into()))?;
            payload.into_bytes().into()
        }
        other => {
            return Err(HookError(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported content type {other:?}; use application/json or application/x-www-form-urlencoded"
                ),
            ));
        }
    };
    Ok(json_bytes)
}

/// Parses the payload as `T`, telling malformed JSON from JSON that lacks
/// what the event needs; both are one-line 400s.
fn parse_payload<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, HookError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let reason = if e.is_data() { format!("invalid {what} payload: {e}") } else { format!("malformed JSON: {e}") };
        HookError(StatusCode::BAD_REQUEST, reason)
    })
}

pub async fn github(
    State(master): State<Arc<Master>>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Response {
    match handle(&master, &headers, &body).await {
        Ok(resp) => resp,
        Err(e) => {
            let from = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
            tracing::warn!(
                status = e.0.as_u16(),
                reason = %e.1,
                address = ?from,
                delivery = header_str(&headers, "x-github-delivery").unwrap_or("-"),
                "webhook refused"
            );
            e.into_response()
        }
    }
}

async fn handle(master: &Master, headers: &HeaderMap, body: &[u8]) -> Result<Response, HookError> {
    let event = header_str(headers, "x-github-event")
        .ok_or_else(|| HookError(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header".into()))?
        .to_string();
    authenticate(master, headers, body)?;
    let payload = payload_bytes(headers, body)?;
    let delivery = header_str(headers, "x-github-delivery").map(|d| Delivery {
        hook_id: header_str(headers, "x-github-hook-id").unwrap_or("").to_string(),
        delivery_id: d.to_string(),
        event: event.clone(),
    });
    let internal = |e: cascade_store::StoreError| {
        tracing::error!(error = %e, "webhook could not be stored");
        HookError(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable; redeliver later".into())
    };
    match event.as_str() {
        "ping" => {
            parse_payload::<Value>(&payload, "ping")?;
            Ok(Json(json!({ "ok": "pong" })).into_response())
        }
        "push" => {
            let push: PushEvent = parse_payload(&payload, "push")?;
            if let (Some(want), Some(got)) = (&master.config.github.repository, push.repository.full_name())
                && !want.eq_ignore_ascii_case(&got)
            {
                tracing::info!(repository = %got, "push for an unconfigured repository ignored");
                return Ok(accepted(format!("repository {got} is not configured here")));
            }
            let plan = plan_push(&push, master.config.github.build_tags, crate::clock::now())
                .map_err(|e| HookError(StatusCode::BAD_REQUEST, format!("invalid push payload: {e}")))?;
            let now = crate::clock::now();
            match plan {
                PushPlan::Ignore(reason) => {
                    tracing::info!(%reason, "push ignored");
                    Ok(accepted(reason))
                }
                PushPlan::DeleteBranch { repository, branch } => {
                    let Some(done) = master
                        .store
                        .delete_branch(delivery.as_ref(), &repository, &branch, now)
                        .await
                        .map_err(internal)?
                    else {
                        return Ok(duplicate());
                    };
                    tracing::info!(%branch, cancelled = done.cancelled_requests, dropped = done.dropped_changes, "branch deleted");
                    Ok(Json(json!({
                        "deleted_branch": branch,
                        "cancelled_requests": done.cancelled_requests,
                        "dropped_changes": done.dropped_changes,
                    }))
                    .into_response())
                }
                PushPlan::Changes(changes) => {
                    let batch: Vec<_> = changes
                        .into_iter()
                        .map(|c| {
                            let touches = master.schedulers.classify(&c);
                            (c, touches)
                        })
                        .collect();
                    match master.store.ingest_changes(delivery.as_ref(), &batch, now).await.map_err(internal)? {
                        IngestOutcome::Duplicate => Ok(duplicate()),
                        IngestOutcome::Stored { change_ids } => {
                            master.wake_schedulers.notify_one();
                            tracing::info!(branch = ?batch.last().and_then(|(c, _)| c.branch.clone()), changes = change_ids.len(), "push stored");
                            Ok(Json(json!({ "changes": change_ids })).into_response())
                        }
                    }
                }
            }
        }
        other => {
            tracing::info!(event = %other, "webhook event not handled");
            Ok(accepted(format!("event {other} is not handled")))
        }
    }
}

fn accepted(reason: String) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "ignored": reason }))).into_response()
}

fn duplicate() -> Response {
    (StatusCode::OK, Json(json!({ "duplicate": true }))).into_response()
}
