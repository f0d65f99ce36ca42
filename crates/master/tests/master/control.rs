//! Control and access: every action allowed and refused by role, a build's
//! owner, tokens (revoked ones too), page sessions with CSRF tokens, the
//! login form's rate limit, a private master, and GitHub login against a
//! local server answering as GitHub does.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use cascade_model::Results;
use cascade_store::ListQuery;
use cascade_testkit::test_both;
use serde_json::{Value, json};

use crate::harness::{CONFIG, Harness};

/// The harness config plus users, roles and rules in CPython's spirit.
fn config() -> String {
    format!(
        "{CONFIG}{}",
        r#"
[[user]]
name = "ann"
password_hash = "HASH"
roles = ["core-dev"]

[[user]]
name = "olivia"
roles = ["contributor"]

[[user]]
name = "rm"
roles = ["release-manager"]

[[user]]
name = "guest"
roles = []

[auth]
admins = ["root"]
login_attempts = 3
login_window = "10m"
rules = { force = ["core-dev", "contributor"], stop = ["core-dev"], rebuild = ["core-dev"], cancel = ["core-dev"], pause = ["core-dev"], scheduler = ["release-manager"] }
"#
    )
    .replace("HASH", &cascade_master::password::hash("ann-password").expect("hash"))
}

async fn token(h: &Harness, user: &str) -> String {
    let (token, hash) = cascade_master::auth::new_token();
    h.store.create_api_token(user, "test", &hash, 0).await.expect("token");
    token
}

async fn rpc(h: &Harness, path: &str, token: Option<&str>, method: &str, params: Value) -> (StatusCode, Value) {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    h.send_json(req.body(Body::from(body.to_string())).expect("request")).await
}

/// A build that ran and finished, asked for by `owner` through the API.
async fn finished_build(h: &Harness, owner_token: &str) -> i64 {
    let (status, answer) =
        rpc(h, "/api/v2/forceschedulers/force", Some(owner_token), "force", json!({ "builderNames": ["Linux 3.x"] }))
            .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let claimed = h
        .store
        .claim_build(h.builder("Linux 3.x"), h.master.master_id(), None, cascade_master::clock::now())
        .await
        .expect("claim")
        .expect("a build");
    h.store
        .finish_build(claimed.build_id, Results::Failure, "failed", cascade_master::clock::now())
        .await
        .expect("finish");
    claimed.build_id
}

test_both!(every_action_is_allowed_or_refused_by_role, |db| {
    let h = Harness::with_config(db, &config()).await;
    let [ann, olivia, rm, guest, root] = [
        token(&h, "ann").await,
        token(&h, "olivia").await,
        token(&h, "rm").await,
        token(&h, "guest").await,
        token(&h, "root").await,
    ];

    // force: core-dev and contributor; a guest is refused; nobody anonymous.
    let h = &h;
    let force = |t: Option<String>| async move {
        rpc(
            h,
            "/api/v2/forceschedulers/force",
            t.as_deref(),
            "force",
            json!({ "builderNames": ["Windows 3.x"], "reason": "try" }),
        )
        .await
    };
    assert_eq!(force(None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(force(Some("cascade_bogus".into())).await.0, StatusCode::UNAUTHORIZED);
    let (status, refused) = force(Some(guest.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(refused["error"].as_str().is_some_and(|e| e.contains("guest may not force")), "{refused}");
    let (status, forced) = force(Some(ann.clone())).await;
    assert_eq!(status, StatusCode::OK, "{forced}");
    assert_eq!(forced["jsonrpc"], "2.0");
    let request = forced["result"][1][0].as_i64().expect("a request id");
    let bsid = forced["result"][0].as_i64().expect("a buildset id");
    let props = h.store.buildset_properties(bsid).await.expect("props");
    assert_eq!(props["owner"][0], "ann");
    assert_eq!(force(Some(root.clone())).await.0, StatusCode::OK, "admins may do everything");
    let (status, bad) =
        rpc(h, "/api/v2/forceschedulers/force", Some(&ann), "force", json!({ "builderNames": ["Nope"] })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    let (status, _) = rpc(h, "/api/v2/forceschedulers/main", Some(&ann), "force", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "only force schedulers force");

    // cancel: core-dev only; the request ends CANCELLED; twice is a conflict.
    let path = format!("/api/v2/buildrequests/{request}");
    assert_eq!(rpc(h, &path, Some(&olivia), "cancel", json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(rpc(h, &path, Some(&ann), "cancel", json!({})).await.0, StatusCode::OK);
    let r = h.store.get_buildrequest(request).await.expect("get").expect("exists");
    assert!(r.complete && r.results == 6);
    assert_eq!(rpc(h, &path, Some(&ann), "cancel", json!({})).await.0, StatusCode::CONFLICT);
    assert_eq!(rpc(h, "/api/v2/buildrequests/999999", Some(&ann), "cancel", json!({})).await.0, StatusCode::NOT_FOUND);

    // stop and rebuild: core-dev, and the build's owner (olivia forced it).
    let olivias = finished_build(h, &olivia).await;
    let anns = finished_build(h, &ann).await;
    let path = |b: i64| format!("/api/v2/builds/{b}");
    assert_eq!(rpc(h, &path(anns), Some(&olivia), "stop", json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(rpc(h, &path(anns), Some(&olivia), "rebuild", json!({})).await.0, StatusCode::FORBIDDEN);
    // Allowed, but the build is over: a conflict rather than a refusal.
    assert_eq!(rpc(h, &path(olivias), Some(&olivia), "stop", json!({})).await.0, StatusCode::CONFLICT);
    assert_eq!(rpc(h, &path(anns), Some(&ann), "stop", json!({})).await.0, StatusCode::CONFLICT);
    let (status, rebuilt) = rpc(h, &path(olivias), Some(&olivia), "rebuild", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{rebuilt}");
    let new_bs = rebuilt["result"][0].as_i64().expect("buildset");
    let props = h.store.buildset_properties(new_bs).await.expect("props");
    assert_eq!(props["owner"][0], "olivia");
    assert_eq!(props["rebuilt_from"][0], olivias);
    // As Buildbot's, the rebuild's buildset names the build it repeats.
    let (_, sets) = h.get(&format!("/api/v2/buildsets?rebuilt_buildid={olivias}")).await;
    assert_eq!(sets["buildsets"][0]["bsid"], new_bs, "{sets}");
    assert_eq!(sets["buildsets"][0]["rebuilt_buildid"], olivias);
    let reqs = h.store.list_buildrequests(&ListQuery::default().eq("buildsetid", new_bs)).await.expect("requests");
    assert_eq!(reqs.items[0].builderid, h.builder("Linux 3.x"));
    assert_eq!(rpc(h, &path(anns), Some(&rm), "rebuild", json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(rpc(h, &path(anns), Some(&ann), "frobnicate", json!({})).await.0, StatusCode::BAD_REQUEST);

    // workers: pause and unpause (core-dev), recorded in the store.
    let w1 = h.store.list_workers(&ListQuery::default()).await.expect("workers").items[0].workerid;
    let path = format!("/api/v2/workers/{w1}");
    assert_eq!(rpc(h, &path, Some(&rm), "pause", json!({})).await.0, StatusCode::FORBIDDEN);
    assert_eq!(rpc(h, &path, Some(&ann), "pause", json!({ "reason": "disk full" })).await.0, StatusCode::OK);
    let w = h.store.get_worker(w1).await.expect("get").expect("exists");
    assert!(w.paused && w.pause_reason.as_deref() == Some("disk full"));
    assert_eq!(rpc(h, &path, Some(&ann), "unpause", json!({})).await.0, StatusCode::OK);
    assert!(!h.store.get_worker(w1).await.expect("get").expect("exists").paused);
    assert_eq!(rpc(h, &path, Some(&ann), "stop", json!({})).await.0, StatusCode::OK);
    assert!(h.store.get_worker(w1).await.expect("get").expect("exists").graceful);

    // schedulers: release managers switch them.
    let (_, listed) = h.get("/api/v2/schedulers").await;
    let main =
        listed["schedulers"].as_array().expect("list").iter().find(|s| s["name"] == "main").expect("main").clone();
    let path = format!("/api/v2/schedulers/{}", main["schedulerid"]);
    assert_eq!(rpc(h, &path, Some(&ann), "enable", json!({ "enabled": false })).await.0, StatusCode::FORBIDDEN);
    assert_eq!(rpc(h, &path, Some(&rm), "enable", json!({ "enabled": "maybe" })).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(rpc(h, &path, Some(&rm), "enable", json!({ "enabled": false })).await.0, StatusCode::OK);
    let (_, one) = h.get(&path).await;
    assert_eq!(one["schedulers"][0]["enabled"], false);
    // A disabled scheduler ignores pushes.
    let payload = crate::harness::synthetic_push("master", 9, 1, &["Lib/os.py"]);
    h.push(&payload, "disabled-1").await;
    assert!(h.store.waiting_changes().await.expect("waiting").is_empty());
    assert_eq!(rpc(h, &path, Some(&rm), "enable", json!({ "enabled": true })).await.0, StatusCode::OK);

    // A revoked token opens nothing.
    let tokens = h.store.list_api_tokens().await.expect("tokens");
    let anns_token = tokens.iter().find(|t| t.user == "ann").expect("ann's token").id;
    h.store.revoke_api_token(anns_token, 1).await.expect("revoke");
    assert_eq!(force(Some(ann.clone())).await.0, StatusCode::UNAUTHORIZED);
});

/// A request from a given address (the rate limit counts per address).
fn from(mut req: Request<Body>, ip: &str) -> Request<Body> {
    let addr: SocketAddr = format!("{ip}:40000").parse().expect("address");
    req.extensions_mut().insert(ConnectInfo(addr));
    req
}

fn set_cookies(resp_headers: &axum::http::HeaderMap) -> Vec<String> {
    resp_headers.get_all(header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok().map(str::to_string)).collect()
}

/// `name=value` of a Set-Cookie.
fn cookie_pair(cookies: &[String], name: &str) -> Option<String> {
    cookies.iter().find(|c| c.starts_with(&format!("{name}="))).and_then(|c| c.split(';').next().map(str::to_string))
}

/// The login form's token and its cookie.
async fn login_form(h: &Harness) -> (String, String) {
    let resp = h.app_response(Request::get("/login?next=/api/v2/builders").body(Body::empty()).expect("req")).await;
    assert_eq!(resp.0, StatusCode::OK);
    let cookie = cookie_pair(&set_cookies(&resp.1), "cascade_login").expect("login cookie");
    let html = String::from_utf8_lossy(&resp.2).to_string();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("csrf field");
    (cookie, csrf.to_string())
}

async fn post_login(
    h: &Harness,
    ip: &str,
    cookie: &str,
    csrf: &str,
    user: &str,
    password: &str,
) -> (StatusCode, Vec<String>, String) {
    let body = serde_urlencoded::to_string([
        ("username", user),
        ("password", password),
        ("csrf", csrf),
        ("next", "/api/v2/builders"),
    ])
    .expect("form");
    let req = Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, cookie)
        .body(Body::from(body))
        .expect("req");
    let (status, headers, body) = h.app_response(from(req, ip)).await;
    let location = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let _ = body;
    (status, set_cookies(&headers), location)
}

/// The CSRF token a logged-in page carries (from `/`'s logout form).
async fn page_csrf(h: &Harness, session: &str) -> String {
    let req = Request::get("/").header(header::COOKIE, session).body(Body::empty()).expect("req");
    let (status, body) = h.send(req).await;
    assert_eq!(status, StatusCode::OK);
    let html = String::from_utf8_lossy(&body).to_string();
    html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("a logged-in page").to_string()
}

async fn force_with_session(h: &Harness, session: &str, csrf: Option<&str>) -> StatusCode {
    let mut req = Request::post("/api/v2/forceschedulers/force")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::COOKIE, session);
    if let Some(c) = csrf {
        req = req.header("x-csrf-token", c);
    }
    let body = json!({ "method": "force", "params": { "builderNames": ["Windows 3.x"] } }).to_string();
    h.send(req.body(Body::from(body)).expect("req")).await.0
}

test_both!(page_logins_carry_csrf_tokens_and_failures_are_rate_limited, |db| {
    let h = Harness::with_config(db, &config()).await;
    let (cookie, csrf) = login_form(&h).await;

    // The form's token must match its cookie.
    let (status, _, _) = post_login(&h, "10.0.0.1", &cookie, "forged", "ann", "ann-password").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Wrong passwords, then the limit: even the right password waits, from that address only.
    for _ in 0..3 {
        let (status, cookies, _) = post_login(&h, "10.0.0.1", &cookie, &csrf, "ann", "nope").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(cookie_pair(&cookies, "cascade_session").is_none());
    }
    let (status, _, _) = post_login(&h, "10.0.0.1", &cookie, &csrf, "ann", "ann-password").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, _, _) = post_login(&h, "10.0.0.1", &cookie, &csrf, "nobody", "x").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);

    let (status, cookies, location) = post_login(&h, "10.0.0.2", &cookie, &csrf, "ann", "ann-password").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/api/v2/builders", "back where the visitor was going");
    let set = cookies.iter().find(|c| c.starts_with("cascade_session=")).expect("a session cookie").clone();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && !set.contains("Secure"), "{set}");
    let session = cookie_pair(&cookies, "cascade_session").expect("session");

    // The page offers the forms to the logged-in visitor only.
    let req = Request::get("/").header(header::COOKIE, &session).body(Body::empty()).expect("req");
    let html = String::from_utf8(h.send(req).await.1).expect("html");
    assert!(html.contains("action=\"/api/v2/forceschedulers/force\"") && html.contains("<option>Windows 3.x</option>"));
    assert!(html.contains("ann") && html.contains("Log out"));
    let anonymous =
        String::from_utf8(h.send(Request::get("/").body(Body::empty()).expect("req")).await.1).expect("html");
    assert!(!anonymous.contains("forceschedulers") && anonymous.contains("href=\"/login\""));

    // The schedulers' switches are there too; ann (core-dev) may not use them.
    let scheduler =
        html.split("action=\"/api/v2/schedulers/").nth(1).and_then(|s| s.split('"').next()).expect("a switch");
    let csrf_token = page_csrf(&h, &session).await;
    let req = Request::post(format!("/api/v2/schedulers/{scheduler}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, &session)
        .body(Body::from(format!("method=enable&enabled=false&csrf={csrf_token}&next=%2F")))
        .expect("req");
    assert_eq!(h.send(req).await.0, StatusCode::FORBIDDEN, "only release managers switch schedulers");

    // A session's state changes need its CSRF token.
    assert_eq!(force_with_session(&h, &session, None).await, StatusCode::FORBIDDEN);
    assert_eq!(force_with_session(&h, &session, Some("wrong")).await, StatusCode::FORBIDDEN);
    let csrf_token = page_csrf(&h, &session).await;
    assert_eq!(force_with_session(&h, &session, Some(&csrf_token)).await, StatusCode::OK);
    // The same as an HTML form post: a redirect back.
    let form = format!("method=force&builderNames=Windows+3.x&csrf={csrf_token}&next=%2Fbuilders");
    let req = Request::post("/api/v2/forceschedulers/force")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, &session)
        .body(Body::from(form))
        .expect("req");
    let (status, headers, _) = h.app_response(req).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    // It lands on the new buildset's page, which says what was done and follows its request.
    let to = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(to.starts_with("/buildsets/") && to.ends_with("?done=force"), "{to}");
    let req = Request::get(&to).header(header::COOKIE, &session).body(Body::empty()).expect("req");
    let page = String::from_utf8(h.send(req).await.1).expect("html");
    assert!(page.contains("Forced: 1 build requested.") && page.contains("Windows 3.x"), "{page}");
    assert!(page.contains("waiting in the queue"), "no worker: the request waits");
    let req = Request::post("/api/v2/forceschedulers/force")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, &session)
        .body(Body::from("method=force&builderNames=Windows+3.x"))
        .expect("req");
    assert_eq!(h.send(req).await.0, StatusCode::FORBIDDEN, "a form without the token is refused");

    // Logging out ends the session.
    let req = Request::post("/logout")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, &session)
        .body(Body::from(format!("csrf={csrf_token}")))
        .expect("req");
    assert_eq!(h.send(req).await.0, StatusCode::SEE_OTHER);
    assert_eq!(force_with_session(&h, &session, Some(&csrf_token)).await, StatusCode::UNAUTHORIZED);

    // An expired session opens nothing.
    let roles = vec!["core-dev".to_string()];
    let expired = cascade_store::NewSession {
        token_hash: &cascade_master::auth::hash_token("old-token"),
        user: "ann",
        roles: &roles,
        source: "password",
        csrf_token: "old-csrf",
        expires_at: cascade_master::clock::now() - 1,
    };
    h.store.create_session(&expired, 0).await.expect("session");
    assert_eq!(force_with_session(&h, "cascade_session=old-token", Some("old-csrf")).await, StatusCode::UNAUTHORIZED);
});

test_both!(secure_cookies_behind_https_and_a_private_master, |db| {
    let text = config()
        .replace("name = \"test-master\"", "name = \"test-master\"\nurl = \"https://ci.example.org/\"")
        .replace("login_attempts = 3", "login_attempts = 3\nprivate = true");
    let h = Harness::with_config(db, &text).await;
    let (cookie, csrf) = login_form(&h).await;
    let (status, cookies, _) = post_login(&h, "10.0.0.3", &cookie, &csrf, "ann", "ann-password").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set = cookies.iter().find(|c| c.starts_with("cascade_session=")).expect("session cookie");
    assert!(set.contains("; Secure"), "{set}");
    let session = cookie_pair(&cookies, "cascade_session").expect("session");

    // Anonymous visitors see nothing but the login form.
    let (status, headers, _) = h.app_response(Request::get("/").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers.get(header::LOCATION).and_then(|v| v.to_str().ok()), Some("/login?next=%2F"));
    assert_eq!(h.get("/api/v2/builders").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.send(Request::get("/healthz").body(Body::empty()).expect("req")).await.0, StatusCode::OK);
    // Logged in or with a token, everything reads.
    let req = Request::get("/api/v2/builders").header(header::COOKIE, &session).body(Body::empty()).expect("req");
    assert_eq!(h.send(req).await.0, StatusCode::OK);
    let t = token(&h, "guest").await;
    let req = Request::get("/api/v2/builds")
        .header(header::AUTHORIZATION, format!("Bearer {t}"))
        .body(Body::empty())
        .expect("req");
    assert_eq!(h.send(req).await.0, StatusCode::OK);
    // GitHub's webhook still gets in (it is signed).
    let payload = crate::harness::synthetic_push("master", 4, 1, &["Lib/os.py"]);
    h.push(&payload, "private-1").await;
});

/// A local server answering GitHub's OAuth and API endpoints: `ann-code`
/// belongs to ann (python/python-core), `bob-code` to bob (no teams).
async fn github_stand_in() -> (String, tokio::task::JoinHandle<()>) {
    use axum::routing::{get, post};
    async fn token(body: String) -> axum::response::Response {
        use axum::response::IntoResponse;
        let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap_or_default();
        let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        if field("client_id") != "cascade-app" || field("client_secret") != "gh-secret" {
            return axum::Json(json!({ "error": "incorrect_client_credentials" })).into_response();
        }
        match field("code").as_str() {
            "ann-code" => axum::Json(json!({ "access_token": "gho_ann", "token_type": "bearer", "scope": "read:org" })),
            "bob-code" => axum::Json(json!({ "access_token": "gho_bob", "token_type": "bearer", "scope": "read:org" })),
            _ => axum::Json(json!({ "error": "bad_verification_code", "error_description": "The code passed is incorrect or expired." })),
        }
        .into_response()
    }
    fn who(headers: &axum::http::HeaderMap) -> Option<&'static str> {
        match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            Some("Bearer gho_ann") => Some("ann"),
            Some("Bearer gho_bob") => Some("bob"),
            _ => None,
        }
    }
    async fn user(headers: axum::http::HeaderMap) -> Result<axum::Json<Value>, StatusCode> {
        let login = who(&headers).ok_or(StatusCode::UNAUTHORIZED)?;
        Ok(axum::Json(json!({ "login": login, "id": 1, "type": "User" })))
    }
    async fn teams(headers: axum::http::HeaderMap) -> Result<axum::Json<Value>, StatusCode> {
        match who(&headers).ok_or(StatusCode::UNAUTHORIZED)? {
            "ann" => Ok(axum::Json(json!([
                { "slug": "python-core", "name": "Python core", "organization": { "login": "python" } },
                { "slug": "python-core", "name": "elsewhere", "organization": { "login": "other" } },
            ]))),
            _ => Ok(axum::Json(json!([]))),
        }
    }
    let app = axum::Router::new()
        .route("/login/oauth/access_token", post(token))
        .route("/api/user", get(user))
        .route("/api/user/teams", get(teams));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    (
        base,
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        }),
    )
}

async fn github_login(h: &Harness, code: &str) -> (StatusCode, Option<String>) {
    let (status, headers, _) =
        h.app_response(Request::get("/auth/github/login?next=/builders").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).expect("to GitHub").to_string();
    assert!(location.contains("client_id=cascade-app") && location.contains("scope=read%3Aorg"), "{location}");
    let state = location.split("state=").nth(1).expect("a state").to_string();
    let oauth = cookie_pair(&set_cookies(&headers), "cascade_oauth").expect("state cookie");
    let req = Request::get(format!("/auth/github/callback?code={code}&state={state}"))
        .header(header::COOKIE, &oauth)
        .body(Body::empty())
        .expect("req");
    let (status, headers, _) = h.app_response(req).await;
    (status, cookie_pair(&set_cookies(&headers), "cascade_session"))
}

test_both!(github_login_maps_teams_to_roles, |db| {
    let (base, server) = github_stand_in().await;
    let text = config().replace(
        "rules = {",
        &format!(
            "github = {{ client_id = \"cascade-app\", client_secret = \"gh-secret\", authorize_url = \"{base}/login/oauth/authorize\", token_url = \"{base}/login/oauth/access_token\", api_url = \"{base}/api\", teams = {{ \"python/python-core\" = [\"core-dev\"] }} }}\nrules = {{"
        ),
    );
    let h = Harness::with_config(db, &text).await;

    // A member of python/python-core: core-dev, may force.
    let (status, session) = github_login(&h, "ann-code").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = session.expect("a session");
    let csrf = page_csrf(&h, &session).await;
    assert_eq!(force_with_session(&h, &session, Some(&csrf)).await, StatusCode::OK);

    // Not in any team: logged in, but refused.
    let (status, session) = github_login(&h, "bob-code").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = session.expect("a session");
    let csrf = page_csrf(&h, &session).await;
    assert_eq!(force_with_session(&h, &session, Some(&csrf)).await, StatusCode::FORBIDDEN);

    // A bad code, and a state that does not match: no session.
    let (status, session) = github_login(&h, "stolen-code").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(session.is_none());
    let req = Request::get("/auth/github/callback?code=ann-code&state=guess")
        .header(header::COOKIE, "cascade_oauth=other.2f")
        .body(Body::empty())
        .expect("req");
    let (status, headers, _) = h.app_response(req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(cookie_pair(&set_cookies(&headers), "cascade_session").is_none());
    server.abort();
});

/// Logs `ann` in through the form; her session cookie and CSRF token.
async fn ann_session(h: &Harness, ip: &str) -> (String, String) {
    let (cookie, csrf) = login_form(h).await;
    let (status, cookies, _) = post_login(h, ip, &cookie, &csrf, "ann", "ann-password").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let session = cookie_pair(&cookies, "cascade_session").expect("session");
    let token = page_csrf(h, &session).await;
    (session, token)
}

fn form_post(uri: &str, session: &str, body: String) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, session)
        .body(Body::from(body))
        .expect("req")
}

test_both!(tokens_are_made_shown_once_and_revoked_from_a_page, |db| {
    let h = Harness::with_config(db, &config()).await;
    let (status, headers, _) = h.app_response(Request::get("/tokens").body(Body::empty()).expect("req")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "logged-out visitors are sent to log in");
    assert_eq!(headers.get(header::LOCATION).and_then(|v| v.to_str().ok()), Some("/login?next=%2Ftokens"));
    let (session, csrf) = ann_session(&h, "10.0.1.1").await;

    assert_eq!(
        h.send(form_post("/tokens", &session, "label=ci".into())).await.0,
        StatusCode::FORBIDDEN,
        "no CSRF token"
    );
    let (status, headers, body) =
        h.app_response(form_post("/tokens", &session, format!("label=ci+%3Cbot%3E&csrf={csrf}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()), Some("no-store"));
    let html = String::from_utf8(body).expect("html");
    assert!(html.contains("ci &#60;bot&#62;") || html.contains("ci &lt;bot&gt;"), "the label is escaped: {html}");
    let token =
        html.split("<code id=\"new-token\">").nth(1).and_then(|s| s.split('<').next()).expect("the token, once");
    assert!(token.starts_with("cascade_"));
    let listed = h.store.list_api_tokens().await.expect("tokens");
    assert_eq!(listed.len(), 1);
    assert!(!listed.iter().any(|t| t.label.contains(token)));

    // The token acts as ann.
    let (status, _) =
        rpc(&h, "/api/v2/forceschedulers/force", Some(token), "force", json!({ "builderNames": ["Windows 3.x"] }))
            .await;
    assert_eq!(status, StatusCode::OK);
    // The list page shows it without its text.
    let req = Request::get("/tokens").header(header::COOKIE, &session).body(Body::empty()).expect("req");
    let listing = String::from_utf8(h.send(req).await.1).expect("html");
    assert!(listing.contains("active") && !listing.contains(token));

    // Someone else's token cannot be revoked from here; one's own can.
    let (_, other_hash) = cascade_master::auth::new_token();
    let other = h.store.create_api_token("rm", "theirs", &other_hash, 0).await.expect("token");
    let revoke = |id: i64, csrf: &str| form_post(&format!("/tokens/{id}/revoke"), &session, format!("csrf={csrf}"));
    assert_eq!(h.send(revoke(other, &csrf)).await.0, StatusCode::NOT_FOUND);
    let mine = listed[0].id;
    assert_eq!(h.send(revoke(mine, "wrong")).await.0, StatusCode::FORBIDDEN);
    assert_eq!(h.send(revoke(mine, &csrf)).await.0, StatusCode::SEE_OTHER);
    let (status, _) = rpc(&h, "/api/v2/forceschedulers/force", Some(token), "force", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked token opens nothing");
});

// After a login, and after a form's action, only a path on this site is
// followed: a tab, a newline or a backslash that a browser would read as
// another site sends the visitor home instead (and never answers 500).
test_both!(redirects_after_logins_and_forms_stay_on_this_site, |db| {
    let h = Harness::with_config(db, &config()).await;
    let (cookie, csrf) = login_form(&h).await;
    let hostile =
        ["/\t/evil.example", "/\r\nSet-Cookie: x=y", "/\\evil.example", "//evil.example", "https://evil.example/"];
    let mut session = String::new();
    for (i, next) in hostile.iter().enumerate() {
        let fields = [("username", "ann"), ("password", "ann-password"), ("csrf", csrf.as_str()), ("next", next)];
        let req = form_post("/login", &cookie, serde_urlencoded::to_string(fields).expect("form"));
        let (status, headers, _) = h.app_response(from(req, &format!("10.1.0.{i}"))).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(headers.get(header::LOCATION).and_then(|v| v.to_str().ok()), Some("/"), "{next:?}");
        session = cookie_pair(&set_cookies(&headers), "cascade_session").expect("session");
    }
    let form_csrf = page_csrf(&h, &session).await;
    let body = serde_urlencoded::to_string([
        ("csrf", form_csrf.as_str()),
        ("method", "force"),
        ("builderNames", "Linux 3.x"),
        ("next", "/\t/evil.example"),
    ])
    .expect("form");
    let req = Request::post("/api/v2/forceschedulers/force")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::COOKIE, &session)
        .body(Body::from(body))
        .expect("req");
    let (status, headers, body) = h.app_response(req).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{}", String::from_utf8_lossy(&body));
    let to = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(to.starts_with("/buildsets/"), "a force lands on its buildset, on this site: {to}");
    // A form that makes no buildset goes back to its (checked) `next`, saying what it did.
    let waiting = cascade_store::ListQuery::default().eq("complete", "false");
    let request = h.store.list_buildrequests(&waiting).await.expect("requests").items[0].buildrequestid;
    let fields = [("csrf", form_csrf.as_str()), ("method", "cancel"), ("next", "//evil.example")];
    let req = form_post(
        &format!("/api/v2/buildrequests/{request}"),
        &session,
        serde_urlencoded::to_string(fields).expect("form"),
    );
    let (status, headers, body) = h.app_response(req).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers.get(header::LOCATION).and_then(|v| v.to_str().ok()), Some("/?done=cancelled"));
    let req = Request::get("/?done=cancelled").header(header::COOKIE, &session).body(Body::empty()).expect("req");
    let page = String::from_utf8(h.send(req).await.1).expect("html");
    assert!(page.contains("The build request was cancelled."), "the page it lands on says so");
    let req = Request::get("/?done=%3Cscript%3E").body(Body::empty()).expect("req");
    let page = String::from_utf8(h.send(req).await.1).expect("html");
    assert!(!page.contains("class=\"notice\"") && !page.contains("<script>"), "an unknown word says nothing");
});

// Names a force call stores as they are (branch, revision, property names)
// are refused by name when they hold a NUL or run too long; free text (the
// reason) is cleaned. Both backends answer alike.
test_both!(force_calls_refuse_unstorable_names_by_field, |db| {
    let h = Harness::with_config(db, &config()).await;
    let ann = token(&h, "ann").await;
    let long = "b".repeat(3000);
    for (params, field) in [
        (json!({ "builderNames": ["Linux 3.x"], "branch": "main\u{0}" }), "branch"),
        (json!({ "builderNames": ["Linux 3.x"], "branch": long }), "branch"),
        (json!({ "builderNames": ["Linux 3.x"], "revision": "abc\u{0}" }), "revision"),
    ] {
        let (status, answer) = rpc(&h, "/api/v2/forceschedulers/force", Some(&ann), "force", params).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert!(answer.to_string().contains(field), "the answer names {field}: {answer}");
    }
    let params = json!({ "builderNames": ["Linux 3.x"], "reason": "because\u{0}\u{1b}[2J" });
    let (status, answer) = rpc(&h, "/api/v2/forceschedulers/force", Some(&ann), "force", params).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let sets = h.store.list_buildsets(&ListQuery::default()).await.expect("buildsets").items;
    assert!(sets.iter().all(|b| !b.reason.contains('\0') && !b.reason.contains('\u{1b}')), "the reason is cleaned");
});

// "Log in" on any page comes back to that page: the form reads where the
// visitor came from (its Referer on this host) when no `next` is given, and
// never another site.
test_both!(a_login_returns_to_the_page_it_came_from, |db| {
    let h = Harness::with_config(db, &config()).await;
    let next_of = |html: &str| {
        html.split("name=\"next\" value=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or("")
            .replace("&#38;", "&")
    };
    for (referer, expected) in [
        ("http://ci.example:8010/console?branch=3.x&tag=stable", "/console?branch=3.x&tag=stable"),
        ("http://ci.example:8010/builders/3/builds/7#steps", "/builders/3/builds/7"),
        ("http://evil.example/console", "/"),
        ("http://ci.example:8010//evil.example/", "/"),
    ] {
        let req = Request::get("/login")
            .header(header::HOST, "ci.example:8010")
            .header(header::REFERER, referer)
            .body(Body::empty())
            .expect("req");
        let (status, headers, body) = h.app_response(req).await;
        assert_eq!(status, StatusCode::OK);
        let html = String::from_utf8_lossy(&body).to_string();
        assert_eq!(next_of(&html), expected, "{referer}");
        if expected.starts_with("/console") {
            let cookie = cookie_pair(&set_cookies(&headers), "cascade_login").expect("login cookie");
            let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("csrf");
            let fields = [("username", "ann"), ("password", "ann-password"), ("csrf", csrf), ("next", expected)];
            let (status, headers, _) =
                h.app_response(form_post("/login", &cookie, serde_urlencoded::to_string(fields).expect("form"))).await;
            assert_eq!(status, StatusCode::SEE_OTHER);
            assert_eq!(headers.get(header::LOCATION).and_then(|v| v.to_str().ok()), Some(expected));
        }
    }
});
