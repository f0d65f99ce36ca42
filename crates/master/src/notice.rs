//! What a control form just did, said on the page it lands on. The
//! redirect carries a word (`done=`), never text: a fixed vocabulary, so
//! no link can make a page say anything else.

/// What a control form just did, as its redirect back says (`done=`): a
/// fixed vocabulary, so no link can make a page say anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Said {
    BuildStopped,
    RequestCancelled,
    WorkerPaused,
    WorkerUnpaused,
    WorkerStopping,
    WorkerKilled,
    SchedulerEnabled,
    SchedulerDisabled,
    Reloaded,
    ForcedSeveral,
}

impl Said {
    const ALL: [Said; 10] = [
        Said::BuildStopped,
        Said::RequestCancelled,
        Said::WorkerPaused,
        Said::WorkerUnpaused,
        Said::WorkerStopping,
        Said::WorkerKilled,
        Said::SchedulerEnabled,
        Said::SchedulerDisabled,
        Said::Reloaded,
        Said::ForcedSeveral,
    ];

    /// The word the redirect carries.
    pub fn word(self) -> &'static str {
        match self {
            Said::BuildStopped => "stopped",
            Said::RequestCancelled => "cancelled",
            Said::WorkerPaused => "paused",
            Said::WorkerUnpaused => "unpaused",
            Said::WorkerStopping => "worker-stopping",
            Said::WorkerKilled => "killed",
            Said::SchedulerEnabled => "enabled",
            Said::SchedulerDisabled => "disabled",
            Said::Reloaded => "reloaded",
            Said::ForcedSeveral => "forced",
        }
    }

    /// What the page says.
    pub fn text(self) -> &'static str {
        match self {
            Said::BuildStopped => "Stop sent: the build ends as cancelled once its worker stops the step.",
            Said::RequestCancelled => "The build request was cancelled.",
            Said::WorkerPaused => "The worker is paused: it finishes what it runs and starts nothing new.",
            Said::WorkerUnpaused => "The worker is unpaused and takes builds again.",
            Said::WorkerStopping => "The worker stops once its running builds finish.",
            Said::WorkerKilled => "The worker's connection was dropped; its running builds are retried.",
            Said::SchedulerEnabled => "The scheduler is enabled.",
            Said::SchedulerDisabled => "The scheduler is disabled: it makes no builds until enabled.",
            Said::Reloaded => "The configuration was reloaded.",
            Said::ForcedSeveral => "Forced: a buildset per branch was made; their requests wait here for a worker.",
        }
    }

    /// `done=` of a query string, if it is a known word.
    pub fn of_query(query: Option<&str>) -> Option<Said> {
        let pairs: Vec<(String, String)> = query.and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
        Said::parse(&pairs.into_iter().find(|(k, _)| k == "done")?.1)
    }

    /// The notice a word names, if it names one.
    pub fn parse(word: &str) -> Option<Said> {
        Said::ALL.into_iter().find(|s| s.word() == word)
    }

    /// `next` with `done=` added to its query.
    pub fn onto(self, next: &str) -> String {
        let (path, fragment) = next.split_once('#').map_or((next, None), |(p, f)| (p, Some(f)));
        let joiner = if path.contains('?') { '&' } else { '?' };
        let fragment = fragment.map(|f| format!("#{f}")).unwrap_or_default();
        format!("{path}{joiner}done={}{fragment}", self.word())
    }
}

/// What a control form just did, as its redirect says (`done=`): a fixed
/// vocabulary, so a link cannot make the page say anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    Forced,
    Rebuilt,
    Rerun,
}

impl Done {
    pub fn parse(word: &str) -> Option<Done> {
        match word {
            "force" => Some(Done::Forced),
            "rebuild" => Some(Done::Rebuilt),
            "rerun" => Some(Done::Rerun),
            _ => None,
        }
    }

    /// The word the redirect carries.
    pub fn word(self) -> &'static str {
        match self {
            Done::Forced => "force",
            Done::Rebuilt => "rebuild",
            Done::Rerun => "rerun",
        }
    }

    /// What the buildset's page says.
    pub fn said(self, requests: usize) -> String {
        let builds = if requests == 1 { "1 build".to_string() } else { format!("{requests} builds") };
        match self {
            Done::Forced => format!("Forced: {builds} requested."),
            Done::Rebuilt => format!("Rebuild requested: {builds}."),
            Done::Rerun => format!("Rerun of the failed tests requested: {builds}."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_one_of_its_words_and_rides_on_the_return_path() {
        for said in Said::ALL {
            assert_eq!(Said::of_query(Some(&format!("x=1&done={}", said.word()))), Some(said));
        }
        assert_eq!(Said::of_query(Some("done=%3Cb%3Ehi")), None, "an unknown word says nothing");
        assert_eq!(Said::of_query(None), None);
        assert_eq!(Said::BuildStopped.onto("/builders/3/builds/4"), "/builders/3/builds/4?done=stopped");
        assert_eq!(Said::WorkerPaused.onto("/workers?name=w1#w1"), "/workers?name=w1&done=paused#w1");
    }

    #[test]
    fn only_known_words_say_what_was_done() {
        assert_eq!(Done::parse("rebuild").map(|d| d.said(1)), Some("Rebuild requested: 1 build.".into()));
        assert_eq!(Done::parse("force").map(|d| d.said(3)), Some("Forced: 3 builds requested.".into()));
        assert_eq!(Done::parse("<script>"), None);
        for d in [Done::Forced, Done::Rebuilt, Done::Rerun] {
            assert_eq!(Done::parse(d.word()), Some(d));
        }
    }
}
