//! Buildbot's result codes, with the same numbers so the API and reports match.

use serde::{Deserialize, Serialize};

/// A build's or step's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "i64", try_from = "i64")]
pub enum Results {
    /// Everything passed.
    Success = 0,
    /// Passed, with warnings.
    Warnings = 1,
    /// Something failed.
    Failure = 2,
    /// Not run.
    Skipped = 3,
    /// Something broke outside the code under test (a worker error, a bad configuration).
    Exception = 4,
    /// Cut short by a lost worker or a restarted master; its requests are queued again.
    Retry = 5,
    /// Stopped before it finished.
    Cancelled = 6,
}

impl Results {
    /// Every result, in code order.
    pub const ALL: [Results; 7] = [
        Results::Success,
        Results::Warnings,
        Results::Failure,
        Results::Skipped,
        Results::Exception,
        Results::Retry,
        Results::Cancelled,
    ];

    /// Buildbot's number for this result.
    pub fn code(self) -> i64 {
        self as i64
    }

    /// The result Buildbot numbers `code`, if any.
    pub fn from_code(code: i64) -> Option<Results> {
        Results::ALL.into_iter().find(|r| r.code() == code)
    }

    /// Lower-case name as Buildbot prints it (`success`, `warnings`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Results::Success => "success",
            Results::Warnings => "warnings",
            Results::Failure => "failure",
            Results::Skipped => "skipped",
            Results::Exception => "exception",
            Results::Retry => "retry",
            Results::Cancelled => "cancelled",
        }
    }

    /// The worse of two results, by Buildbot's `worst_status` ranking:
    /// cancelled > retry > exception > failure > warnings > success > skipped.
    pub fn worst(self, other: Results) -> Results {
        const RANK: [Results; 7] = [
            Results::Cancelled,
            Results::Retry,
            Results::Exception,
            Results::Failure,
            Results::Warnings,
            Results::Success,
            Results::Skipped,
        ];
        for r in RANK {
            if r == self || r == other {
                return r;
            }
        }
        self
    }

    /// Whether a finished build counts as "passing" for state-change detection.
    pub fn is_passing(self) -> bool {
        matches!(self, Results::Success | Results::Warnings)
    }

    /// Whether a finished build counts as broken: a failure or an
    /// exception. These block a release and make `cascade status` fail.
    pub fn is_failing(self) -> bool {
        matches!(self, Results::Failure | Results::Exception)
    }

    /// The result a stored code stands for, if it is one.
    pub fn of(code: Option<i64>) -> Option<Results> {
        code.and_then(Results::from_code)
    }
}

impl From<Results> for i64 {
    fn from(r: Results) -> i64 {
        r.code()
    }
}

impl TryFrom<i64> for Results {
    type Error = String;
    fn try_from(code: i64) -> Result<Self, String> {
        Results::from_code(code).ok_or_else(|| format!("unknown result code {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_buildbot() {
        assert_eq!(Results::Success.code(), 0);
        assert_eq!(Results::Cancelled.code(), 6);
        for r in Results::ALL {
            assert_eq!(Results::from_code(r.code()), Some(r));
        }
        assert_eq!(Results::from_code(7), None);
        assert_eq!(Results::from_code(-1), None);
    }

    #[test]
    fn worst_follows_buildbot_ranking() {
        use Results::*;
        assert_eq!(Success.worst(Skipped), Success);
        assert_eq!(Warnings.worst(Success), Warnings);
        assert_eq!(Success.worst(Failure), Failure);
        assert_eq!(Failure.worst(Exception), Exception);
        assert_eq!(Retry.worst(Exception), Retry);
        assert_eq!(Retry.worst(Cancelled), Cancelled);
        assert_eq!(Skipped.worst(Skipped), Skipped);
    }

    #[test]
    fn passing_class() {
        assert!(Results::Success.is_passing());
        assert!(Results::Warnings.is_passing());
        assert!(!Results::Failure.is_passing());
        assert!(!Results::Exception.is_passing());
        let failing: Vec<Results> = Results::ALL.into_iter().filter(|r| r.is_failing()).collect();
        assert_eq!(failing, vec![Results::Failure, Results::Exception]);
        assert_eq!(Results::of(Some(4)), Some(Results::Exception));
        assert_eq!(Results::of(Some(9)), None);
        assert_eq!(Results::of(None), None);
    }
}
