//! GitHub's REST API as the master calls it (the poller, pull requests):
//! one client, so the token, the API version and GitHub's rate limits are
//! handled the same way everywhere.

use std::time::Duration;

use cascade_config::SecretString;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::clock::Clock;

/// An API client: where GitHub is, and the token, if any.
#[derive(Clone)]
pub struct GitHub {
    pub http: reqwest::Client,
    /// `[github] api_url`, without a trailing slash.
    pub api_url: String,
    pub token: Option<SecretString>,
    pub clock: Clock,
}

/// Why a call did not give what was asked.
#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    /// GitHub asks to wait (`retry-after`, or the rate limit is spent).
    #[error("GitHub's rate limit: waiting {0:?}")]
    RateLimited(Duration),
    /// An answer that is no success (the path has no secret in it).
    #[error("GitHub answered {status} for {path}")]
    Status { status: u16, path: String },
    /// No answer, or one that is not the JSON expected.
    #[error("GitHub: {0}")]
    Failed(String),
}

impl GithubError {
    /// GitHub does not have it (a branch gone, a base commit force-pushed away).
    pub fn is_not_found(&self) -> bool {
        matches!(self, GithubError::Status { status: 404, .. })
    }
}

/// An answer, or "unchanged since the ETag sent".
pub enum Fetched<T> {
    Fresh { body: T, etag: Option<String> },
    Unchanged,
}

/// `s` as one path segment: everything but unreserved bytes percent-encoded
/// (label names hold spaces and slashes).
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        // Dots too: a `..` segment would be resolved away by the URL parser.
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What every call to GitHub's REST API carries: its media type, the API
/// version, and the token when there is one.
pub fn api_request(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    let req = req.header("accept", "application/vnd.github+json").header("x-github-api-version", "2022-11-28");
    match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

impl GitHub {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.api_url));
        api_request(req, self.token.as_ref().map(SecretString::expose))
    }

    /// Sends `req`; a rate limit or a non-success status is an error.
    async fn send(&self, req: reqwest::RequestBuilder, path: &str) -> Result<reqwest::Response, GithubError> {
        let resp = req.send().await.map_err(|e| GithubError::Failed(e.without_url().to_string()))?;
        let status = resp.status();
        if let Some((wait, why)) = crate::outbound::github_wait(status, resp.headers(), self.clock.now()) {
            tracing::info!(reason = %why, "GitHub asks to wait");
            return Err(GithubError::RateLimited(wait));
        }
        if !status.is_success() && status != StatusCode::NOT_MODIFIED {
            return Err(GithubError::Status { status: status.as_u16(), path: path.to_string() });
        }
        Ok(resp)
    }

    /// GETs `path` as JSON, conditionally when `etag` is given.
    pub async fn get_if<T: DeserializeOwned>(&self, path: &str, etag: Option<&str>) -> Result<Fetched<T>, GithubError> {
        let mut req = self.request(reqwest::Method::GET, path);
        if let Some(e) = etag {
            req = req.header("if-none-match", e);
        }
        let resp = self.send(req, path).await?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::Unchanged);
        }
        let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
        let body = resp.json::<T>().await.map_err(|e| GithubError::Failed(format!("{path}: {}", e.without_url())))?;
        Ok(Fetched::Fresh { body, etag })
    }

    /// GETs `path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, GithubError> {
        match self.get_if(path, None).await? {
            Fetched::Fresh { body, .. } => Ok(body),
            Fetched::Unchanged => Err(GithubError::Failed(format!("{path}: 304 without an ETag sent"))),
        }
    }

    /// POSTs `body` to `path`.
    pub async fn post(&self, path: &str, body: &Value) -> Result<(), GithubError> {
        self.send(self.request(reqwest::Method::POST, path).json(body), path).await.map(drop)
    }

    /// DELETEs `path`.
    pub async fn delete(&self, path: &str) -> Result<(), GithubError> {
        self.send(self.request(reqwest::Method::DELETE, path), path).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::segment;

    #[test]
    fn a_segment_cannot_leave_its_place_in_the_path() {
        assert_eq!(segment("test-with-buildbots"), "test-with-buildbots");
        assert_eq!(segment("needs review/ok"), "needs%20review%2Fok");
        assert_eq!(segment("../x?y#z"), "%2E%2E%2Fx%3Fy%23z");
        assert_eq!(segment("ünï"), "%C3%BCn%C3%AF");
    }
}
