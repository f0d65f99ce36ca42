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
use cascade_config::BuilderConfig;
use cascade_model::Results;
use cascade_store::records::{BuildRecord, ChangeRecord};
use cascade_store::{ListQuery, Store, StoreError};

use super::{Chrome, Filter, Look, NOTHING, Pages, Presence, build_href, look, render};
use crate::error::HttpError;

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
    /// (revision, author, link, whether it is the likely cause).
    pub blamelist: Vec<(String, String, Option<String>, bool)>,
    /// Whether other builders failing the same tests narrowed the blamelist.
    pub narrowed: bool,
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

/// A failing builder's breaking build (where its streak began) and that
/// build's blamelist (narrowed to the suspects when other builders failing
/// the same tests allow), with the likely cause if one is left.
pub type Blame = HashMap<i64, (BuildRecord, Vec<ChangeRecord>, Suspicion)>;

/// What narrowing a blamelist came to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Suspicion {
    pub likely: Option<i64>,
    pub narrowed: bool,
}

fn failing(b: Option<&BuildRecord>) -> bool {
    b.and_then(|b| Results::of(b.results)).is_some_and(Results::is_failing)
}

/// One builder's line: its latest finished build, and if it fails, the blame.
fn entry(
    b: &BuilderConfig,
    id: i64,
    build: Option<&BuildRecord>,
    offline: bool,
    blame: Option<&(BuildRecord, Vec<ChangeRecord>, Suspicion)>,
) -> Entry {
    Entry {
        id,
        name: b.name.clone(),
        tier: super::tier(b),
        look: build.map_or(NOTHING, |b| look(b.results, true)),
        number: build.map(|b| b.number),
        href: build.map(|b| build_href(id, b.number)),
        offline,
        failing: failing(build),
        breaking: blame.map(|(breaking, ..)| (breaking.number, build_href(id, breaking.number))),
        blamelist: blame
            .map(|(_, changes, suspicion)| {
                changes
                    .iter()
                    .map(|c| {
                        let rev: String = c.revision.clone().unwrap_or_default().chars().take(10).collect();
                        (rev, c.author.clone(), super::revlink(c), suspicion.likely == Some(c.changeid))
                    })
                    .collect()
            })
            .unwrap_or_default(),
        narrowed: blame.is_some_and(|(.., s)| s.narrowed),
    }
}

/// What the page says of one branch: its stable builders, failing first
/// (then by tier and name), and the verdict. `None` if it has none.
pub fn branch_report(
    branch: &str,
    builders: &[(&BuilderConfig, i64)],
    latest: &HashMap<i64, BuildRecord>,
    presence: &Presence,
    blame: &Blame,
) -> Option<BranchReport> {
    let mut entries: Vec<Entry> = builders
        .iter()
        .filter(|(b, _)| b.branch.as_deref() == Some(branch))
        .map(|(b, id)| entry(b, *id, latest.get(id), !presence.serves(b), blame.get(id)))
        .collect();
    if entries.is_empty() {
        return None;
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
    entries.sort_by(|a, b| b.failing.cmp(&a.failing).then(a.tier.cmp(&b.tier)).then(a.name.cmp(&b.name)));
    let (class, word, reasons) = match verdict(&standings) {
        Verdict::Releasable => ("releasable", "releasable", Vec::new()),
        Verdict::Concern(r) => ("concern", "concern", r),
        Verdict::Blocked(r) => ("blocked", "blocked", r),
    };
    Some(BranchReport { name: branch.to_string(), verdict_class: class, verdict_word: word, reasons, entries })
}

/// The breaking build of each failing builder, with its blamelist.
async fn load_blame(store: &Store, failing: &[i64]) -> Result<Blame, StoreError> {
    let breaking = store.breaking_builds(failing).await?;
    let build_ids: Vec<i64> = breaking.iter().map(|b| b.buildid).collect();
    let pairs = store.blamelist_pairs(&build_ids).await?;
    let mut change_ids: Vec<i64> = pairs.iter().map(|(_, c)| *c).collect();
    change_ids.sort_unstable();
    change_ids.dedup();
    let mut changes = HashMap::new();
    for chunk in change_ids.chunks(500) {
        let q = ListQuery {
            filters: vec![cascade_store::Filter {
                field: "changeid".into(),
                op: cascade_store::Op::In,
                values: chunk.iter().map(ToString::to_string).collect(),
            }],
            limit: Some(500),
            ..Default::default()
        };
        for c in store.list_changes(&q).await?.items {
            changes.insert(c.changeid, c);
        }
    }
    let lists: HashMap<i64, Vec<i64>> = breaking
        .iter()
        .map(|b| (b.buildid, pairs.iter().filter(|(bid, _)| *bid == b.buildid).map(|(_, c)| *c).collect()))
        .collect();
    let narrowed = super::diagnosis::narrow(store, &lists).await?;
    Ok(breaking
        .into_iter()
        .map(|b| {
            let verdict = narrowed.get(&b.buildid);
            let blamed = verdict
                .map(|v| v.changes.as_slice())
                .unwrap_or_default()
                .iter()
                .filter_map(|c| changes.get(c).cloned())
                .collect();
            let suspicion = Suspicion {
                likely: verdict.and_then(|v| v.likely),
                narrowed: verdict.is_some_and(|v| v.narrowed_by > 0),
            };
            (b.builderid, (b, blamed, suspicion))
        })
        .collect())
}

/// `GET /release`.
pub async fn page(
    State(m): State<Arc<Pages>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, HttpError> {
    let mut filter = Filter::from_query(q.as_deref(), &m.catalog)?;
    if !filter.tags.iter().any(|t| t == "stable") {
        filter.tags.push("stable".into());
    }
    let builders = super::builders(&m.catalog, &filter);
    let ids: Vec<i64> = builders.iter().map(|(_, id)| *id).collect();
    let (latest, presence) = super::standing(&m.store, &ids, true).await?;
    let failing_ids: Vec<i64> = ids.iter().copied().filter(|id| failing(latest.get(id))).collect();
    let blame = load_blame(&m.store, &failing_ids).await?;
    let reports = m
        .catalog
        .config
        .branches
        .iter()
        .filter(|b| filter.branches.is_empty() || filter.branches.contains(&b.name))
        .filter_map(|b| branch_report(&b.name, &builders, &latest, &presence, &blame))
        .collect();
    let newest = builders.iter().filter_map(|(_, id)| latest.get(id).and_then(|b| b.complete_at)).max();
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

    fn builder(name: &str, branch: &str, tier: u8, worker: &str) -> BuilderConfig {
        BuilderConfig {
            name: format!("{name} {branch}"),
            definition: name.into(),
            branch: Some(branch.into()),
            workers: vec![worker.into()],
            factory: "f".into(),
            tags: vec!["stable".into(), format!("tier-{tier}")],
            description: None,
        }
    }

    fn build(id: i64, builder: i64, number: i64, results: i64) -> BuildRecord {
        BuildRecord {
            buildid: id,
            number,
            builderid: builder,
            buildrequestid: id,
            workerid: None,
            masterid: 1,
            started_at: 100,
            complete_at: Some(200),
            complete: true,
            locks_duration_s: 0,
            state_string: String::new(),
            results: Some(results),
        }
    }

    fn change(id: i64, revision: &str, author: &str) -> ChangeRecord {
        ChangeRecord {
            changeid: id,
            author: author.into(),
            committer: None,
            comments: String::new(),
            branch: Some("main".into()),
            revision: Some(revision.into()),
            revlink: Some(format!("https://github.com/python/cpython/commit/{revision}")),
            when_timestamp: 0,
            category: None,
            repository: String::new(),
            codebase: String::new(),
            project: String::new(),
            files: vec![],
            properties: Default::default(),
            parent_changeids: vec![],
            sourcestamp: cascade_store::records::SourceStampRecord {
                ssid: 1,
                branch: None,
                revision: None,
                project: String::new(),
                repository: String::new(),
                codebase: String::new(),
                created_at: 0,
                patch: None,
            },
        }
    }

    #[test]
    fn a_branch_report_puts_the_failing_first_with_who_broke_them() {
        let (fedora, aix, win) =
            (builder("Fedora", "3.x", 1, "w1"), builder("AIX", "3.x", 3, "w2"), builder("Windows", "3.x", 2, "w3"));
        let other = builder("Fedora", "3.14", 1, "w1");
        let builders = vec![(&fedora, 1), (&aix, 2), (&win, 3), (&other, 4)];
        let latest = HashMap::from([(1, build(10, 1, 5, 0)), (2, build(11, 2, 7, 2)), (3, build(12, 3, 9, 4))]);
        let presence = Presence(std::collections::BTreeSet::from(["w1".to_string(), "w3".to_string()]));
        let blame: Blame = HashMap::from([(
            3,
            (build(8, 3, 8, 4), vec![change(30, "0123456789abcdef", "Eve")], Suspicion::default()),
        )]);
        let report = branch_report("3.x", &builders, &latest, &presence, &blame).expect("a report");
        let names: Vec<&str> = report.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["Windows 3.x", "AIX 3.x", "Fedora 3.x"], "failing first, by tier");
        assert_eq!(report.verdict_class, "blocked", "a tier-2 exception blocks");
        assert_eq!(report.reasons, vec!["Windows 3.x is failing".to_string()]);
        let windows = &report.entries[0];
        assert_eq!(windows.breaking, Some((8, "/builders/3/builds/8".to_string())));
        assert_eq!(windows.blamelist[0].0, "0123456789", "revisions shortened");
        assert_eq!(windows.blamelist[0].1, "Eve");
        assert!(report.entries[1].offline && report.entries[1].breaking.is_none(), "AIX's worker is away");
        assert_eq!(report.entries[2].look.word, "success");
        let fresh = branch_report("3.14", &builders, &HashMap::new(), &presence, &Blame::new()).expect("3.14");
        assert_eq!((fresh.verdict_class, fresh.entries[0].number), ("concern", None), "no result yet");
        assert!(branch_report("3.13", &builders, &latest, &presence, &blame).is_none());
    }
}
