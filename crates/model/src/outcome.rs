//! How a remote command's end becomes a step result, and step results a
//! build result, by Buildbot's rules.

use std::collections::BTreeMap;

use crate::results::Results;

/// How a remote command ended, as far as results care.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandEnd {
    /// The exit code; `None` if the command ended without one.
    pub rc: Option<i64>,
    /// The master interrupted it (a stop): CANCELLED whatever `rc` says.
    pub interrupted: bool,
    /// The worker reported an error running it (not a failing exit code).
    pub error: Option<String>,
    /// Lines matched the step's `warning_pattern`.
    pub warnings: u64,
}

/// The step's result: interrupted → CANCELLED; a worker-side error or no
/// exit code → EXCEPTION; otherwise `decode_rc` (default `{0: SUCCESS}`),
/// anything unlisted being FAILURE; a success with warning lines → WARNINGS.
pub fn step_result(end: &CommandEnd, decode_rc: &BTreeMap<i64, Results>) -> Results {
    if end.interrupted {
        return Results::Cancelled;
    }
    if end.error.is_some() {
        return Results::Exception;
    }
    let Some(rc) = end.rc else { return Results::Exception };
    let decoded = if decode_rc.is_empty() {
        if rc == 0 { Results::Success } else { Results::Failure }
    } else {
        decode_rc.get(&rc).copied().unwrap_or(Results::Failure)
    };
    if decoded == Results::Success && end.warnings > 0 { Results::Warnings } else { decoded }
}

/// A step's flags, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepFlags {
    /// A failure halts the build: only `always_run` steps run after it.
    pub halt_on_failure: bool,
    /// A failure makes the build FAILURE.
    pub flunk_on_failure: bool,
    /// A failure makes the build WARNINGS (when it does not flunk it).
    pub warn_on_failure: bool,
}

/// The running result of a build, step by step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildTally {
    /// The worst result so far.
    pub results: Results,
    /// Only `always_run` steps run once this is set.
    pub halted: bool,
}

impl Default for BuildTally {
    fn default() -> Self {
        BuildTally { results: Results::Success, halted: false }
    }
}

impl BuildTally {
    /// Folds one step's result in (Buildbot's `computeResultAndTermination`;
    /// a step's WARNINGS make the build WARNINGS).
    pub fn add(&mut self, step: Results, flags: StepFlags) {
        let contribution = match step {
            Results::Failure => {
                if flags.halt_on_failure {
                    self.halted = true;
                }
                if flags.flunk_on_failure {
                    Results::Failure
                } else if flags.warn_on_failure {
                    Results::Warnings
                } else {
                    Results::Success
                }
            }
            Results::Exception | Results::Retry | Results::Cancelled => {
                self.halted = true;
                step
            }
            Results::Warnings => Results::Warnings,
            Results::Success | Results::Skipped => Results::Success,
        };
        self.results = self.results.worst(contribution);
    }
}

/// Expands `%(prop:NAME)s` and `%(prop:NAME:-DEFAULT)s` (Buildbot's
/// `Interpolate` syntax) from `props`; a missing property without a default
/// becomes empty, as in Buildbot. `%%` is a literal `%`.
pub fn interpolate(template: &str, props: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("%%") {
            out.push('%');
            rest = after;
            continue;
        }
        if let Some(inner) = tail.strip_prefix("%(prop:")
            && let Some(end) = inner.find(")s")
        {
            let spec = &inner[..end];
            let (name, default) = match spec.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (spec, None),
            };
            match props.get(name) {
                Some(v) if !v.is_empty() || default.is_none() => out.push_str(v),
                _ => out.push_str(default.unwrap_or("")),
            }
            rest = &inner[end + 2..];
            continue;
        }
        out.push('%');
        rest = &tail[1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(rc: i64) -> CommandEnd {
        CommandEnd { rc: Some(rc), ..Default::default() }
    }

    #[test]
    fn exit_codes_decode() {
        let none = BTreeMap::new();
        assert_eq!(step_result(&end(0), &none), Results::Success);
        assert_eq!(step_result(&end(3), &none), Results::Failure);
        assert_eq!(step_result(&end(-1), &none), Results::Failure);
        let custom = BTreeMap::from([(0, Results::Success), (5, Results::Warnings)]);
        assert_eq!(step_result(&end(5), &custom), Results::Warnings);
        assert_eq!(step_result(&end(1), &custom), Results::Failure);
        let warned = CommandEnd { warnings: 2, ..end(0) };
        assert_eq!(step_result(&warned, &none), Results::Warnings);
        let stopped = CommandEnd { interrupted: true, ..end(0) };
        assert_eq!(step_result(&stopped, &none), Results::Cancelled);
        let broken = CommandEnd { error: Some("KeyError".into()), ..end(0) };
        assert_eq!(step_result(&broken, &none), Results::Exception);
        assert_eq!(step_result(&CommandEnd::default(), &none), Results::Exception);
    }

    const PLAIN: StepFlags = StepFlags { halt_on_failure: false, flunk_on_failure: true, warn_on_failure: false };

    #[test]
    fn build_results_follow_buildbot() {
        let mut t = BuildTally::default();
        t.add(Results::Success, PLAIN);
        t.add(Results::Warnings, PLAIN);
        assert_eq!(t, BuildTally { results: Results::Warnings, halted: false });
        t.add(Results::Failure, PLAIN);
        assert_eq!(t, BuildTally { results: Results::Failure, halted: false });
        t.add(Results::Failure, StepFlags { halt_on_failure: true, ..PLAIN });
        assert!(t.halted);

        let mut soft = BuildTally::default();
        soft.add(Results::Failure, StepFlags { flunk_on_failure: false, warn_on_failure: true, ..PLAIN });
        assert_eq!(soft.results, Results::Warnings);
        soft.add(Results::Failure, StepFlags { flunk_on_failure: false, warn_on_failure: false, ..PLAIN });
        assert_eq!(soft.results, Results::Warnings);

        let mut stopped = BuildTally::default();
        stopped.add(Results::Cancelled, PLAIN);
        assert_eq!(stopped, BuildTally { results: Results::Cancelled, halted: true });
        stopped.add(Results::Failure, PLAIN);
        assert_eq!(stopped.results, Results::Cancelled, "cancelled ranks worst");
    }

    #[test]
    fn interpolation() {
        let props = BTreeMap::from([
            ("branch".to_string(), "main".to_string()),
            ("revision".to_string(), "abc".to_string()),
            ("empty".to_string(), String::new()),
        ]);
        assert_eq!(interpolate("git checkout %(prop:revision)s", &props), "git checkout abc");
        assert_eq!(interpolate("%(prop:missing)s|%(prop:missing:-dflt)s|%(prop:empty:-e)s", &props), "|dflt|e");
        assert_eq!(interpolate("100%% of %(prop:branch)s %(oops", &props), "100% of main %(oops");
        assert_eq!(interpolate("%(prop:branch", &props), "%(prop:branch");
        assert_eq!(interpolate("ünï %(prop:branch)s ✓", &props), "ünï main ✓");
    }
}
