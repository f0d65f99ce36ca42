//! Coalescing: when a builder takes a request, it takes every compatible
//! pending request for the same builder and branch with it, so rapid pushes
//! become one build whose blamelist is all of their changes.

/// A build request waiting for a worker, reduced to what merging looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRequest {
    /// The request's `buildrequestid`; lower is older.
    pub id: i64,
    /// The builder the request waits for.
    pub builder_id: i64,
    /// The source stamp's repository; requests merge only within one.
    pub repository: String,
    /// The source stamp's branch; requests merge only within one.
    pub branch: Option<String>,
    /// A revision asked for explicitly with no changes behind it (a build
    /// forced at a commit). Such a request builds exactly that commit, so it
    /// merges only with requests pinned to the same commit.
    pub pinned_revision: Option<String>,
    /// Higher runs first.
    pub priority: i64,
    /// A `try` job's request: it builds its own diff, so it merges with nothing.
    pub patched: bool,
}

impl PendingRequest {
    fn compatible(&self, other: &PendingRequest) -> bool {
        !self.patched
            && !other.patched
            && self.builder_id == other.builder_id
            && self.repository == other.repository
            && self.branch == other.branch
            && self.pinned_revision == other.pinned_revision
    }
}

/// What one build will cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The request the builder took (its build's `buildrequestid`).
    pub taken: i64,
    /// Every other request merged into that build, ascending.
    pub merged: Vec<i64>,
    /// The newest covered request: its source stamp is what the build runs.
    pub source: i64,
}

impl Claim {
    /// All covered request ids, ascending.
    pub fn all(&self) -> Vec<i64> {
        let mut all = self.merged.clone();
        all.push(self.taken);
        all.sort_unstable();
        all
    }
}

/// Chooses the request `builder_id` takes next (highest priority, then
/// oldest) and every pending request that merges into it.
pub fn plan_claim(pending: &[PendingRequest], builder_id: i64) -> Option<Claim> {
    let taken = pending.iter().filter(|r| r.builder_id == builder_id).min_by_key(|r| (-r.priority, r.id))?;
    let mut merged: Vec<i64> =
        pending.iter().filter(|r| r.id != taken.id && taken.compatible(r)).map(|r| r.id).collect();
    merged.sort_unstable();
    let source = merged.last().copied().unwrap_or(taken.id).max(taken.id);
    Some(Claim { taken: taken.id, merged, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn req(id: i64, builder_id: i64, branch: &str) -> PendingRequest {
        PendingRequest {
            id,
            builder_id,
            repository: "https://github.com/python/cpython".into(),
            branch: Some(branch.into()),
            pinned_revision: None,
            priority: 0,
            patched: false,
        }
    }

    #[test]
    fn merges_same_builder_and_branch_only() {
        let pending =
            vec![req(1, 10, "main"), req(2, 11, "main"), req(3, 10, "3.14"), req(4, 10, "main"), req(5, 10, "main")];
        let claim = plan_claim(&pending, 10).expect("a claim");
        assert_eq!(claim.taken, 1);
        assert_eq!(claim.merged, vec![4, 5]);
        assert_eq!(claim.source, 5);
        assert_eq!(claim.all(), vec![1, 4, 5]);
        assert_eq!(plan_claim(&pending, 99), None);
    }

    #[test]
    fn priority_then_age_chooses_the_taken_request() {
        let mut urgent = req(7, 10, "3.14");
        urgent.priority = 5;
        let pending = vec![req(1, 10, "main"), urgent];
        let claim = plan_claim(&pending, 10).expect("a claim");
        assert_eq!(claim.taken, 7);
        assert!(claim.merged.is_empty());
    }

    #[test]
    fn pinned_revisions_merge_only_with_their_own_revision() {
        let mut pinned = req(2, 10, "main");
        pinned.pinned_revision = Some("abc".into());
        let mut same_pin = req(3, 10, "main");
        same_pin.pinned_revision = Some("abc".into());
        let pending = vec![req(1, 10, "main"), pinned, same_pin, req(4, 10, "main")];
        let first = plan_claim(&pending, 10).expect("a claim");
        assert_eq!(first.all(), vec![1, 4]);
        let rest: Vec<_> = pending.into_iter().filter(|r| !first.all().contains(&r.id)).collect();
        let second = plan_claim(&rest, 10).expect("a claim");
        assert_eq!(second.all(), vec![2, 3]);
    }

    #[test]
    fn a_try_request_builds_alone() {
        let patched = |id| PendingRequest { patched: true, ..req(id, 10, "main") };
        let pending = vec![patched(1), req(2, 10, "main"), patched(3), req(4, 10, "main")];
        let first = plan_claim(&pending, 10).expect("a claim");
        assert_eq!(first.all(), vec![1], "the oldest, a try job, builds its diff alone");
        let rest: Vec<_> = pending.into_iter().filter(|r| r.id != 1).collect();
        assert_eq!(plan_claim(&rest, 10).expect("a claim").all(), vec![2, 4], "plain pushes merge past a try job");
    }

    /// A tiny deterministic generator so property runs are reproducible by seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Any interleaving of pushes, forced builds and workers taking requests:
    /// each build covers requests of one builder and branch, leaves none of
    /// its kind pending, runs the newest; once drained, every change is
    /// covered exactly once on every builder of its branch.
    #[test]
    fn any_interleaving_gives_one_build_per_builder_and_branch() {
        let branches = ["main", "3.14", "3.13"];
        // builder id -> branch it builds (builders are per branch, as configured)
        let builders: Vec<(i64, &str)> =
            vec![(1, "main"), (2, "main"), (3, "main"), (4, "3.14"), (5, "3.14"), (6, "3.13")];
        for seed in 1..=400u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut pending: Vec<PendingRequest> = Vec::new();
            let mut next_request = 1i64;
            let mut next_change = 1i64;
            // request id -> changes it carries
            let mut request_changes: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            // (builder, change) -> number of builds covering it
            let mut covered: BTreeMap<(i64, i64), u32> = BTreeMap::new();
            let mut expected: BTreeSet<(i64, i64)> = BTreeSet::new();
            let mut covered_requests: BTreeSet<i64> = BTreeSet::new();
            let steps = 20 + rng.below(60);
            let mut step = 0;
            loop {
                let draining = step >= steps;
                if draining && pending.is_empty() {
                    break;
                }
                step += 1;
                let action = if draining { 9 } else { rng.below(10) };
                if action < 5 {
                    // a push: one change, one request per builder of its branch
                    let branch = branches[rng.below(3) as usize];
                    let change = next_change;
                    next_change += 1;
                    for &(b, _) in builders.iter().filter(|(_, br)| *br == branch) {
                        let mut r = req(next_request, b, branch);
                        r.priority = 0;
                        request_changes.insert(next_request, vec![change]);
                        expected.insert((b, change));
                        pending.push(r);
                        next_request += 1;
                    }
                } else if action == 5 {
                    // a build forced at a fixed revision on one builder
                    let (b, branch) = builders[rng.below(builders.len() as u64) as usize];
                    let mut r = req(next_request, b, branch);
                    r.pinned_revision = Some(format!("rev{}", rng.below(2)));
                    request_changes.insert(next_request, vec![]);
                    pending.push(r);
                    next_request += 1;
                } else {
                    let builder = if draining {
                        pending[0].builder_id
                    } else {
                        builders[rng.below(builders.len() as u64) as usize].0
                    };
                    let Some(claim) = plan_claim(&pending, builder) else { continue };
                    let all = claim.all();
                    let claimed: Vec<PendingRequest> =
                        pending.iter().filter(|r| all.contains(&r.id)).cloned().collect();
                    assert_eq!(claimed.len(), all.len(), "seed {seed}: claim names unknown requests");
                    let first = &claimed[0];
                    for r in &claimed {
                        assert_eq!(r.builder_id, builder, "seed {seed}");
                        assert_eq!(r.branch, first.branch, "seed {seed}");
                        assert_eq!(r.pinned_revision, first.pinned_revision, "seed {seed}");
                    }
                    assert_eq!(claim.source, *all.iter().max().expect("non-empty"), "seed {seed}");
                    pending.retain(|r| !all.contains(&r.id));
                    assert!(
                        !pending.iter().any(|r| r.builder_id == builder
                            && r.branch == first.branch
                            && r.pinned_revision == first.pinned_revision),
                        "seed {seed}: a mergeable request was left behind"
                    );
                    for id in all {
                        assert!(covered_requests.insert(id), "seed {seed}: request {id} covered twice");
                        for &c in &request_changes[&id] {
                            *covered.entry((builder, c)).or_default() += 1;
                        }
                    }
                }
            }
            let covered_keys: BTreeSet<(i64, i64)> = covered.keys().copied().collect();
            assert_eq!(covered_keys, expected, "seed {seed}: some change was left uncovered");
            assert!(covered.values().all(|&n| n == 1), "seed {seed}: a change was built twice");
        }
    }
}
