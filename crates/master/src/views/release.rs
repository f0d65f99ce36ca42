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
    /// The result of its newest finished build, if it has one.
    pub outcome: Option<Results>,
    pub offline: bool,
}

/// Tiers up to this one block a release when failing; those below are a concern.
const BLOCKING_TIER: u8 = 2;

/// The verdict and every reason for it: what blocks first, then each
/// concern (offline builders too when a branch is already blocked, so the
/// release manager sees everything that needs a look at once).
pub fn verdict(builders: &[Standing]) -> Verdict {
    let (mut blocking, mut concerns) = (Vec::new(), Vec::new());
    let mut offline: Vec<&str> = Vec::new();
    for b in builders {
        let blocks = b.tier <= BLOCKING_TIER;
        let weight = if blocks { "" } else { " (below tier 2: a concern, not a block)" };
        let reason = match b.outcome {
            Some(Results::Failure) => Some(format!("{} is failing{weight}", b.name)),
            Some(Results::Exception) => Some(format!(
                "{}'s newest build ended in an exception, which weighs as a failure{weight}; \
                 rebuild it if the worker, not the code, was at fault",
                b.name
            )),
            None => {
                concerns.push(format!("{} has no finished build", b.name));
                None
            }
            // Not a verdict on the code: the builder's last word is missing.
            Some(r @ (Results::Retry | Results::Cancelled | Results::Skipped)) => {
                let how = match r {
                    Results::Retry => "retried",
                    Results::Cancelled => "cancelled",
                    _ => "skipped",
                };
                concerns.push(format!("{}'s newest build was {how} (no result on the code)", b.name));
                None
            }
            Some(_) => None,
        };
        if let Some(r) = reason {
            if blocks { blocking.push(r) } else { concerns.push(r) }
        }
        if b.offline {
            offline.push(&b.name);
        }
    }
    match offline.as_slice() {
        [] => {}
        [one] => concerns.push(format!("{one} has no worker online")),
        many => concerns.push(format!("{} builders have no worker online: {}", many.len(), many.join(", "))),
    }
    match (blocking.is_empty(), concerns.is_empty()) {
        (false, _) => Verdict::Blocked(blocking.into_iter().chain(concerns).collect()),
        (true, false) => Verdict::Concern(concerns),
        (true, true) => Verdict::Releasable,
    }
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
    /// The revision its newest finished build built, shortened.
    pub revision: Option<String>,
    /// When that build finished: UTC, and how long ago.
    pub finished: Option<(String, String)>,
    /// The build where the failing streak began, and its blamelist.
    pub breaking: Option<(i64, String)>,
    pub blamelist: Vec<Blamed>,
    /// Whether other builders failing the same tests narrowed the blamelist.
    pub narrowed: bool,
}

/// One change of a breaking build's blamelist.
pub struct Blamed {
    pub change_id: i64,
    pub revision: String,
    pub author: String,
    /// The commit's first line.
    pub title: String,
    /// The commit on its forge (`http(s)` only).
    pub link: Option<String>,
    pub likely: bool,
}

/// What the page knows of the builders it reports on.
pub struct Facts<'a> {
    /// Each builder's newest finished build.
    pub latest: &'a HashMap<i64, BuildRecord>,
    pub presence: &'a Presence,
    pub blame: &'a Blame,
    /// The revision each of those builds built, by build id.
    pub revisions: &'a HashMap<i64, String>,
    pub now: i64,
}

pub struct BranchReport {
    pub name: String,
    pub verdict_class: &'static str,
    pub verdict_word: &'static str,
    pub reasons: Vec<String>,
    pub entries: Vec<Entry>,
    /// What the verdict stands on: how many builders have a finished build,
    /// and when the oldest and newest of those finished (UTC).
    pub based_on: Option<(usize, String, String)>,
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
fn entry(b: &BuilderConfig, id: i64, facts: &Facts<'_>) -> Entry {
    let build = facts.latest.get(&id);
    let blame = facts.blame.get(&id);
    Entry {
        id,
        name: b.name.clone(),
        tier: super::tier(b),
        look: build.map_or(NOTHING, |b| look(b.results, true)),
        number: build.map(|b| b.number),
        href: build.map(|b| build_href(id, b.number)),
        offline: !facts.presence.serves(b),
        failing: failing(build),
        revision: build.and_then(|b| facts.revisions.get(&b.buildid)).map(|r| r.chars().take(10).collect()),
        finished: build.and_then(|b| b.complete_at).map(|t| (super::when(t), super::ago(facts.now, t))),
        breaking: blame.map(|(breaking, ..)| (breaking.number, build_href(id, breaking.number))),
        blamelist: blame
            .map(|(_, changes, suspicion)| {
                changes
                    .iter()
                    .map(|c| Blamed {
                        change_id: c.changeid,
                        revision: c.revision.clone().unwrap_or_default().chars().take(10).collect(),
                        author: c.author.split(" <").next().unwrap_or(&c.author).to_string(),
                        title: c.comments.lines().next().unwrap_or("").to_string(),
                        link: super::revlink(c),
                        likely: suspicion.likely == Some(c.changeid),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        narrowed: blame.is_some_and(|(.., s)| s.narrowed),
    }
}

/// What the page says of one branch: its stable builders, failing first
/// (then by tier and name), and the verdict. `None` if it has none.
pub fn branch_report(branch: &str, builders: &[(&BuilderConfig, i64)], facts: &Facts<'_>) -> Option<BranchReport> {
    let mine: Vec<&(&BuilderConfig, i64)> =
        builders.iter().filter(|(b, _)| b.branch.as_deref() == Some(branch)).collect();
    let mut entries: Vec<Entry> = mine.iter().map(|(b, id)| entry(b, *id, facts)).collect();
    if entries.is_empty() {
        return None;
    }
    let standings: Vec<Standing> = mine
        .iter()
        .zip(&entries)
        .map(|((_, id), e)| Standing {
            name: e.name.clone(),
            tier: e.tier,
            outcome: facts.latest.get(id).and_then(|b| Results::of(b.results)),
            offline: e.offline,
        })
        .collect();
    let times: Vec<i64> = mine.iter().filter_map(|(_, id)| facts.latest.get(id)?.complete_at).collect();
    let based_on = match (times.iter().min(), times.iter().max()) {
        (Some(first), Some(last)) => Some((times.len(), super::when(*first), super::when(*last))),
        _ => None,
    };
    entries.sort_by(|a, b| b.failing.cmp(&a.failing).then(a.tier.cmp(&b.tier)).then(a.name.cmp(&b.name)));
    let (class, word, reasons) = match verdict(&standings) {
        Verdict::Releasable => ("releasable", "releasable", Vec::new()),
        Verdict::Concern(r) => ("concern", "concern", r),
        Verdict::Blocked(r) => ("blocked", "blocked", r),
    };
    Some(BranchReport {
        name: branch.to_string(),
        verdict_class: class,
        verdict_word: word,
        reasons,
        entries,
        based_on,
    })
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
    let build_ids: Vec<i64> = latest.values().map(|b| b.buildid).collect();
    let (blame, revisions) = tokio::try_join!(load_blame(&m.store, &failing_ids), m.store.built_revisions(&build_ids))?;
    let facts =
        Facts { latest: &latest, presence: &presence, blame: &blame, revisions: &revisions, now: m.clock.now() };
    let reports = m
        .catalog
        .config
        .branches
        .iter()
        .filter(|b| filter.branches.is_empty() || filter.branches.contains(&b.name))
        .filter_map(|b| branch_report(&b.name, &builders, &facts))
        .collect();
    let newest = builders.iter().filter_map(|(_, id)| latest.get(id).and_then(|b| b.complete_at)).max();
    let chrome = Chrome::new(&m, &headers, "release", filter).await;
    render(&headers, &ReleasePage { chrome, reports }, newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(name: &str, tier: u8, failing: bool, offline: bool) -> Standing {
        let outcome = Some(if failing { Results::Failure } else { Results::Success });
        Standing { name: name.into(), tier, outcome, offline }
    }

    #[test]
    fn tier_one_and_two_failures_block_a_release_the_rest_is_a_concern() {
        assert_eq!(verdict(&[s("a", 1, false, false), s("b", 3, false, false)]), Verdict::Releasable);
        assert_eq!(
            verdict(&[s("a", 1, false, false), s("b", 3, true, false)]),
            Verdict::Concern(vec!["b is failing (below tier 2: a concern, not a block)".into()])
        );
        assert_eq!(verdict(&[s("a", 2, false, true)]), Verdict::Concern(vec!["a has no worker online".into()]));
        let mut fresh = s("d", 1, false, false);
        fresh.outcome = None;
        assert_eq!(verdict(&[fresh]), Verdict::Concern(vec!["d has no finished build".into()]));
    }

    #[test]
    fn a_cancelled_or_retried_newest_build_is_a_concern() {
        let mut stopped = s("a", 1, false, false);
        stopped.outcome = Some(Results::Cancelled);
        assert_eq!(
            verdict(&[stopped]),
            Verdict::Concern(vec!["a's newest build was cancelled (no result on the code)".into()])
        );
    }

    #[test]
    fn a_blocked_verdict_lists_every_reason_blocks_first() {
        let mut broken = s("e", 2, false, false);
        broken.outcome = Some(Results::Exception);
        let v = verdict(&[s("a", 3, true, true), s("b", 1, true, false), broken, s("c", 1, false, true)]);
        let Verdict::Blocked(reasons) = v else { panic!("blocked: {v:?}") };
        assert_eq!(reasons[0], "b is failing");
        assert!(
            reasons[1].starts_with("e's newest build ended in an exception, which weighs as a failure;"),
            "{reasons:?}"
        );
        assert_eq!(
            reasons[2..],
            [
                "a is failing (below tier 2: a concern, not a block)".to_string(),
                "2 builders have no worker online: a, c".to_string()
            ],
            "offline builders are named even when the branch is blocked"
        );
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
            comments: "Fix the frobnicator\n\nLonger text.".into(),
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
        let revisions = HashMap::from([(10, "feedfacecafe0123".to_string())]);
        let facts = Facts { latest: &latest, presence: &presence, blame: &blame, revisions: &revisions, now: 260 };
        let report = branch_report("3.x", &builders, &facts).expect("a report");
        let names: Vec<&str> = report.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, vec!["Windows 3.x", "AIX 3.x", "Fedora 3.x"], "failing first, by tier");
        assert_eq!(report.verdict_class, "blocked", "a tier-2 exception blocks");
        assert!(
            report.reasons[0].starts_with("Windows 3.x's newest build ended in an exception"),
            "{:?}",
            report.reasons
        );
        assert!(report.reasons.contains(&"AIX 3.x has no worker online".to_string()), "{:?}", report.reasons);
        assert_eq!(report.based_on, Some((3, "1970-01-01 00:03:20".to_string(), "1970-01-01 00:03:20".to_string())));
        let windows = &report.entries[0];
        assert_eq!(windows.breaking, Some((8, "/builders/3/builds/8".to_string())));
        assert_eq!(windows.blamelist[0].revision, "0123456789", "revisions shortened");
        assert_eq!(
            (windows.blamelist[0].author.as_str(), windows.blamelist[0].title.as_str()),
            ("Eve", "Fix the frobnicator")
        );
        assert_eq!(windows.blamelist[0].change_id, 30);
        assert!(report.entries[1].offline && report.entries[1].breaking.is_none(), "AIX's worker is away");
        assert_eq!(report.entries[2].look.word, "success");
        assert_eq!(report.entries[2].revision.as_deref(), Some("feedfaceca"), "what the verdict applies to");
        assert_eq!(report.entries[2].finished, Some(("1970-01-01 00:03:20".to_string(), "1m ago".to_string())));
        let none = HashMap::new();
        let bare = Facts { latest: &none, presence: &presence, blame: &Blame::new(), revisions: &revisions, now: 0 };
        let fresh = branch_report("3.14", &builders, &bare).expect("3.14");
        assert_eq!((fresh.verdict_class, fresh.entries[0].number), ("concern", None), "no result yet");
        assert!(branch_report("3.13", &builders, &facts).is_none());
    }
}
