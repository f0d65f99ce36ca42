//! `POST /change_hook/github`: GitHub deliveries become changes.
//!
//! Order of checks: size (413, enforced while reading), event header (400),
//! signature over the raw bytes (401), body decoding (400/415), then the
//! event. The changes are committed before the 2xx goes out; scheduling
//! happens afterwards, so the answer does not grow with the fleet.

pub mod pull;
pub mod pulls;
pub mod push;
pub mod signature;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::FromRef;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cascade_config::SecretString;
use cascade_store::{Delivery, IngestOutcome, Redundant, Store};
use push::{PushEvent, PushPlan, plan_push};
use serde_json::{Value, json};
use signature::{Algorithm, verify};

use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::error::HttpError;
use crate::pulls::Pulls;
use crate::runner::Runner;
use crate::scheduler::Schedulers;

/// What the receiver needs.
pub struct Hook {
    /// Where changes are written.
    pub store: Store,
    /// `[github]` and the branches.
    pub catalog: Arc<Catalog>,
    /// Which schedulers want a change; nudged once it is stored.
    pub schedulers: Arc<Schedulers>,
    /// The webhook secret; `None` only with `insecure_webhook`.
    pub secret: Option<SecretString>,
    /// What time it is.
    pub clock: Clock,
    /// Pull requests built: GitHub's API, labels and comments.
    pub pulls: Arc<Pulls>,
    /// Stops a PR's running builds on new commits.
    pub runner: Arc<Runner>,
    /// Deliveries counted and timed.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// `POST /change_hook/github`.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Hook>: FromRef<S>,
{
    Router::new().route("/change_hook/github", post(github).layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
}

/// GitHub caps payloads at 25 MB; anything bigger is not from GitHub.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|s| !s.is_empty())
}

/// Checks the signature, if a secret is configured.
fn authenticate(hook: &Hook, headers: &HeaderMap, body: &[u8]) -> Result<(), HttpError> {
    let Some(secret) = &hook.secret else { return Ok(()) };
    let secret = secret.expose().as_bytes();
    let unauthorized = |msg: String| HttpError::new(StatusCode::UNAUTHORIZED, msg);
    let result = if let Some(sig) = header_str(headers, "x-hub-signature-256") {
        verify(Algorithm::Sha256, secret, body, sig)
    } else if let Some(sig) =
        header_str(headers, "x-hub-signature").filter(|_| hook.catalog.config.github.allow_sha1_signature)
    {
        verify(Algorithm::Sha1, secret, body, sig)
    } else {
        return Err(unauthorized("missing X-Hub-Signature-256 header".into()));
    };
    result.map_err(|e| unauthorized(e.to_string()))
}

/// The JSON payload's bytes, from a JSON body or a form body's `payload` field.
fn payload_bytes<'b>(headers: &HeaderMap, body: &'b [u8]) -> Result<std::borrow::Cow<'b, [u8]>, HttpError> {
    let bad = HttpError::bad_request;
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
            return Err(HttpError::new(
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
fn parse_payload<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, HttpError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let reason = if e.is_data() { format!("invalid {what} payload: {e}") } else { format!("malformed JSON: {e}") };
        HttpError::bad_request(reason)
    })
}

/// How long a delivery's store work may take beyond waiting for a
/// connection (`[limits] store_timeout`).
const STORE_SLACK: std::time::Duration = std::time::Duration::from_secs(2);

/// Receives one delivery; refusals are logged with the caller's address.
pub async fn github(
    State(hook): State<Arc<Hook>>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    body: Bytes,
) -> Result<Response, HttpError> {
    // A store that hangs (rather than refusing) must not hold the delivery
    // past GitHub's 10 s: what was not committed in time is not acknowledged.
    let deadline = hook.catalog.config.limits.store_timeout + STORE_SLACK;
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(deadline, handle(&hook, &headers, &body)).await.unwrap_or_else(|_| {
        Err(HttpError::unavailable(
            "the delivery could not be handled in time (the store or GitHub's API was slow); redeliver later",
        ))
    });
    count(&hook.metrics, header_str(&headers, "x-github-event"), &answer, started.elapsed());
    answer.inspect_err(|e| {
        let from = extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0);
        tracing::warn!(
            status = e.status().as_u16(),
            reason = %e.message(),
            address = ?from,
            delivery = header_str(&headers, "x-github-delivery").unwrap_or("-"),
            "webhook refused"
        );
    })
}

/// One delivery in the metrics: its event (a known one, else `other`, so
/// a caller cannot make new series) and its outcome by status.
fn count(
    metrics: &crate::metrics::Metrics,
    event: Option<&str>,
    answer: &Result<Response, HttpError>,
    took: std::time::Duration,
) {
    let known = |e: &&str| matches!(*e, "push" | "pull_request" | "issue_comment" | "ping");
    let event = event.filter(known).unwrap_or("other");
    let status = match answer {
        Ok(r) => r.status(),
        Err(e) => e.status(),
    };
    let outcome = match status.as_u16() {
        200 | 201 => "accepted",
        202..=299 => "ignored",
        401 | 403 => "unauthorized",
        400..=499 => "refused",
        _ => "failed",
    };
    metrics.webhook_deliveries.inc(&[event, outcome]);
    metrics.webhook_duration.observe(&[event], took.as_secs_f64());
}

/// A store failure while recording a delivery: GitHub may redeliver.
pub(crate) fn unstored(e: cascade_store::StoreError) -> HttpError {
    if e.is_unavailable() {
        tracing::error!(error = %e, "webhook could not be stored");
        return HttpError::unavailable("the store is unavailable; redeliver later");
    }
    HttpError::from(e)
}

/// The delivery's ids, which are stored (to recognise a redelivery).
fn delivery(headers: &HeaderMap, event: &str) -> Result<Option<Delivery>, HttpError> {
    let field = |name: &str| -> Result<Option<String>, HttpError> {
        let Some(value) = header_str(headers, name) else { return Ok(None) };
        cascade_model::text::name_like(name, value, cascade_model::text::DELIVERY_MAX)
            .map_err(|e| HttpError::bad_request(e.to_string()))?;
        Ok(Some(value.to_string()))
    };
    let hook_id = field("X-GitHub-Hook-ID")?.unwrap_or_default();
    let event = event.to_string();
    Ok(field("X-GitHub-Delivery")?.map(|delivery_id| Delivery { hook_id, delivery_id, event }))
}

async fn handle(hook: &Hook, headers: &HeaderMap, body: &[u8]) -> Result<Response, HttpError> {
    let event = header_str(headers, "x-github-event")
        .ok_or_else(|| HttpError::bad_request("missing X-GitHub-Event header"))?
        .to_string();
    cascade_model::text::name_like("X-GitHub-Event", &event, 100).map_err(|e| HttpError::bad_request(e.to_string()))?;
    authenticate(hook, headers, body)?;
    let payload = payload_bytes(headers, body)?;
    let delivery = delivery(headers, &event)?;
    match event.as_str() {
        "ping" => {
            parse_payload::<Value>(&payload, "ping")?;
            Ok(Json(json!({ "ok": "pong" })).into_response())
        }
        "push" => push(hook, parse_payload(&payload, "push")?, delivery.as_ref()).await,
        "pull_request" => pulls::pull_request(hook, parse_payload(&payload, "pull_request")?, delivery.as_ref()).await,
        "issue_comment" => {
            pulls::issue_comment(hook, parse_payload(&payload, "issue_comment")?, delivery.as_ref()).await
        }
        other => {
            tracing::info!(event = %other, "webhook event not handled");
            Ok(accepted(format!("event {other} is not handled")))
        }
    }
}

async fn push(hook: &Hook, push: PushEvent, delivery: Option<&Delivery>) -> Result<Response, HttpError> {
    let github = &hook.catalog.config.github;
    // Checked (and refused by field) before anything is judged on it.
    let now = hook.clock.now();
    let plan = plan_push(&push, github.build_tags, now)
        .map_err(|e| HttpError::bad_request(format!("invalid push payload: {e}")))?;
    if let Some(want) = &github.repository {
        // A push that does not say its repository cannot be checked against ours.
        let got = push
            .repository
            .full_name()
            .ok_or_else(|| HttpError::bad_request("invalid push payload: repository.full_name: missing"))?;
        if !want.eq_ignore_ascii_case(&got) {
            tracing::info!(repository = ?got, "push for an unconfigured repository ignored");
            return Ok(accepted(format!("repository {got} is not configured here")));
        }
    }
    match plan {
        PushPlan::Ignore(reason) => {
            tracing::info!(%reason, "push ignored");
            Ok(accepted(reason))
        }
        PushPlan::DeleteBranch { repository, branch } => {
            let Some(done) = hook.store.delete_branch(delivery, &repository, &branch, now).await.map_err(unstored)?
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
                    let touches = hook.schedulers.classify(&c);
                    (c, touches)
                })
                .collect();
            // Commits the poller already made up for are not stored twice.
            let started = std::time::Instant::now();
            // Timers count from the millisecond the push arrived.
            let at = hook.clock.now_ms();
            let stored = hook.store.ingest_changes_at(delivery, &batch, Redundant::Polled, at).await;
            hook.metrics.store_duration.observe(&["ingest"], started.elapsed().as_secs_f64());
            match stored.map_err(unstored)? {
                IngestOutcome::Duplicate => Ok(duplicate()),
                IngestOutcome::Stored { change_ids } => {
                    if change_ids.len() < batch.len() {
                        tracing::info!(polled = batch.len() - change_ids.len(), "a late delivery of polled commits");
                    }
                    if let Some(due) = hook.schedulers.due_after(batch.iter().flat_map(|(_, t)| t), at) {
                        hook.schedulers.nudge_at(due);
                    }
                    let branch = batch.last().and_then(|(c, _)| c.branch.clone());
                    tracing::info!(branch = ?branch, changes = change_ids.len(), "push stored");
                    Ok(Json(json!({ "changes": change_ids })).into_response())
                }
            }
        }
    }
}

pub(crate) fn accepted(reason: String) -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "ignored": reason }))).into_response()
}

pub(crate) fn duplicate() -> Response {
    (StatusCode::OK, Json(json!({ "duplicate": true }))).into_response()
}
