//! The links people already have: `/all/…`, CPython's `/3.x`-style
//! shortcuts, Buildbot's `/#/…` addresses (followed in a real browser), and
//! branch filters by git name; an unknown branch says so.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cascade_model::Results;
use cascade_testkit::test_both;

use crate::harness::{Harness, end_a_new_build, synthetic_push};

pub(crate) const CONFIG: &str = r#"
[master]
name = "links"
[github]
insecure_webhook = true
[[branch]]
name = "3.x"
git = "main"
[[branch]]
name = "3.14"
[[worker]]
name = "w1"
password = "pw"
[[factory]]
name = "f"
steps = [{ name = "t", command = ["true"] }]
[[builder]]
name = "Fedora"
workers = ["w1"]
factory = "f"
branches = ["3.x", "3.14"]
tags = ["stable"]
[[scheduler]]
name = "main"
kind = "branch"
branch = "3.x"
"#;

async fn answer(h: &Harness, uri: &str) -> (StatusCode, String, String) {
    let (status, headers, body) = h.app_response(Request::get(uri).body(Body::empty()).expect("req")).await;
    let location = headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (status, location, String::from_utf8_lossy(&body).into_owned())
}

test_both!(old_addresses_land_on_the_matching_page, |db| {
    let h = Harness::with_config(db, CONFIG).await;
    let fedora = h.builder("Fedora 3.x");
    let build = end_a_new_build(&h.store, fedora, h.master.master_id(), Results::Success).await;
    let number = h.store.get_build(build).await.expect("get").expect("build").number;
    for (from, to) in [
        ("/all/", "/".to_string()),
        ("/all", "/".to_string()),
        ("/all/api/v2/builders?limit=1", "/api/v2/builders?limit=1".to_string()),
        ("/all/console", "/console".to_string()),
        (&format!("/builds/{build}") as &str, format!("/builders/{fedora}/builds/{number}")),
    ] {
        let (status, location, _) = answer(&h, from).await;
        assert_eq!((status, location), (StatusCode::PERMANENT_REDIRECT, to), "{from}");
    }
    for (from, to) in [
        ("/3.x", "/grid?branch=3.x"),
        ("/3.14/", "/grid?branch=3.14"),
        ("/3.x.stable", "/grid?branch=3.x&tag=stable"),
        ("/stable", "/grid?tag=stable"),
    ] {
        let (status, location, _) = answer(&h, from).await;
        assert_eq!((status, location.as_str()), (StatusCode::FOUND, to), "{from}");
    }
    assert_eq!(answer(&h, "/3.99").await.0, StatusCode::NOT_FOUND);
    assert_eq!(answer(&h, "/builds/99999").await.0, StatusCode::NOT_FOUND);

    // A branch by its git name is the branch; an unknown one is an error page naming those there are.
    h.push(&synthetic_push("main", 1, 1, &["a.c"]), "d1").await;
    let (status, _, by_git) = answer(&h, "/console?branch=main").await;
    assert_eq!(status, StatusCode::OK);
    assert!(by_git.contains("push 1 commit 0"), "main is 3.x: {by_git}");
    for page in ["/console", "/grid", "/waterfall", "/builders", "/release", "/changes"] {
        let (status, _, body) = answer(&h, &format!("{page}?branch=nope")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
        assert!(body.contains("no branch &#34;nope&#34; here") && body.contains("3.x (main), 3.14"), "{page}: {body}");
    }
    // The API's `branch=` (Cascade's, for `cascade status`) alike: git name or label, else a 400.
    let (_, by_label) = h.get("/api/v2/builders?branch=3.x").await;
    let (_, by_git) = h.get("/api/v2/builders?branch=main").await;
    assert!(by_label["builders"].as_array().is_some_and(|b| !b.is_empty()), "{by_label}");
    assert_eq!(by_label["builders"], by_git["builders"]);
    let (status, v) = h.get("/api/v2/builders?branch=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().is_some_and(|e| e.starts_with("branch: no branch \"nope\" here")), "{v}");
});
