//! Sending one notification: a POST to a chat webhook or to GitHub's REST
//! API, and what the answer means (sent, wait as asked, retry, give up).

use std::time::Duration;

use cascade_config::{ReporterConfig, ReporterKind};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::message::{Facts, chat_body, comment_body, status_body};

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// The receiver asked to wait this long (a rate limit): not a failure.
    Wait(Duration, String),
    /// Try again later.
    Retry(String),
    /// It will not work however often it is tried (a 4xx that is no limit).
    Refused(String),
}

/// Where to send, with what credentials.
pub struct Target<'a> {
    pub reporter: &'a ReporterConfig,
    /// A webhook's URL (a secret).
    pub url: Option<&'a str>,
    pub github_api: &'a str,
    pub github_token: Option<&'a str>,
    pub repository: Option<&'a str>,
}

/// Sends `facts` as `target`'s reporter says.
pub async fn send(http: &reqwest::Client, target: &Target<'_>, facts: &Facts) -> Outcome {
    let (url, body, github) = match &target.reporter.kind {
        ReporterKind::Webhook { format, .. } => {
            let Some(url) = target.url else { return Outcome::Refused("no URL".into()) };
            (url.to_string(), chat_body(*format, facts), false)
        }
        ReporterKind::GithubStatus { context } => {
            let Some(rev) = facts.revision.as_deref() else { return Outcome::Refused("no revision".into()) };
            // It goes into the URL: a commit id and nothing else.
            if !(4..=64).contains(&rev.len()) || !rev.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Outcome::Refused("the revision is not a commit id".into());
            }
            let repo = target.repository.unwrap_or_default();
            (format!("{}/repos/{repo}/statuses/{rev}", target.github_api), status_body(facts, context), true)
        }
        ReporterKind::GithubComment { guide } => {
            let Some(pr) = facts.pull_request else { return Outcome::Refused("no pull request".into()) };
            let repo = target.repository.unwrap_or_default();
            let body = serde_json::json!({ "body": comment_body(facts, guide.as_deref()) });
            (format!("{}/repos/{repo}/issues/{pr}/comments", target.github_api), body, true)
        }
        ReporterKind::Irc(_) | ReporterKind::Mail(_) => return Outcome::Refused("not sent over HTTP".into()),
    };
    post(http, &url, &body, github.then_some(target.github_token).flatten()).await
}

async fn post(http: &reqwest::Client, url: &str, body: &Value, token: Option<&str>) -> Outcome {
    let mut req = http.post(url).json(body);
    if let Some(t) = token {
        req = crate::github::api_request(req, Some(t));
    }
    match req.send().await {
        Ok(resp) => judge(resp.status(), resp.headers(), crate::clock::now()),
        // The URL is a secret: say what failed, not where.
        Err(e) => Outcome::Retry(format!("could not send: {}", e.without_url())),
    }
}

/// What an answer means: GitHub's rate limits (`retry-after`, or
/// `x-ratelimit-remaining: 0` until `x-ratelimit-reset`) are waits; 5xx and
/// 408 are retried; other 4xx are refused.
pub fn judge(status: StatusCode, headers: &HeaderMap, now: i64) -> Outcome {
    if status.is_success() {
        return Outcome::Sent;
    }
    if let Some((wait, why)) = crate::outbound::github_wait(status, headers, now) {
        return Outcome::Wait(wait, why);
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Outcome::Retry(format!("{status}"));
    }
    Outcome::Refused(format!("{status}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[tokio::test]
    async fn only_commit_ids_reach_githubs_paths() {
        let reporter = cascade_config::ReporterConfig {
            name: "st".into(),
            kind: ReporterKind::GithubStatus { context: "ci".into() },
            events: vec![],
            tags: vec![],
            builders: vec![],
            branches: vec![],
            give_up_after: Duration::from_secs(60),
        };
        let target = Target {
            reporter: &reporter,
            url: None,
            github_api: "http://127.0.0.1:9",
            github_token: None,
            repository: Some("o/r"),
        };
        for rev in ["../../user/repos?x=1", "abc#frag", "", "zz12"] {
            let facts = Facts { revision: Some(rev.into()), ..Facts::default() };
            let outcome = send(&crate::outbound::http_client(), &target, &facts).await;
            assert!(matches!(outcome, Outcome::Refused(_)), "{rev:?}: {outcome:?}");
        }
    }

    #[test]
    fn answers_mean_sent_wait_retry_or_refused() {
        let none = HeaderMap::new();
        assert_eq!(judge(StatusCode::CREATED, &none, 0), Outcome::Sent);
        assert!(
            matches!(judge(StatusCode::FORBIDDEN, &headers(&[("retry-after", "30")]), 0), Outcome::Wait(d, _) if d == Duration::from_secs(30))
        );
        let limited = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1090")]);
        assert!(
            matches!(judge(StatusCode::FORBIDDEN, &limited, 1000), Outcome::Wait(d, _) if d == Duration::from_secs(90))
        );
        assert!(matches!(judge(StatusCode::BAD_GATEWAY, &none, 0), Outcome::Retry(_)));
        assert!(matches!(judge(StatusCode::FORBIDDEN, &none, 0), Outcome::Refused(_)));
        assert!(matches!(judge(StatusCode::UNPROCESSABLE_ENTITY, &none, 0), Outcome::Refused(_)));
    }
}
