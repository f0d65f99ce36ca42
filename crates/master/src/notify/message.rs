//! What a notification says, as plain data (`Facts`, stored as the
//! notification's body), and how each reporter puts it: one chat line,
//! Slack, Discord, Zulip and JSON bodies, a GitHub status, a pull request
//! comment. Pure functions, tested without I/O.

use cascade_config::ChatFormat;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Everything a reporter may say about one build event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// The event that made this notification (`worse`, `started`, ...).
    pub event: String,
    /// Every event the build's end (or start) gave.
    pub events: Vec<String>,
    pub builder: String,
    pub builder_id: i64,
    pub build_id: i64,
    pub number: i64,
    /// `success`, `failure`, ...; `None` while it runs.
    pub results: Option<String>,
    pub revision: Option<String>,
    pub branch: Option<String>,
    /// The blamelist's authors.
    pub authors: Vec<String>,
    /// The build's page.
    pub url: String,
    /// The builder's tags (its tier among them).
    pub tags: Vec<String>,
    /// Failed test files.
    pub failed_tests: Vec<String>,
    /// Leak lines.
    pub leaks: Vec<String>,
    /// (test, traceback), capped.
    pub tracebacks: Vec<(String, String)>,
    /// The merged pull request, when the build covers exactly one change
    /// whose message ends with GitHub's `(#NNN)` or `(GH-NNN)`.
    pub pull_request: Option<u64>,
    /// The commit's title, for the comment.
    pub title: Option<String>,
    /// A worker event's worker.
    pub worker: Option<String>,
    pub worker_id: Option<i64>,
    /// Who a worker event's mail goes to (its owner), when not the reporter's list.
    pub to: Vec<String>,
}

fn short(rev: Option<&str>) -> String {
    rev.map_or(String::new(), |r| r.chars().take(10).collect())
}

/// Chat text that cannot ping a channel or forge a link (`<!channel>`, `@everyone`).
fn chat_safe(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('@', "@\u{200B}")
}

/// Caps a list for a message: its first `n`, and how many more.
fn capped(list: &[String], n: usize) -> (&[String], usize) {
    (&list[..list.len().min(n)], list.len().saturating_sub(n))
}

/// One line: `unix 3.x #12: worse (failure) on 0123456789 by Ann: https://…`.
pub fn line(f: &Facts) -> String {
    if let Some(worker) = &f.worker {
        return format!("worker {worker}: {}: {}", f.event.replace('_', " "), f.url);
    }
    let results = f.results.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    let rev = f.revision.as_deref().map(|r| format!(" on {}", short(Some(r)))).unwrap_or_default();
    let by = if f.authors.is_empty() { String::new() } else { format!(" by {}", f.authors.join(", ")) };
    format!("{} #{}: {}{results}{rev}{by}: {}", f.builder, f.number, f.event, f.url)
}

/// A chat webhook's body.
pub fn chat_body(format: ChatFormat, f: &Facts) -> Value {
    let results = f.results.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    let who = if f.authors.is_empty() { String::new() } else { format!(" by {}", chat_safe(&f.authors.join(", "))) };
    let rev = chat_safe(&short(f.revision.as_deref()));
    let builder = chat_safe(&f.builder);
    match format {
        ChatFormat::Slack => {
            json!({ "text": format!("<{}|{builder} #{}>: {}{results} on `{rev}`{who}", f.url, f.number, f.event) })
        }
        ChatFormat::Discord => {
            json!({
                "content": format!("[{builder} #{}](<{}>): {}{results} on `{rev}`{who}", f.number, f.url, f.event),
                "allowed_mentions": { "parse": [] },
            })
        }
        ChatFormat::Zulip => {
            json!({ "text": format!("[{builder} #{}]({}): **{}**{results} on `{rev}`{who}", f.number, f.url, f.event) })
        }
        ChatFormat::Json => {
            let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
            if let Value::Object(o) = &mut v {
                o.insert("text".into(), json!(line(f)));
                o.remove("tracebacks");
            }
            v
        }
    }
}

/// A GitHub commit status: `pending` while it runs, then its result.
pub fn status_body(f: &Facts, context: &str) -> Value {
    let state = match f.results.as_deref() {
        None => "pending",
        Some("success" | "warnings") => "success",
        Some("failure") => "failure",
        Some(_) => "error",
    };
    let description = match f.results.as_deref() {
        None => format!("build #{} running", f.number),
        Some(r) => format!("build #{}: {r}", f.number),
    };
    json!({
        "state": state,
        "target_url": f.url,
        "description": description,
        "context": context.replace("{builder}", &f.builder),
    })
}

/// The pull request a commit message names as GitHub's squash-merge suffix:
/// `Fix the thing (#1234)` or `gh-99: Fix (GH-1234)` on its first line.
pub fn merged_pull_request(message: &str) -> Option<u64> {
    let title = message.lines().next()?.trim_end();
    let inner = title.strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let tag = &inner[open + 1..];
    let number = tag.strip_prefix('#').or_else(|| tag.strip_prefix("GH-"))?;
    (!number.is_empty() && number.len() <= 9 && number.bytes().all(|b| b.is_ascii_digit()))
        .then(|| number.parse().ok())
        .flatten()
}

/// The comment on the merged pull request whose commit broke a stable builder.
pub fn comment_body(f: &Facts, guide: Option<&str>) -> String {
    let tier = f.tags.iter().find(|t| t.starts_with("tier-")).map(|t| format!(" ({t})")).unwrap_or_default();
    let mut out = format!(
        ":warning: **Buildbot failure** on **{}**{tier}\n\nThe buildbot **{}** has failed when building commit {}.\n\n\
         What do you need to do:\n\n\
         1. Don't panic.\n\
         2. Check [the build]({}) to see if the failure is related to this commit.\n\
         3. If it is, fix it (or revert the commit) soon: the builder stays red for everyone until then.\n",
        f.builder,
        f.builder,
        f.revision.as_deref().unwrap_or("?"),
        f.url
    );
    if let Some(g) = guide {
        out.push_str(&format!("4. The guide explains how to reproduce it: {g}\n"));
    }
    if !f.failed_tests.is_empty() {
        out.push_str("\nFailed tests:\n\n");
        let (shown, more) = capped(&f.failed_tests, 50);
        for t in shown {
            out.push_str(&format!("- {t}\n"));
        }
        if more > 0 {
            out.push_str(&format!("- and {more} more\n"));
        }
    }
    if !f.leaks.is_empty() {
        out.push_str("\nLeaks:\n\n");
        let (shown, more) = capped(&f.leaks, 20);
        for l in shown {
            out.push_str(&format!("- `{}`\n", l.replace('`', "'")));
        }
        if more > 0 {
            out.push_str(&format!("- and {more} more\n"));
        }
    }
    if !f.tracebacks.is_empty() {
        out.push_str("\n<details><summary>Tracebacks</summary>\n\n```\n");
        for (test, tb) in &f.tracebacks {
            out.push_str(&format!("{test}\n{}\n\n", tb.replace("```", "'''")));
        }
        out.push_str("```\n\n</details>\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            event: "worse".into(),
            builder: "AMD64 Fedora 3.x".into(),
            number: 12,
            results: Some("failure".into()),
            revision: Some("0123456789abcdef".into()),
            authors: vec!["Ann".into()],
            url: "https://ci.example.org/builders/3/builds/12".into(),
            tags: vec!["stable".into(), "tier-1".into()],
            failed_tests: vec!["test_os".into()],
            tracebacks: vec![("test_os.T.test_x".into(), "Traceback ```x```".into())],
            ..Facts::default()
        }
    }

    #[test]
    fn one_line_names_builder_result_revision_author_and_link() {
        assert_eq!(
            line(&facts()),
            "AMD64 Fedora 3.x #12: worse (failure) on 0123456789 by Ann: https://ci.example.org/builders/3/builds/12"
        );
    }

    #[test]
    fn odd_revisions_and_pings_are_harmless() {
        let mut f = facts();
        f.revision = Some("ééééééééééé".into());
        assert!(line(&f).contains(" on éééééééééé "), "cut by characters, not bytes");
        f.authors = vec!["<!channel> @everyone".into()];
        let slack = chat_body(ChatFormat::Slack, &f)["text"].as_str().unwrap_or_default().to_string();
        assert!(!slack.contains("<!channel>") && !slack.contains("@everyone"), "{slack}");
        assert_eq!(chat_body(ChatFormat::Discord, &f)["allowed_mentions"]["parse"], json!([]));
        f.failed_tests = (0..80).map(|i| format!("test_{i}")).collect();
        f.leaks = vec!["test_x leaked [1] `references`".into()];
        let body = comment_body(&f, None);
        assert!(body.contains("- and 30 more") && !body.contains("test_79"));
        assert!(body.contains("`test_x leaked [1] 'references'`"));
    }

    #[test]
    fn chat_formats() {
        let f = facts();
        assert!(chat_body(ChatFormat::Slack, &f)["text"].as_str().is_some_and(|t| t.starts_with("<https://")));
        assert!(chat_body(ChatFormat::Discord, &f)["content"].as_str().is_some_and(|t| t.starts_with("[AMD64")));
        let json = chat_body(ChatFormat::Json, &f);
        assert_eq!(json["builder"], "AMD64 Fedora 3.x");
        assert_eq!(json["text"], line(&f));
    }

    #[test]
    fn statuses_map_results() {
        let mut f = facts();
        assert_eq!(status_body(&f, "buildbot/{builder}")["state"], "failure");
        assert_eq!(status_body(&f, "buildbot/{builder}")["context"], "buildbot/AMD64 Fedora 3.x");
        f.results = None;
        assert_eq!(status_body(&f, "x")["state"], "pending");
        f.results = Some("exception".into());
        assert_eq!(status_body(&f, "x")["state"], "error");
    }

    #[test]
    fn squash_merge_suffixes_name_the_pull_request() {
        assert_eq!(merged_pull_request("gh-1: Fix the thing (#1234)\n\nbody"), Some(1234));
        assert_eq!(merged_pull_request("Fix (GH-77)"), Some(77));
        assert_eq!(merged_pull_request("Fix the thing"), None);
        assert_eq!(merged_pull_request("Fix (#12) more"), None);
        assert_eq!(merged_pull_request("Fix (#)"), None);
        assert_eq!(merged_pull_request("Fix (#99999999999999999999)"), None);
    }

    #[test]
    fn the_comment_lists_failures_and_folds_tracebacks() {
        let body = comment_body(&facts(), Some("https://devguide.python.org/testing/buildbots/"));
        assert!(body.contains("(tier-1)") && body.contains("- test_os") && body.contains("<details>"));
        assert!(!body.contains("```x```"), "tracebacks cannot close the code block");
    }
}
