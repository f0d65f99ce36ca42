//! Logging in with GitHub: OAuth's authorization-code flow, then the
//! user's teams mapped to roles (`[auth.github] teams`), as CPython maps
//! its GitHub teams. The endpoints are GitHub's unless the config names
//! others (a GitHub Enterprise server, or a stand-in in tests).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use cascade_config::GithubLoginConfig;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::Access;
use super::User;
use super::session::{client_ip, cookie, local_next, set_cookie, start};
use crate::error::HttpError;

const STATE_COOKIE: &str = "cascade_oauth";
/// How long a visitor has to come back from GitHub.
const STATE_LIFETIME_SECS: u64 = 600;
/// Pages of teams read at most (100 a page).
const MAX_TEAM_PAGES: usize = 10;

#[derive(Debug, Deserialize)]
pub struct StartParams {
    next: Option<String>,
}

fn callback_url(access: &Access) -> String {
    format!("{}auth/github/callback", access.catalog.config.master.url)
}

/// `GET /auth/github/login`: off to GitHub, with a state to check on return.
pub async fn start_login(State(access): State<Arc<Access>>, Query(q): Query<StartParams>) -> Response {
    let Some(gh) = &access.catalog.config.auth.github else {
        return HttpError::not_found("GitHub login is not configured").into_response();
    };
    let state = super::random_token();
    let next = local_next(q.next.as_deref());
    let url = format!(
        "{}?client_id={}&redirect_uri={}&scope=read%3Aorg&state={}",
        gh.authorize_url,
        urlencode(&gh.client_id),
        urlencode(&callback_url(&access)),
        state
    );
    let mut response = Redirect::to(&url).into_response();
    // The state and where to go afterwards; `next` is a local path, so safe in a cookie.
    let value = format!("{state}.{}", hex::encode(next.as_bytes()));
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&access, STATE_COOKIE, &value, STATE_LIFETIME_SECS));
    response
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).map(|e| e.trim_start_matches('=').to_string()).unwrap_or_default()
}

#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// What GitHub said about the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubIdentity {
    pub login: String,
    /// `org/team-slug` of every team the user is in.
    pub teams: Vec<String>,
}

/// The roles a GitHub identity gets: its teams' roles, plus `admin` for
/// the configured admins.
pub fn roles_for(gh: &GithubLoginConfig, admins: &[String], who: &GithubIdentity) -> Vec<String> {
    let mut roles: BTreeSet<String> = BTreeSet::new();
    for team in &who.teams {
        let key = team.to_lowercase();
        for (configured, r) in &gh.teams {
            if configured.to_lowercase() == key {
                roles.extend(r.iter().cloned());
            }
        }
    }
    let is_admin = |list: &[String]| list.iter().any(|a| a.eq_ignore_ascii_case(&who.login));
    if is_admin(&gh.admins) || is_admin(admins) {
        roles.insert("admin".into());
    }
    roles.into_iter().collect()
}

#[derive(Debug, thiserror::Error)]
pub enum GithubError {
    #[error("GitHub could not be reached: {0}")]
    Http(#[from] reqwest::Error),
    #[error("GitHub refused: {0}")]
    Refused(String),
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct UserAnswer {
    login: String,
}

#[derive(Deserialize)]
struct TeamAnswer {
    slug: String,
    organization: OrgAnswer,
}

#[derive(Deserialize)]
struct OrgAnswer {
    login: String,
}

/// Trades the code for a token, then reads the user and their teams.
pub async fn identify(
    client: &reqwest::Client,
    gh: &GithubLoginConfig,
    secret: &str,
    code: &str,
    redirect_uri: &str,
) -> Result<GithubIdentity, GithubError> {
    let body = serde_urlencoded::to_string([
        ("client_id", gh.client_id.as_str()),
        ("client_secret", secret),
        ("code", code),
        ("redirect_uri", redirect_uri),
    ])
    .map_err(|e| GithubError::Refused(e.to_string()))?;
    let answer: TokenAnswer = client
        .post(&gh.token_url)
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = match (answer.access_token, answer.error) {
        (Some(t), None) => t,
        (_, e) => {
            return Err(GithubError::Refused(
                answer.error_description.or(e).unwrap_or_else(|| "no access token".into()),
            ));
        }
    };
    let get = |path: String| {
        client
            .get(format!("{}{path}", gh.api_url))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, "application/vnd.github+json")
            .header(header::USER_AGENT, "cascade")
            .header("X-GitHub-Api-Version", "2022-11-28")
    };
    let user: UserAnswer = get("/user".into()).send().await?.error_for_status()?.json().await?;
    let mut teams = Vec::new();
    for page in 1..=MAX_TEAM_PAGES {
        let batch: Vec<TeamAnswer> =
            get(format!("/user/teams?per_page=100&page={page}")).send().await?.error_for_status()?.json().await?;
        let full = batch.len() == 100;
        teams.extend(batch.into_iter().map(|t| format!("{}/{}", t.organization.login, t.slug)));
        if !full {
            break;
        }
    }
    Ok(GithubIdentity { login: user.login, teams })
}

/// `GET /auth/github/callback`: GitHub sends the visitor back with a code.
pub async fn callback(
    State(access): State<Arc<Access>>,
    connect: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Query(q): Query<CallbackParams>,
) -> Response {
    let ip = client_ip(connect.as_ref().map(|c| &c.0));
    let (Some(gh), Some(secret)) = (&access.catalog.config.auth.github, &access.github_client_secret) else {
        return HttpError::not_found("GitHub login is not configured").into_response();
    };
    let refuse = |status: StatusCode, why: &str| {
        tracing::warn!(address = %ip, reason = %why, "GitHub login refused");
        let mut r = HttpError::new(status, why).into_response();
        r.headers_mut().append(header::SET_COOKIE, set_cookie(&access, STATE_COOKIE, "", 0));
        r
    };
    if let Err(wait) = access.limiter.begin(&cascade_model::net::client_key(ip), Instant::now()) {
        return refuse(StatusCode::TOO_MANY_REQUESTS, &format!("too many failed logins; wait {} s", wait.as_secs()));
    }
    if let Some(e) = q.error {
        return refuse(StatusCode::UNAUTHORIZED, &format!("GitHub said: {e}"));
    }
    let saved = cookie(&headers, STATE_COOKIE).unwrap_or_default();
    let (state, next_hex) = saved.split_once('.').unwrap_or(("", ""));
    let sent = q.state.unwrap_or_default();
    if state.is_empty() || !bool::from(state.as_bytes().ct_eq(sent.as_bytes())) {
        return refuse(StatusCode::FORBIDDEN, "the login's state does not match; start again");
    }
    let next = local_next(hex::decode(next_hex).ok().and_then(|b| String::from_utf8(b).ok()).as_deref());
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        return refuse(StatusCode::BAD_REQUEST, "GitHub sent no code");
    };
    let who = match identify(&access.http, gh, secret.expose(), &code, &callback_url(&access)).await {
        Ok(who) => who,
        Err(e) => return refuse(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let roles = roles_for(gh, &access.catalog.config.auth.admins, &who);
    access.limiter.succeeded(&cascade_model::net::client_key(ip));
    tracing::info!(user = %who.login, teams = ?who.teams, ?roles, "GitHub login");
    let mut response = start(&access, &User { name: who.login, roles }, "github", &next).await;
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&access, STATE_COOKIE, "", 0));
    response
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn teams_map_to_roles_and_admins_get_admin() {
        let gh = GithubLoginConfig {
            client_id: "id".into(),
            client_secret: cascade_config::Secret {
                source: cascade_config::SecretSource::Literal(cascade_config::SecretString::new("s")),
                location: cascade_config::Location::default(),
                key: "auth.github.client_secret".into(),
            },
            teams: BTreeMap::from([
                ("python/python-core".to_string(), vec!["core-dev".to_string()]),
                ("python/release-managers".to_string(), vec!["release-manager".to_string()]),
            ]),
            admins: vec!["Zware".into()],
            authorize_url: String::new(),
            token_url: String::new(),
            api_url: String::new(),
        };
        let who = |login: &str, teams: &[&str]| GithubIdentity {
            login: login.into(),
            teams: teams.iter().map(std::string::ToString::to_string).collect(),
        };
        assert_eq!(roles_for(&gh, &[], &who("ann", &["Python/Python-Core", "other/x"])), vec!["core-dev"]);
        assert_eq!(roles_for(&gh, &[], &who("zware", &[])), vec!["admin"]);
        assert_eq!(
            roles_for(&gh, &["bob".into()], &who("bob", &["python/release-managers"])),
            vec!["admin", "release-manager"]
        );
        assert!(roles_for(&gh, &[], &who("eve", &["evil/python-core"])).is_empty());
    }
}
