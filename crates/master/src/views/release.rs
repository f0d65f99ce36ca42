//! `/release`: per branch, the `stable` builders by tier with their latest
//! finished result; failing ones first, each with the build where its
//! failing streak began and that build's blamelist; builders whose workers
//! are all offline; and a verdict.

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use cascade_store::ListQuery;

use super::{Chrome, Filter, Look, NOTHING, build_href, look, render, store_error};
use crate::app::Master;

/// What a release manager is told about a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Releasable,
    /// Worth a look, not blocking: a tier-3 failure, an offline worker, a builder with no result.
    Concern(Vec<String>),
    /// A stable tier-1 or tier-2 builder is failing.
    Blocked(Vec<String>),
}

/// One stable builder as the verdict sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub name: String,
    pub tier: u8,
    pub failing: bool,
    pub offline: bool,
    pub has_result: bool,
}

pub fn verdict(builders: &[Standing]) -> Verdict {
    let blocking: Vec<String> =
        builders.iter().filter(|b| b.failing && b.tier <= 2).map(|b| format!("{} is failing", b.name)).collect();
    if !blocking.is_empty() {
        return Verdict::Blocked(blocking);
    }
    let mut concerns: Vec<String> = Vec::new();
    for b in builders {
        if b.failing {
            concerns.push(format!("{} is failing", b.name));
        } else if !b.has_result {
            concerns.push(format!("{} has no finished build", b.name));
        }
        if b.offline {
            concerns.push(format!("{} has no worker online", b.name));
        }
    }
    if concerns.is_empty() { Verdict::Releasable } else { Verdict::Concern(concerns) }
}

pub struct Entry {
    pub id: i64,
    pub name: String,
    pub tier: u8,
    pub look: Look,
    pub number: Option<i64>,
    pub href: Option<String>,
    pub offline: bool,
    pub failing: bool,
    /// The build where the failing streak began, and its blamelist.
    pub breaking: Option<(i64, String)>,
    pub blamelist: Vec<(String, String, Option<String>)>,
}

pub struct BranchReport {
    pub name: String,
    pub verdict_class: &'static str,
    pub verdict_word: &'static str,
    pub reasons: Vec<String>,
    pub entries: Vec<Entry>,
}

#[derive(Template)]
#[template(path = "release.html")]
pub struct ReleasePage {
    pub chrome: Chrome,
    pub reports: Vec<BranchReport>,
}

pub async fn page(State(m): State<Arc<Master>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let mut filter = Filter::parse(q.as_deref());
    if !filter.tags.iter().any(|t| t == "stable") {
        filter.tags.push("stable".into());
    }
    let builders = super::builders(&m, &filter);
    let ids: Vec<i64> = builders.iter().map(|(_, id)| *id).collect();
    let (latest, presence) = match super::standing(&m, &ids, true).await {
        Ok(x) => x,
        Err(e) => return store_error(e),
    };
    let mut reports = Vec::new();
    let branches: Vec<String> = m
        .config
        .branches
        .iter()
        .map(|b| b.name.clone())
        .filter(|b| filter.branches.is_empty() || filter.branches.contains(b))
        .collect();
    let mut newest: Option<i64> = None;
    // Failing builders: where each streak began and who is on its blamelist.
    let failing: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| latest.get(id).is_some_and(|b| matches!(b.results, Some(2) | Some(4))))
        .collect();
    let blame = async {
        let breaking = m.store.breaking_builds(&failing).await?;
        let build_ids: Vec<i64> = breaking.iter().map(|b| b.buildid).collect();
        let pairs = m.store.blamelist_pairs(&build_ids).await?;
        let mut change_ids: Vec<i64> = pairs.iter().map(|(_, c)| *c).collect();
        change_ids.sort_unstable();
        change_ids.dedup();
        let mut changes = HashMap::new();
        for chunk in change_ids.chunks(500) {
            let q = ListQuery {
                filters: vec![cascade_store::Filter {
                    field: "changeid".into(),
                    op: cascade_store::Op::In,
                    values: chunk.iter().map(|c| c.to_string()).collect(),
                }],
                limit: Some(500),
                ..Default::default()
            };
            for c in m.store.list_changes(&q).await?.items {
                changes.insert(c.changeid, c);
            }
        }
        Ok::<_, cascade_store::StoreError>((breaking, pairs, changes))
    };
    let (breaking, pairs, changes) = match blame.await {
        Ok(x) => x,
        Err(e) => return store_error(e),
    };
    let mut breaking_by: HashMap<
        i64,
        (cascade_store::records::BuildRecord, Vec<cascade_store::records::ChangeRecord>),
    > = HashMap::new();
    for b in breaking {
        let blamed =
            pairs.iter().filter(|(bid, _)| *bid == b.buildid).filter_map(|(_, c)| changes.get(c).cloned()).collect();
        breaking_by.insert(b.builderid, (b, blamed));
    }
    for branch in branches {
        let mut entries = Vec::new();
        for (b, id) in builders.iter().filter(|(b, _)| b.branch.as_deref() == Some(branch.as_str())) {
            let build = latest.get(id);
            newest = newest.max(build.and_then(|b| b.complete_at));
            let failing = build.is_some_and(|b| matches!(b.results, Some(2) | Some(4)));
            let offline = !presence.serves(b);
            let mut entry = Entry {
                id: *id,
                name: b.name.clone(),
                tier: super::tier(b),
                look: build.map(|b| look(b.results, true)).unwrap_or(NOTHING),
                number: build.map(|b| b.number),
                href: build.map(|b| build_href(*id, b.number)),
                offline,
                failing,
                breaking: None,
                blamelist: Vec::new(),
            };
            if let Some((breaking, changes)) = breaking_by.remove(id) {
                entry.breaking = Some((breaking.number, build_href(*id, breaking.number)));
                entry.blamelist = changes
                    .into_iter()
                    .map(|c| {
                        let rev: String = c.revision.unwrap_or_default().chars().take(10).collect();
                        (rev, c.author, c.revlink)
                    })
                    .collect();
            }
            entries.push(entry);
        }
        if entries.is_empty() {
            continue;
        }
        let standings: Vec<Standing> = entries
            .iter()
            .map(|e| Standing {
                name: e.name.clone(),
                tier: e.tier,
                failing: e.failing,
                offline: e.offline,
                has_result: e.number.is_some(),
            })
            .collect();
        // Failing first, then by tier and name.
        entries.sort_by(|a, b| b.failing.cmp(&a.failing).then(a.tier.cmp(&b.tier)).then(a.name.cmp(&b.name)));
        let (class, word, reasons) = match verdict(&standings) {
            Verdict::Releasable => ("releasable", "releasable", Vec::new()),
            Verdict::Concern(r) => ("concern", "concern", r),
            Verdict::Blocked(r) => ("blocked", "blocked", r),
        };
        reports.push(BranchReport { name: branch, verdict_class: class, verdict_word: word, reasons, entries });
    }
    let chrome = Chrome::new(&m, &headers, "release", filter).await;
    render(&headers, &ReleasePage { chrome, reports }, newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, tier: u8, failing: bool, offline: bool) -> Standing {
        Standing { name: name.into(), tier, failing, offline, has_result: true }
    }

    #[test]
    fn tier_one_and_two_failures_block_a_release_the_rest_is_a_concern() {
        assert_eq!(verdict(&[s("a", 1, false, false), s("b", 3, false, false)]), Verdict::Releasable);
        assert_eq!(
            verdict(&[s("a", 1, false, false), s("b", 3, true, false)]),
            Verdict::Concern(vec!["b is failing".into()])
        );
        assert_eq!(verdict(&[s("a", 2, false, true)]), Verdict::Concern(vec!["a has no worker online".into()]));
        assert_eq!(
            verdict(&[s("a", 1, true, false), s("b", 2, true, false), s("c", 3, true, false)]),
            Verdict::Blocked(vec!["a is failing".into(), "b is failing".into()])
        );
        let mut fresh = s("d", 1, false, false);
        fresh.has_result = false;
        assert!(matches!(verdict(&[fresh]), Verdict::Concern(_)));
    }
}
