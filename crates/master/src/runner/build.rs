//! One build on one worker: properties, then each step of the factory,
//! then the result (or RETRY when the worker is lost).

use std::collections::BTreeMap;
use std::sync::Arc;

use cascade_config::{BuilderConfig, Command, DownloadStep, ShellStep, StepConfig, StepKind, UploadStep};
use cascade_model::Results;
use cascade_model::naming::builder_folder;
use cascade_model::outcome::{BuildTally, StepFlags, interpolate, step_result};
use cascade_model::wording::{self, Cut};
use cascade_store::{ClaimedBuild, StoreError};
use regex::Regex;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::Instrument;

use super::Runner;
use super::command::{CommandResult, CommandRun};
use super::log::LogWriter;
use super::testresults::{Origin, read_junit, to_set};
use super::upload::{DirectorySink, DownloadSource, Transfer, UploadSink};
use crate::workers::WorkerHandle;

/// Buildbot's default for a shell step's silence limit.
const DEFAULT_TIMEOUT_SECS: u64 = 1200;
/// Largest file an upload step takes.
const MAX_UPLOAD: u64 = 1 << 30;

/// What a build's steps share while it runs.
pub struct Ctx {
    pub(super) runner: Arc<Runner>,
    pub(super) build_id: i64,
    pub(super) builder_id: i64,
    /// The step running now.
    pub(super) step_id: i64,
    pub(super) worker: Arc<WorkerHandle>,
    pub(super) builder: String,
    pub(super) builddir: String,
    pub(super) props: BTreeMap<String, String>,
    pub(super) repository: String,
    pub(super) branch: Option<String>,
    pub(super) revision: Option<String>,
    /// A `try` job's diff, applied after the checkout.
    pub(super) patch: Option<cascade_store::records::PatchRecord>,
    pub(super) stop: watch::Receiver<bool>,
}

/// What a command needs besides its name and arguments.
#[derive(Default)]
struct Extras<'a> {
    /// Lines matching it are counted as warnings.
    warning_pattern: Option<&'a Regex>,
    /// Keep the command's stdout (e.g. `git rev-parse`).
    capture_stdout: bool,
    /// Where a file transfer's pieces go, or come from.
    transfer: Option<&'a mut dyn Transfer>,
}

/// What a step came to.
pub struct StepEnd {
    pub(super) results: Results,
    pub(super) lost: bool,
    pub(super) state: String,
}

impl StepEnd {
    /// An end with the worker still there.
    pub(super) fn new(results: Results, state: String) -> StepEnd {
        StepEnd { results, lost: false, state }
    }
}

/// Runs a claimed build to its end on `worker` (`stop` flips to stop it),
/// then frees the worker's slot.
pub async fn run(
    runner: Arc<Runner>,
    worker: Arc<WorkerHandle>,
    builder: BuilderConfig,
    claimed: ClaimedBuild,
    stop: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("build", builder = %builder.name, number = claimed.number, worker = %worker.name);
    let build_id = claimed.build_id;
    async {
        tracing::info!(requests = claimed.covered.len(), revision = ?claimed.source.revision, "build started");
        for tag in tags_of(&builder) {
            runner.metrics.builds_started.inc(&[tag]);
        }
        if let Err(e) = run_steps(&runner, &worker, &builder, &claimed, stop).await {
            tracing::error!(error = %e, "the store failed during the build; it is retried");
            let _ = runner.store.retry_build(build_id, "retry: store error", runner.clock.now()).await;
        }
        count_finished(&runner, &builder, build_id).await;
    }
    .instrument(span)
    .await;
    runner.unregister_running(build_id);
    worker.release(&builder.name);
    runner.registry.changed.notify_waiters();
    runner.nudge();
}

/// A builder's tags as metric labels (`""` for none).
fn tags_of(builder: &BuilderConfig) -> Vec<&str> {
    if builder.tags.is_empty() { vec![""] } else { builder.tags.iter().map(String::as_str).collect() }
}

/// A build's end in the metrics, as the store recorded it.
async fn count_finished(runner: &Runner, builder: &BuilderConfig, build_id: i64) {
    let Ok(Some(build)) = runner.store.get_build(build_id).await else { return };
    let Some(results) = build.results.and_then(Results::from_code) else { return };
    for tag in tags_of(builder) {
        runner.metrics.builds_finished.inc(&[tag, results.name()]);
    }
    if let Some(end) = build.complete_at {
        let took = (end - build.started_at).max(0) as f64;
        runner.metrics.build_duration.observe(&[results.name()], took);
    }
}

/// The properties every build has, with the worker's own.
fn build_properties(ctx: &Ctx, builder: &BuilderConfig, claimed: &ClaimedBuild) -> BTreeMap<String, String> {
    let source = &claimed.source;
    let mut props: BTreeMap<String, String> =
        ctx.runner.catalog.worker(&ctx.worker.name).map(|w| w.properties.clone()).unwrap_or_default();
    props.insert("buildername".into(), builder.name.clone());
    props.insert("buildnumber".into(), claimed.number.to_string());
    props.insert("workername".into(), ctx.worker.name.clone());
    props.insert("builddir".into(), ctx.builddir.clone());
    props.insert("branch".into(), source.branch.clone().unwrap_or_default());
    props.insert("revision".into(), source.revision.clone().unwrap_or_default());
    props.insert("repository".into(), source.repository.clone());
    props.insert("project".into(), source.project.clone());
    props
}

/// The properties of the buildset a request belongs to: name → (value, source).
async fn buildset_properties(
    store: &cascade_store::Store,
    request_id: i64,
) -> Result<BTreeMap<String, (Value, String)>, StoreError> {
    let Some(request) = store.get_buildrequest(request_id).await? else { return Ok(BTreeMap::new()) };
    let mut out = BTreeMap::new();
    for (name, v) in store.buildset_properties(request.buildsetid).await? {
        let value = v.get(0).cloned().unwrap_or(Value::Null);
        let source = v.get(1).and_then(Value::as_str).unwrap_or("Buildset").to_string();
        out.insert(name, (value, source));
    }
    Ok(out)
}

async fn run_steps(
    runner: &Arc<Runner>,
    worker: &Arc<WorkerHandle>,
    builder: &BuilderConfig,
    claimed: &ClaimedBuild,
    stop: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let store = &runner.store;
    let build_id = claimed.build_id;
    let basedir = worker.info.basedir.clone().unwrap_or_default();
    let mut ctx = Ctx {
        runner: runner.clone(),
        build_id,
        builder_id: claimed.builder_id,
        step_id: 0,
        worker: worker.clone(),
        builder: builder.name.clone(),
        builddir: worker.join(&[&basedir, &builder_folder(&builder.name)]),
        props: BTreeMap::new(),
        repository: claimed.source.repository.clone(),
        branch: claimed.source.branch.clone().filter(|b| !b.is_empty()),
        revision: claimed.source.revision.clone().filter(|r| !r.is_empty()),
        patch: claimed.source.patch.clone(),
        stop,
    };
    ctx.props = build_properties(&ctx, builder, claimed);
    // The buildset's own properties (a force's, a rerun's `randseed` and
    // `tests`) under the ones every build sets.
    let mut stored: Vec<(String, Value, String)> = Vec::new();
    for (name, (value, source)) in buildset_properties(store, claimed.build_request_id).await? {
        if !ctx.props.contains_key(&name) {
            ctx.props.insert(name.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_string));
            stored.push((name, value, source));
        }
    }
    let standard = ctx.props.iter().filter(|(k, _)| !stored.iter().any(|(n, _, _)| n == *k));
    let standard: Vec<(String, Value, String)> =
        standard.map(|(k, v)| (k.clone(), json!(v), "Build".to_string())).collect();
    stored.extend(standard);
    store.set_build_properties(build_id, &stored).await?;
    store.set_build_state(build_id, "building").await?;
    let Some(factory) = runner.catalog.factory(&builder.factory) else {
        store.finish_build(build_id, Results::Exception, "no such factory", runner.clock.now()).await?;
        return Ok(());
    };
    let mut tally = BuildTally::default();
    // The summaries of the steps that made the result, as Buildbot's build text.
    let mut named: Vec<String> = Vec::new();
    for (number, step) in factory.steps.iter().enumerate() {
        if tally.halted && !step.always_run {
            continue;
        }
        let (end, stopped) = ctx.step(number as i64, step).await?;
        if end.lost {
            store.retry_build(build_id, "retry: the worker was lost", runner.clock.now()).await?;
            tracing::warn!("worker lost: build will be retried");
            return Ok(());
        }
        let failure_counts = step.flunk_on_failure || step.halt_on_failure || step.warn_on_failure;
        if wording::names_in_build(end.results, failure_counts) {
            named.push(end.state.clone());
        }
        let flags = StepFlags {
            halt_on_failure: step.halt_on_failure,
            flunk_on_failure: step.flunk_on_failure,
            warn_on_failure: step.warn_on_failure,
        };
        tally.add(end.results, flags);
        if stopped {
            // A stop ends the build CANCELLED and halts it.
            tally.add(Results::Cancelled, flags);
        }
    }
    let state = wording::build_summary(tally.results, &named);
    store.finish_build(build_id, tally.results, &state, runner.clock.now()).await?;
    tracing::info!(results = tally.results.name(), "build finished");
    Ok(())
}

impl Ctx {
    fn now(&self) -> i64 {
        self.runner.clock.now()
    }

    /// Runs one step with its own log; returns how it ended and whether the
    /// build was stopped by then.
    async fn step(&mut self, number: i64, step: &StepConfig) -> Result<(StepEnd, bool), StoreError> {
        let store = self.runner.store.clone();
        let step_id = store.add_step(self.build_id, number, &step.name, self.now()).await?;
        let log_id = store.add_log(step_id, "stdio", "s").await?;
        let mut log = LogWriter::new(store.clone(), log_id, self.runner.bus.clone(), self.runner.clock.clone())
            .counted(self.runner.metrics.clone());
        if matches!(step.kind, StepKind::Shell(_)) {
            log.watch_tests();
        }
        self.step_id = step_id;
        // After a stop, an always_run step runs to its end: it gets a switch
        // nobody flips, and the build's own is put back afterwards.
        let (_calm_tx, calm_rx) = watch::channel(false);
        let stopped = *self.stop.borrow();
        let saved = (stopped && step.always_run).then(|| std::mem::replace(&mut self.stop, calm_rx));
        let end = self.run_step(step, &mut log).await;
        if let Some(s) = saved {
            self.stop = s;
        }
        let end = end?;
        let tests = log.take_tests();
        log.finish().await?;
        if let Some(report) = tests {
            self.store_tests(&report, format!("{}: {}", report.runner.as_str(), step.name)).await?;
        }
        store.finish_step(step_id, end.results, &end.state, self.now()).await?;
        tracing::info!(step = %step.name, results = end.results.name(), "step finished");
        Ok((end, stopped || *self.stop.borrow()))
    }

    async fn run_step(&mut self, step: &StepConfig, log: &mut LogWriter) -> Result<StepEnd, StoreError> {
        match &step.kind {
            StepKind::Shell(shell) => self.shell_step(step, shell, log).await,
            StepKind::Git(git) => super::git::run(self, step, git, log).await,
            StepKind::Upload(upload) => self.upload_step(step, upload, log).await,
            StepKind::Download(download) => self.download_step(step, download, log).await,
        }
    }

    /// Runs one remote command of the step, with its log and the build's stop switch.
    async fn command(
        &mut self,
        name: &str,
        args: Value,
        log: &mut LogWriter,
        extras: Extras<'_>,
    ) -> Result<CommandResult, StoreError> {
        let Extras { warning_pattern, capture_stdout, transfer } = extras;
        let run = CommandRun {
            worker: &self.worker,
            builder: &self.builder,
            command_id: self.runner.registry.command_id(),
            name,
            args,
            warning_pattern,
            capture_stdout,
        };
        run.run(log, &mut self.stop, transfer).await
    }

    /// A file-system command (`stat`, `mkdir`, `rmdir`, `cpdir`).
    pub(super) async fn fs_command(
        &mut self,
        name: &str,
        args: Value,
        log: &mut LogWriter,
    ) -> Result<CommandResult, StoreError> {
        self.command(name, args, log, Extras::default()).await
    }

    /// One command of a multi-command step (git), argv form, in `workdir`,
    /// with `stdin` as its standard input if given.
    pub(super) async fn git_with_input(
        &mut self,
        step: &StepConfig,
        workdir: &str,
        argv: &[String],
        log: &mut LogWriter,
        stdin: &str,
    ) -> Result<CommandResult, StoreError> {
        let mut args = shell_args(step, workdir, json!(argv), json!({}));
        args["initial_stdin"] = json!(stdin);
        self.command("shell", args, log, Extras::default()).await
    }

    /// One command of a multi-command step (git), argv form, in `workdir`.
    pub(super) async fn git(
        &mut self,
        step: &StepConfig,
        workdir: &str,
        argv: &[String],
        log: &mut LogWriter,
        capture: bool,
    ) -> Result<CommandResult, StoreError> {
        let args = shell_args(step, workdir, json!(argv), json!({}));
        self.command("shell", args, log, Extras { capture_stdout: capture, ..Extras::default() }).await
    }

    async fn shell_step(
        &mut self,
        step: &StepConfig,
        shell: &ShellStep,
        log: &mut LogWriter,
    ) -> Result<StepEnd, StoreError> {
        let workdir = self.worker.join(&[&self.builddir, shell.workdir.as_deref().unwrap_or("build")]);
        let (command, words) = match &shell.command {
            Command::Shell(s) => {
                let line = interpolate(s, &self.props);
                let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
                (json!(line), words)
            }
            Command::Argv(argv) => {
                let words: Vec<String> = argv.iter().map(|a| interpolate(a, &self.props)).collect();
                (json!(words), words)
            }
        };
        let env: serde_json::Map<String, Value> =
            shell.env.iter().map(|(k, v)| (k.clone(), json!(interpolate(v, &self.props)))).collect();
        let pattern = match shell.warning_pattern.as_deref().map(Regex::new) {
            Some(Ok(re)) => Some(re),
            Some(Err(e)) => {
                log.header(&format!("invalid warning_pattern: {e}")).await?;
                return Ok(StepEnd::new(Results::Exception, format!("{}: bad warning_pattern", step.name)));
            }
            None => None,
        };
        let args = shell_args(step, &workdir, command, Value::Object(env));
        let result =
            self.command("shell", args, log, Extras { warning_pattern: pattern.as_ref(), ..Extras::default() }).await?;
        let results = step_result(&result.end, &shell.decode_rc);
        let done = wording::command_summary(&words).unwrap_or_else(|| step.name.clone());
        Ok(StepEnd { results, lost: result.lost, state: describe(&done, results, &result) })
    }

    /// Where an upload lands: `<artifacts>/<builder>/<build number>/<dest>`.
    fn artifact_path(&self, dest: &str) -> std::path::PathBuf {
        let builder = self.props.get("buildername").map(|b| builder_folder(b)).unwrap_or_default();
        let number = self.props.get("buildnumber").cloned().unwrap_or_default();
        self.runner.catalog.config.master.artifacts.join(builder).join(number).join(dest)
    }

    /// Stores what a test run's output (or file) said as the current step's set.
    async fn store_tests(&self, report: &cascade_diagnosis::TestReport, description: String) -> Result<(), StoreError> {
        let origin =
            Origin { builder_id: self.builder_id, build_id: self.build_id, step_id: self.step_id, description };
        let set = to_set(report, origin);
        match self.runner.store.add_test_set(&set).await {
            Ok(id) => {
                let (passed, failed) = report.counts();
                tracing::info!(set = id, passed, failed, "test results stored");
                Ok(())
            }
            // What the output held cannot be stored: the build goes on without it.
            Err(e) if e.is_refused_value() => {
                tracing::warn!(error = %e, "test results refused by the store");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// An uploaded JUnit file's results, stored as the step's set.
    async fn read_junit(&self, path: &std::path::Path, dest: &str, log: &mut LogWriter) -> Result<(), StoreError> {
        // Reading (up to 64 MiB) and parsing are blocking work: off the runtime's threads.
        let owned = path.to_path_buf();
        let parsed = tokio::task::spawn_blocking(move || read_junit(&owned)).await.ok().flatten();
        match parsed {
            None => Ok(()),
            Some(Ok(report)) => {
                let (passed, failed) = report.counts();
                log.header(&format!("{dest}: JUnit results, {passed} passed, {failed} failed")).await?;
                self.store_tests(&report, format!("junit: {dest}")).await
            }
            Some(Err(e)) => log.header(&format!("{dest}: not read as JUnit: {e}")).await,
        }
    }

    /// A file (or folder) from the worker's build folder to the build's artifact folder.
    async fn upload_step(
        &mut self,
        step: &StepConfig,
        upload: &UploadStep,
        log: &mut LogWriter,
    ) -> Result<StepEnd, StoreError> {
        let src = interpolate(&upload.src, &self.props);
        let dest = interpolate(&upload.dest, &self.props);
        if !safe_destination(&dest) {
            log.header(&format!("refusing to write outside the artifact folder: {dest:?}")).await?;
            return Ok(StepEnd::new(Results::Exception, format!("{} bad destination", step.name)));
        }
        let target = self.artifact_path(&dest);
        let workdir = self.worker.join(&[&self.builddir, "build"]);
        let path = self.worker.join(&[&workdir, &src]);
        if upload.directory {
            let args = json!({ "path": path, "workdir": workdir, "workersrc": src, "blocksize": 65_536,
                               "maxsize": MAX_UPLOAD, "compress": null });
            return self.upload_directory(step, log, args, (path, dest, target)).await;
        }
        let mut sink = match UploadSink::new(target.clone(), MAX_UPLOAD) {
            Ok(s) => s,
            Err(e) => return cannot_write(log, step, &target, &e).await,
        };
        log.header(&format!("uploading {path} to {dest}")).await?;
        let args = json!({ "path": path, "workdir": workdir, "workersrc": src, "blocksize": 262_144,
                           "maxsize": MAX_UPLOAD, "keepstamp": false });
        let result =
            self.command("upload_file", args, log, Extras { transfer: Some(&mut sink), ..Extras::default() }).await?;
        let mut results = step_result(&result.end, &BTreeMap::new());
        if results == Results::Success && !sink.closed {
            results = Results::Failure;
        }
        if results == Results::Success {
            log.header(&format!("stored {} bytes as {dest}", sink.written())).await?;
            self.read_junit(&target, &dest, log).await?;
        } else if sink.closed {
            // The worker closes even a file it could not read: keep no empty stand-in.
            let _ = std::fs::remove_file(sink.dest());
        }
        Ok(StepEnd { results, lost: result.lost, state: wording::step_summary(&step.name, results, Cut::No) })
    }

    /// A folder upload: a tar stream unpacked safely at the destination.
    async fn upload_directory(
        &mut self,
        step: &StepConfig,
        log: &mut LogWriter,
        args: Value,
        (path, dest, target): (String, String, std::path::PathBuf),
    ) -> Result<StepEnd, StoreError> {
        let mut sink = match DirectorySink::new(target.clone(), MAX_UPLOAD) {
            Ok(s) => s,
            Err(e) => return cannot_write(log, step, &target, &e).await,
        };
        log.header(&format!("uploading the folder {path} to {dest}")).await?;
        let result = self
            .command("upload_directory", args, log, Extras { transfer: Some(&mut sink), ..Extras::default() })
            .await?;
        for skipped in &sink.skipped {
            let why = "links, special files and paths outside the folder are not unpacked";
            log.header(&format!("skipped {skipped}: {why}")).await?;
        }
        let mut results = step_result(&result.end, &BTreeMap::new());
        if results == Results::Success && !sink.unpacked {
            results = Results::Failure;
        }
        Ok(StepEnd { results, lost: result.lost, state: wording::step_summary(&step.name, results, Cut::No) })
    }

    /// A file from the master to the worker's build folder.
    async fn download_step(
        &mut self,
        step: &StepConfig,
        download: &DownloadStep,
        log: &mut LogWriter,
    ) -> Result<StepEnd, StoreError> {
        let dest = interpolate(&download.dest, &self.props);
        let mut source = match DownloadSource::open(&download.src) {
            Ok(s) => s,
            Err(e) => {
                log.header(&format!("cannot read {}: {e}", download.src.display())).await?;
                return Ok(StepEnd::new(Results::Exception, format!("{} no source", step.name)));
            }
        };
        let workdir = self.worker.join(&[&self.builddir, "build"]);
        let path = self.worker.join(&[&workdir, &dest]);
        log.header(&format!("downloading {} to {path}", download.src.display())).await?;
        let args = json!({ "path": path, "workdir": workdir, "workerdest": dest, "blocksize": 65_536,
                           "maxsize": null, "mode": download.mode });
        let result = self
            .command("download_file", args, log, Extras { transfer: Some(&mut source), ..Extras::default() })
            .await?;
        let results = step_result(&result.end, &BTreeMap::new());
        if results == Results::Success {
            log.header(&format!("sent {} bytes", source.sent)).await?;
        }
        Ok(StepEnd { results, lost: result.lost, state: wording::step_summary(&step.name, results, Cut::No) })
    }
}

/// An upload whose destination cannot be prepared ends as EXCEPTION, and the log says why.
async fn cannot_write(
    log: &mut LogWriter,
    step: &StepConfig,
    target: &std::path::Path,
    e: &std::io::Error,
) -> Result<StepEnd, StoreError> {
    log.header(&format!("cannot prepare {}: {e}", target.display())).await?;
    Ok(StepEnd::new(Results::Exception, format!("{} cannot write", step.name)))
}

/// An upload's destination stays inside the artifact folder: relative, no `..`.
fn safe_destination(dest: &str) -> bool {
    !(dest.is_empty()
        || dest.starts_with('/')
        || dest.starts_with('\\')
        || dest.split(['/', '\\']).any(|part| part == ".."))
}

fn shell_args(step: &StepConfig, workdir: &str, command: Value, env: Value) -> Value {
    json!({
        "workdir": workdir,
        "command": command,
        "env": env,
        "want_stdout": true,
        "want_stderr": true,
        "logfiles": {},
        "timeout": step.timeout.map_or(DEFAULT_TIMEOUT_SECS, |d| d.as_secs()),
        "maxTime": step.max_time.map(|d| d.as_secs()),
        "max_lines": null,
        "sigtermTime": null,
        "usePTY": false,
        // The worker's environment may hold secrets; never put it in logs.
        "logEnviron": false,
        "initial_stdin": null,
        "interruptSignal": "KILL",
    })
}

/// A command step's `state_string`, as Buildbot's `ShellCommand` words it.
fn describe(done: &str, results: Results, result: &CommandResult) -> String {
    let cut = match result.failure_reason.as_deref() {
        Some("timeout" | "timeout_without_output") => Cut::TimedOut,
        Some("max_lines_failure") => Cut::MaxLines,
        _ => Cut::No,
    };
    wording::step_summary(done, results, cut)
}

#[cfg(test)]
mod tests {
    use super::safe_destination;

    #[test]
    fn uploads_stay_in_the_artifact_folder() {
        for ok in ["report.txt", "reports/build-3.txt", "a..b"] {
            assert!(safe_destination(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "\\x", "../x", "a/../../x", "a\\..\\b"] {
            assert!(!safe_destination(bad), "{bad}");
        }
    }
}
