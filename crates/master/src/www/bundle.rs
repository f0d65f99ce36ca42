//! An installed `buildbot-www`: its `index.html` with the configuration
//! the UI reads at start injected, its files and its plugins' files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Www;
use crate::error::HttpError;

/// The view plugins Cascade serves when they are installed beside the bundle.
const PLUGINS: [&str; 3] = ["console_view", "waterfall_view", "grid_view"];

/// Where Buildbot's `index.html` takes the configuration.
const CONFIG_PLACEHOLDER: &str = " <!-- BUILDBOT_CONFIG_PLACEHOLDER -->";

/// The bundle as read at start (and at each reload).
#[derive(Debug)]
pub struct Bundle {
    dir: PathBuf,
    index: String,
    plugins: Vec<(String, PathBuf)>,
}

impl Bundle {
    /// Reads `dir/index.html` and finds the plugins installed beside the
    /// bundle (`site-packages/buildbot_<name>/static`).
    pub fn load(dir: &Path) -> std::io::Result<Bundle> {
        let index = std::fs::read_to_string(dir.join("index.html"))?;
        let site = dir.parent().and_then(Path::parent);
        let plugins = PLUGINS
            .iter()
            .filter_map(|name| {
                let folder = site?.join(format!("buildbot_{name}")).join("static");
                folder.join("scripts.js").is_file().then(|| (name.to_string(), folder))
            })
            .collect();
        Ok(Bundle { dir: dir.to_path_buf(), index, plugins })
    }

    /// The names of the plugins served.
    pub fn plugin_names(&self) -> impl Iterator<Item = &str> {
        self.plugins.iter().map(|(n, _)| n.as_str())
    }
}

/// What Buildbot's `IndexResource` puts in `window.buildbotFrontendConfig`.
fn frontend_config(w: &Www, bundle: &Bundle) -> Value {
    let master = &w.catalog.config.master;
    let mut url = master.url.clone();
    if !url.ends_with('/') {
        url.push('/');
    }
    let plugins: serde_json::Map<String, Value> = bundle.plugin_names().map(|n| (n.to_string(), json!({}))).collect();
    json!({
        "title": master.title,
        "titleURL": master.url,
        "buildbotURL": format!("{url}buildbot/"),
        "multiMaster": true,
        "ui_default_config": {},
        "versions": [["Cascade", env!("CARGO_PKG_VERSION")]],
        "auth": { "name": "NoAuth", "oauth2": false, "fa_icon": "", "autologin": false },
        "avatar_methods": [],
        "plugins": plugins,
        "user": { "anonymous": true },
        "project_widgets": [],
        "port": "",
    })
}

/// JSON safe inside a `<script>` element: no `<`, `>`, `&` or line separators as such.
pub fn script_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// The page's policy: the bundle's own files, the one inline script by its
/// hash, and inline styles (the bundle's React components set them).
fn policy(script: &str) -> String {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script.as_bytes()));
    format!(
        "default-src 'self'; script-src 'self' 'sha256-{hash}'; style-src 'self' 'unsafe-inline'; \
         img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; \
         frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
}

fn bundle_of(w: &Www) -> Result<&Arc<Bundle>, HttpError> {
    w.bundle.as_ref().ok_or_else(|| HttpError::not_found("Buildbot's UI is not configured"))
}

/// `/buildbot`: the UI resolves `api/v2`, `ws` and `plugins/` against the
/// page's path, so it must end in a slash.
pub(super) async fn to_slash() -> Redirect {
    Redirect::permanent("/buildbot/")
}

/// `/buildbot/`: Buildbot's `index.html` with its configuration.
pub(super) async fn index(State(w): State<Arc<Www>>) -> Result<Response, HttpError> {
    let bundle = bundle_of(&w)?;
    let config = script_safe(&frontend_config(&w, bundle).to_string());
    let script = format!("\n    window.buildbotFrontendConfig = {config};\n");
    let page = bundle.index.replacen(CONFIG_PLACEHOLDER, &format!("<script id=\"bb-config\">{script}</script>"), 1);
    let mut response = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response();
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&policy(&script)) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    Ok(response)
}

/// `/buildbot/config`: the same configuration, for a UI served elsewhere.
pub(super) async fn config(State(w): State<Arc<Www>>) -> Result<Response, HttpError> {
    let bundle = bundle_of(&w)?;
    Ok(axum::Json(frontend_config(&w, bundle)).into_response())
}

/// A route of the API as Buildbot's `application.spec` names it: no
/// leading slash, `{param}` as `n:param`.
fn spec_path(path: &str) -> String {
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|p| match p.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            Some(name) => format!("n:{name}"),
            None => p.to_string(),
        })
        .collect();
    parts.join("/")
}

/// `/buildbot/api/v2/application.spec`: the API's read routes, for the
/// UI's About page (Cascade describes no fields: they are in `openapi.json`).
pub(super) async fn application_spec() -> axum::Json<Value> {
    let specs: Vec<Value> = crate::api::openapi::ROUTES
        .iter()
        .filter(|r| r.method == "get")
        .filter_map(|r| r.key.map(|key| (r, key)))
        .map(|(r, key)| {
            let kind = key.strip_suffix('s').unwrap_or(key);
            json!({ "path": spec_path(r.path), "plural": key, "type": kind, "type_spec": { "name": kind } })
        })
        .collect();
    let total = specs.len();
    axum::Json(json!({ "specs": specs, "meta": { "total": total } }))
}

/// `rel` below `dir`, when every part of it is a plain name.
pub fn inside(dir: &Path, rel: &str) -> Option<PathBuf> {
    let plain = |p: &str| !p.is_empty() && p != "." && p != ".." && !p.contains(['\\', '\0', ':']);
    rel.split('/').all(plain).then(|| dir.join(rel))
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        _ => "application/octet-stream",
    }
}

/// A file of the bundle: hashed `assets/` are kept for good, the rest revalidated.
async fn send(dir: &Path, rel: &str) -> Result<Response, HttpError> {
    let path = inside(dir, rel).ok_or_else(|| HttpError::not_found("no such file"))?;
    let Ok(bytes) = tokio::fs::read(&path).await else { return Err(HttpError::not_found("no such file")) };
    let cache = if rel.starts_with("assets/") { "public, max-age=31536000, immutable" } else { "no-cache" };
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, content_type(&path)), (header::CACHE_CONTROL, cache)], bytes)
        .into_response())
}

/// `/buildbot/{file}`.
pub(super) async fn file(State(w): State<Arc<Www>>, UrlPath(rel): UrlPath<String>) -> Result<Response, HttpError> {
    let bundle = bundle_of(&w)?;
    if rel == "index.html" {
        return index(State(w.clone())).await;
    }
    send(&bundle.dir, &rel).await
}

/// `/buildbot/plugins/{name}/{file}`.
pub(super) async fn plugin_file(
    State(w): State<Arc<Www>>,
    UrlPath((name, rel)): UrlPath<(String, String)>,
) -> Result<Response, HttpError> {
    let bundle = bundle_of(&w)?;
    let (_, dir) =
        bundle.plugins.iter().find(|(n, _)| *n == name).ok_or_else(|| HttpError::not_found("no such plugin"))?;
    // The UI asks every plugin for its styles; the grid plugin has none.
    if rel == "styles.css" && !dir.join(&rel).is_file() {
        return Ok(([(header::CONTENT_TYPE, "text/css; charset=utf-8")], "").into_response());
    }
    send(dir, &rel).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_cannot_end_the_script() {
        let safe = script_safe(r#"{"title":"</script><script>alert(1)</script> & co"}"#);
        assert!(!safe.contains('<') && !safe.contains('>') && !safe.contains('&'), "{safe}");
        let back: Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back["title"], "</script><script>alert(1)</script> & co");
    }

    #[test]
    fn spec_paths_are_buildbots() {
        assert_eq!(spec_path("/builders/{id}/builds/{number}"), "builders/n:id/builds/n:number");
        assert_eq!(spec_path("/changes"), "changes");
    }

    #[test]
    fn only_plain_names_are_served() {
        let dir = Path::new("/srv/bundle");
        assert_eq!(inside(dir, "assets/index.js"), Some(dir.join("assets/index.js")));
        for bad in ["../etc/passwd", "assets/../../x", "", "a//b", "./x", "a\\b", "c:x"] {
            assert_eq!(inside(dir, bad), None, "{bad}");
        }
    }

    #[test]
    fn the_policy_allows_the_config_script_by_its_hash() {
        let p = policy("x");
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(b"x"));
        assert!(p.contains(&format!("'sha256-{hash}'")), "{p}");
        assert!(!p.contains("unsafe-eval"));
    }
}
