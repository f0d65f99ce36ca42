//! Buildbot's routing keys, pure: which objects a Cascade event announces
//! and under which keys (`builds/7/new`, `builders/2/builds/3/finished`,
//! ...), as Buildbot's data layer makes them (each resource's
//! `eventPathPatterns`, filled from the message, then the event), and
//! whether a subscription path (`*` for any one segment) takes a key.

use cascade_model::Event;
use serde_json::Value;

/// Longest subscription path accepted, in bytes and in segments.
pub const MAX_PATH_BYTES: usize = 256;
const MAX_PATH_SEGMENTS: usize = 16;

/// A resource type of the Data API that has events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Build,
    Step,
    Log,
    BuildRequest,
    Buildset,
    Change,
    Worker,
    Master,
}

impl Resource {
    /// Buildbot's `eventPathPatterns` of the resource; `{field}` is filled from the message.
    pub fn patterns(self) -> &'static [&'static str] {
        match self {
            Resource::Build => {
                &["builders/{builderid}/builds/{number}", "builds/{buildid}", "workers/{workerid}/builds/{buildid}"]
            }
            Resource::Step => &["builds/{buildid}/steps/{stepid}", "steps/{stepid}"],
            Resource::Log => &["logs/{logid}", "steps/{stepid}/logs/{slug}"],
            Resource::BuildRequest => &[
                "buildsets/{buildsetid}/builders/{builderid}/buildrequests/{buildrequestid}",
                "buildrequests/{buildrequestid}",
                "builders/{builderid}/buildrequests/{buildrequestid}",
            ],
            Resource::Buildset => &["buildsets/{bsid}"],
            Resource::Change => &["changes/{changeid}"],
            Resource::Worker => &["workers/{workerid}"],
            Resource::Master => &["masters/{masterid}"],
        }
    }
}

/// What to read to announce an event: an object by id, or several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    Build(i64),
    Step(i64),
    Log(i64),
    /// Every log of a step.
    LogsOfStep(i64),
    BuildRequest(i64),
    /// The request a build was started for.
    RequestOfBuild(i64),
    Buildset(i64),
    /// The changes a buildset builds.
    ChangesOfBuildset(i64),
    Worker(i64),
    Master(i64),
}

impl Fetch {
    /// The resource the fetched objects are.
    pub fn resource(self) -> Resource {
        match self {
            Fetch::Build(_) => Resource::Build,
            Fetch::Step(_) => Resource::Step,
            Fetch::Log(_) | Fetch::LogsOfStep(_) => Resource::Log,
            Fetch::BuildRequest(_) | Fetch::RequestOfBuild(_) => Resource::BuildRequest,
            Fetch::Buildset(_) => Resource::Buildset,
            Fetch::ChangesOfBuildset(_) => Resource::Change,
            Fetch::Worker(_) => Resource::Worker,
            Fetch::Master(_) => Resource::Master,
        }
    }
}

/// One announcement: the objects `fetch` reads, under `event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    pub fetch: Fetch,
    pub event: &'static str,
}

fn announce(fetch: Fetch, event: &'static str) -> Announce {
    Announce { fetch, event }
}

/// What Buildbot would announce for `event`, in its order. Cascade records
/// no event when a change arrives, so a change is announced (`new`) when a
/// buildset is made for it.
pub fn plan(event: &Event) -> Vec<Announce> {
    match event {
        Event::BuildRequested { buildset_id, request_ids, .. } => {
            [announce(Fetch::ChangesOfBuildset(*buildset_id), "new")]
                .into_iter()
                .chain(request_ids.iter().map(|r| announce(Fetch::BuildRequest(*r), "new")))
                .chain([announce(Fetch::Buildset(*buildset_id), "new")])
                .collect()
        }
        Event::BuildRequestsCancelled { request_ids, .. } => {
            request_ids.iter().map(|r| announce(Fetch::BuildRequest(*r), "complete")).collect()
        }
        Event::BuildStarted { build_id, .. } => {
            vec![announce(Fetch::RequestOfBuild(*build_id), "claimed"), announce(Fetch::Build(*build_id), "new")]
        }
        Event::StepStarted { build_id, step_id, .. } => vec![
            announce(Fetch::Step(*step_id), "new"),
            announce(Fetch::Step(*step_id), "started"),
            announce(Fetch::LogsOfStep(*step_id), "new"),
            announce(Fetch::Build(*build_id), "update"),
        ],
        Event::StepFinished { build_id, step_id, .. } => vec![
            announce(Fetch::LogsOfStep(*step_id), "finished"),
            announce(Fetch::Step(*step_id), "finished"),
            announce(Fetch::Build(*build_id), "update"),
        ],
        Event::BuildFinished { build_id, .. } => {
            vec![announce(Fetch::Build(*build_id), "finished"), announce(Fetch::RequestOfBuild(*build_id), "complete")]
        }
        Event::WorkerConnected { worker_id, .. } => vec![announce(Fetch::Worker(*worker_id), "connected")],
        Event::WorkerLost { worker_id, .. } => vec![announce(Fetch::Worker(*worker_id), "disconnected")],
        Event::MasterStarted { master_id, .. } => vec![announce(Fetch::Master(*master_id), "started")],
        Event::MasterStopped { master_id } => vec![announce(Fetch::Master(*master_id), "stopped")],
        Event::LogLines { log_id, .. } => vec![announce(Fetch::Log(*log_id), "append")],
    }
}

/// A field of a message as a key segment; a missing or null field makes no key.
fn segment(body: &Value, field: &str) -> Option<String> {
    match body.get(field)? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) if !s.is_empty() && !s.contains('/') => Some(s.clone()),
        _ => None,
    }
}

/// The routing keys of `body`, a `resource`, under `event`.
pub fn keys(resource: Resource, body: &Value, event: &str) -> Vec<String> {
    let fill = |pattern: &str| -> Option<String> {
        let mut parts = Vec::new();
        for part in pattern.split('/') {
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(field) => parts.push(segment(body, field)?),
                None => parts.push(part.to_string()),
            }
        }
        parts.push(event.to_string());
        Some(parts.join("/"))
    };
    resource.patterns().iter().filter_map(|p| fill(p)).collect()
}

/// Whether subscription `path` takes routing key `key`: as many segments,
/// each `*` or equal (Buildbot's `tuplematch`).
pub fn matches(path: &str, key: &str) -> bool {
    let (mut p, mut k) = (path.split('/'), key.split('/'));
    loop {
        match (p.next(), k.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == "*" || a == b => {}
            _ => return false,
        }
    }
}

/// Whether `path` could take some key of `resource` under `event`, before
/// the object is read: a pattern's fields match anything.
pub fn may_match(path: &str, resource: Resource, event: &str) -> bool {
    resource.patterns().iter().any(|pattern| {
        let key = pattern.split('/').chain([event]);
        let mut p = path.split('/');
        for want in key {
            match p.next() {
                Some(got) if got == "*" || got == want || want.starts_with('{') => {}
                _ => return false,
            }
        }
        p.next().is_none()
    })
}

/// A path Cascade accepts: not empty, not too long, no empty segment.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_BYTES
        && path.split('/').count() <= MAX_PATH_SEGMENTS
        && path.split('/').all(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use cascade_model::Results;
    use serde_json::json;

    use super::*;

    #[test]
    fn a_star_takes_any_one_segment_and_lengths_must_agree() {
        assert!(matches("builds/*/*", "builds/7/new"));
        assert!(matches("builders/2/builds/*/*", "builders/2/builds/3/finished"));
        assert!(!matches("builders/2/builds/*/*", "builders/20/builds/3/finished"));
        assert!(!matches("builds/*/*", "builds/7/steps/9/new"));
        assert!(!matches("builds/*/*/*", "builds/7/new"));
        assert!(matches("builds/7/*", "builds/7/update"));
        assert!(!matches("builds/7/new", "builds/7/finished"));
        assert!(matches("*", "x") && !matches("*", "x/y"));
    }

    #[test]
    fn a_builds_keys_are_buildbots_three() {
        let build = json!({ "buildid": 7, "builderid": 2, "number": 3, "workerid": 5 });
        assert_eq!(
            keys(Resource::Build, &build, "new"),
            ["builders/2/builds/3/new", "builds/7/new", "workers/5/builds/7/new"]
        );
        let unassigned = json!({ "buildid": 7, "builderid": 2, "number": 3, "workerid": null });
        assert_eq!(
            keys(Resource::Build, &unassigned, "finished"),
            ["builders/2/builds/3/finished", "builds/7/finished"]
        );
    }

    #[test]
    fn a_logs_keys_use_its_step_and_slug() {
        let log = json!({ "logid": 4, "stepid": 9, "slug": "stdio", "name": "stdio" });
        assert_eq!(keys(Resource::Log, &log, "append"), ["logs/4/append", "steps/9/logs/stdio/append"]);
        let odd = json!({ "logid": 4, "stepid": 9, "slug": "a/b" });
        assert_eq!(keys(Resource::Log, &odd, "new"), ["logs/4/new"], "a slash in a slug makes no key");
    }

    #[test]
    fn may_match_is_true_exactly_when_some_key_could_match() {
        assert!(may_match("builds/*/*", Resource::Build, "new"));
        assert!(may_match("builders/2/builds/*/*", Resource::Build, "finished"));
        assert!(may_match("builds/7/*", Resource::Build, "update"));
        assert!(!may_match("builds/*/new", Resource::Build, "finished"));
        assert!(!may_match("builds/*/*", Resource::Step, "new"), "a step's keys are one longer");
        assert!(may_match("builds/7/steps/*/*", Resource::Step, "started"));
        assert!(may_match("steps/9/logs/*/*", Resource::Log, "append"));
        assert!(!may_match("changes/*/*", Resource::Build, "new"));
    }

    #[test]
    fn events_announce_what_buildbot_would() {
        let started = Event::BuildStarted { build_id: 7, builder_id: 2, number: 3, worker_id: None, master_id: 1 };
        assert_eq!(plan(&started), [announce(Fetch::RequestOfBuild(7), "claimed"), announce(Fetch::Build(7), "new")]);
        let finished = Event::BuildFinished { build_id: 7, builder_id: 2, number: 3, results: Results::Failure };
        assert_eq!(plan(&finished)[0], announce(Fetch::Build(7), "finished"));
        let requested = Event::BuildRequested { buildset_id: 4, builder_ids: vec![2, 3], request_ids: vec![8, 9] };
        let events: Vec<_> = plan(&requested).into_iter().map(|a| (a.fetch.resource(), a.event)).collect();
        assert_eq!(
            events,
            [
                (Resource::Change, "new"),
                (Resource::BuildRequest, "new"),
                (Resource::BuildRequest, "new"),
                (Resource::Buildset, "new")
            ]
        );
        let lines = Event::LogLines { log_id: 4, first_line: 0, lines: vec![] };
        assert_eq!(plan(&lines), [announce(Fetch::Log(4), "append")]);
    }

    #[test]
    fn paths_are_bounded() {
        assert!(valid_path("builds/*/*"));
        assert!(!valid_path(""));
        assert!(!valid_path("builds//x"));
        assert!(!valid_path(&"a/".repeat(20)));
        assert!(!valid_path(&"x".repeat(MAX_PATH_BYTES + 1)));
    }
}
