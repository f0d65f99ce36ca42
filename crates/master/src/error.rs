//! One error type for every HTTP answer that is not a success: webhook,
//! API and pages return `Result<_, HttpError>` and use `?`.
//!
//! What a caller sent wrong is a 4xx with a one-line reason. An unreachable
//! or overloaded store is a 503 (try again). Corrupt data and bugs are a 500
//! whose body names an incident id that is also in the log, and nothing
//! more: the details are for the operator, not the caller.

use std::fmt::Display;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cascade_store::StoreError;
use serde_json::json;

/// A refusal or a failure, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    status: StatusCode,
    message: String,
    incident: Option<String>,
    retry_after: Option<u64>,
}

/// Put in a response's extensions, so the pages can show the error as a page.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The status.
    pub status: StatusCode,
    /// The one-line reason.
    pub message: String,
}

impl HttpError {
    /// An error with this status and reason.
    pub fn new(status: StatusCode, message: impl Into<String>) -> HttpError {
        HttpError { status, message: message.into(), incident: None, retry_after: None }
    }

    /// 400: the request is malformed; the reason names the field.
    pub fn bad_request(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::NOT_FOUND, message)
    }

    /// 409: the request is fine but the state does not allow it.
    pub fn conflict(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::CONFLICT, message)
    }

    /// 503: try again later.
    pub fn unavailable(message: impl Into<String>) -> HttpError {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 500 for a bug or corrupt data: logged with an incident id, which is
    /// all the caller is told.
    pub fn internal(what: &str, error: &dyn Display) -> HttpError {
        let incident = uuid::Uuid::new_v4().simple().to_string();
        tracing::error!(%incident, error = %error, "{what}");
        HttpError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("internal error; incident {incident} is in the master's log"),
            incident: Some(incident),
            retry_after: None,
        }
    }

    /// Adds `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> HttpError {
        self.retry_after = Some(seconds);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The reason.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> HttpError {
        match e {
            StoreError::BadQuery(m) => HttpError::bad_request(m),
            e if e.is_refused_value() => {
                tracing::warn!(error = %e, "the store refused a value");
                HttpError::bad_request("a value is too long or holds a character that cannot be stored")
            }
            e if e.is_unavailable() => {
                tracing::warn!(error = %e, "the store is unavailable");
                HttpError::unavailable("the store is unavailable")
            }
            e => HttpError::internal("a store call failed", &e),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = match &self.incident {
            Some(id) => json!({ "error": self.message, "incident": id }),
            None => json!({ "error": self.message }),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(v) = self.retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response.extensions_mut().insert(Rendered { status: self.status, message: self.message });
        response
    }
}

/// An error answered to a page as a page (a layer on the pages' routes):
/// the same status, the reason (escaped) and a way back.
pub async fn as_page(response: Response) -> Response {
    let Some(Rendered { status, message }) = response.extensions().get::<Rendered>().cloned() else { return response };
    let page = ErrorPage { status: status.as_u16(), reason: status.canonical_reason().unwrap_or(""), message };
    let Ok(html) = askama::Template::render(&page) else { return response };
    let mut r = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response();
    if let Some(v) = response.headers().get(header::RETRY_AFTER) {
        r.headers_mut().insert(header::RETRY_AFTER, v.clone());
    }
    for cookie in response.headers().get_all(header::SET_COOKIE) {
        r.headers_mut().append(header::SET_COOKIE, cookie.clone());
    }
    r
}

#[derive(askama::Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    reason: &'static str,
    message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_by_cause() {
        let bad = HttpError::from(StoreError::BadQuery("unknown field \"x\"".into()));
        assert_eq!((bad.status(), bad.message()), (StatusCode::BAD_REQUEST, "unknown field \"x\""));
        let down = HttpError::from(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(down.status(), StatusCode::SERVICE_UNAVAILABLE);
        let corrupt = HttpError::from(StoreError::Corrupt("a log chunk is not UTF-8".into()));
        assert_eq!(corrupt.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!corrupt.message().contains("UTF-8"), "details stay in the log: {}", corrupt.message());
        let id = corrupt.incident.clone().expect("an incident id");
        assert!(corrupt.message().contains(&id));
        let bug = HttpError::from(StoreError::Database(sqlx::Error::RowNotFound));
        assert_eq!(bug.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn the_answer_is_json_with_the_reason() {
        let r = HttpError::conflict("the build has already finished").retry_after(3).into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()), Some("3"));
        assert_eq!(r.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()), Some("application/json"));
        assert!(r.extensions().get::<Rendered>().is_some());
    }

    #[tokio::test]
    async fn a_page_shows_the_error_escaped() {
        let r = as_page(HttpError::not_found("no such build <script>").into_response()).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.expect("body");
        let html = String::from_utf8_lossy(&body);
        assert!(html.contains("404 Not Found") && html.contains("no such build &#60;script&#62;"), "{html}");
    }
}
