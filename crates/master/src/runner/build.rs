//! One build on one worker: properties, then each step of the factory,
//! then the result (or RETRY when the worker is lost).

use std::collections::BTreeMap;
use std::sync::Arc;

use cascade_config::{
    BuilderConfig, Command, DownloadStep, GitMethod, GitMode, GitStep, ShellStep, StepConfig, StepKind, UploadStep,
};
use cascade_model::Results;
use cascade_model::outcome::{BuildTally, StepFlags, interpolate, step_result};
use cascade_store::{ClaimedBuild, StoreError};
use regex::Regex;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::Instrument;

use super::command::{CommandResult, CommandRun};
use super::log::LogWriter;
use super::upload::{DirectorySink, DownloadSource, UploadSink};
use crate::app::Master;
use crate::workers::WorkerHandle;

/// Buildbot's default for a shell step's silence limit.
const DEFAULT_TIMEOUT_SECS: u64 = 1200;

struct Ctx {
    master: Arc<Master>,
    build_id: i64,
    worker: Arc<WorkerHandle>,
    builder: String,
    builddir: String,
    props: BTreeMap<String, String>,
    repository: String,
    branch: Option<String>,
    revision: Option<String>,
    stop: watch::Receiver<bool>,
}

/// What a step came to.
struct StepEnd {
    results: Results,
    lost: bool,
    state: String,
}

pub async fn run(master: Arc<Master>, worker: Arc<WorkerHandle>, builder: BuilderConfig, claimed: ClaimedBuild) {
    let span = tracing::info_span!("build", builder = %builder.name, number = claimed.number, worker = %worker.name);
    let build_id = claimed.build_id;
    let (stop_tx, stop) = watch::channel(false);
    master.register_running(build_id, stop_tx);
    let event = |kind: &'static str, results: Option<i64>, step: Option<String>| crate::views::events::BuildEvent {
        kind,
        build_id,
        builder_id: claimed.builder_id,
        number: claimed.number,
        results,
        step,
    };
    let _ = master.events.send(event("started", None, None));
    async {
        tracing::info!(requests = claimed.covered.len(), revision = ?claimed.source.revision, "build started");
        if let Err(e) = run_steps(&master, &worker, &builder, &claimed, stop).await {
            tracing::error!(error = %e, "the store failed during the build; it is retried");
            let _ = master.store.retry_build(build_id, "retry: store error", crate::clock::now()).await;
        }
    }
    .instrument(span)
    .await;
    let results = master.store.get_build(build_id).await.ok().flatten().and_then(|b| b.results);
    let _ = master.events.send(event("finished", results, None));
    master.unregister_running(build_id);
    worker.release(&builder.name);
    master.workers.changed.notify_waiters();
    master.wake_builds.notify_one();
}

/// A builder's folder name on a worker.
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

async fn run_steps(
    master: &Arc<Master>,
    worker: &Arc<WorkerHandle>,
    builder: &BuilderConfig,
    claimed: &ClaimedBuild,
    stop: watch::Receiver<bool>,
) -> Result<(), StoreError> {
    let store = &master.store;
    let build_id = claimed.build_id;
    let basedir = worker.info.basedir.clone().unwrap_or_default();
    let builddir = worker.join(&[&basedir, &sanitize(&builder.name)]);
    let source = &claimed.source;
    let mut props: BTreeMap<String, String> = BTreeMap::new();
    if let Some(w) = master.config.workers.iter().find(|w| w.name == worker.name) {
        props.extend(w.properties.clone());
    }
    props.insert("buildername".into(), builder.name.clone());
    props.insert("buildnumber".into(), claimed.number.to_string());
    props.insert("workername".into(), worker.name.clone());
    props.insert("builddir".into(), builddir.clone());
    props.insert("branch".into(), source.branch.clone().unwrap_or_default());
    props.insert("revision".into(), source.revision.clone().unwrap_or_default());
    props.insert("repository".into(), source.repository.clone());
    props.insert("project".into(), source.project.clone());
    let stored: Vec<(String, Value, String)> =
        props.iter().map(|(k, v)| (k.clone(), json!(v), "Build".to_string())).collect();
    store.set_build_properties(build_id, &stored).await?;
    store.set_build_state(build_id, "building").await?;

    let Some(factory) = master.config.factories.iter().find(|f| f.name == builder.factory) else {
        store.finish_build(build_id, Results::Exception, "no such factory", crate::clock::now()).await?;
        return Ok(());
    };
    let mut ctx = Ctx {
        master: master.clone(),
        build_id,
        worker: worker.clone(),
        builder: builder.name.clone(),
        builddir,
        props,
        repository: source.repository.clone(),
        branch: source.branch.clone(),
        revision: source.revision.clone(),
        stop,
    };
    let mut tally = BuildTally::default();
    let mut failed: Vec<String> = Vec::new();
    for (number, step) in factory.steps.iter().enumerate() {
        if tally.halted && !step.always_run {
            continue;
        }
        let step_id = store.add_step(build_id, number as i64, &step.name, crate::clock::now()).await?;
        let log_id = store.add_log(step_id, "stdio", "s").await?;
        let mut log = LogWriter::new(store.clone(), log_id, master.live_logs.clone());
        // After a stop, an always_run step runs to its end: it gets a switch
        // nobody flips, and the build's own is put back afterwards.
        let (_calm_tx, calm_rx) = watch::channel(false);
        let stopped = *ctx.stop.borrow();
        let saved = (stopped && step.always_run).then(|| std::mem::replace(&mut ctx.stop, calm_rx));
        let end = run_step(&mut ctx, step, &mut log).await;
        if let Some(s) = saved {
            ctx.stop = s;
        }
        let end = end?;
        log.finish().await?;
        store.finish_step(step_id, end.results, &end.state, crate::clock::now()).await?;
        let _ = master.events.send(crate::views::events::BuildEvent {
            kind: "step",
            build_id,
            builder_id: claimed.builder_id,
            number: claimed.number,
            results: Some(end.results.code()),
            step: Some(step.name.clone()),
        });
        tracing::info!(step = %step.name, results = end.results.name(), "step finished");
        if end.lost {
            store.retry_build(build_id, "retry: the worker was lost", crate::clock::now()).await?;
            tracing::warn!("worker lost: build will be retried");
            return Ok(());
        }
        if !matches!(end.results, Results::Success | Results::Skipped) {
            failed.push(step.name.clone());
        }
        let flags = StepFlags {
            halt_on_failure: step.halt_on_failure,
            flunk_on_failure: step.flunk_on_failure,
            warn_on_failure: step.warn_on_failure,
        };
        tally.add(end.results, flags);
        if stopped || *ctx.stop.borrow() {
            // A stop ends the build CANCELLED and halts it.
            tally.add(Results::Cancelled, flags);
        }
    }
    let state = match tally.results {
        Results::Success => "build successful".to_string(),
        r => format!("{}: {}", r.name(), failed.join(", ")),
    };
    store.finish_build(build_id, tally.results, &state, crate::clock::now()).await?;
    tracing::info!(results = tally.results.name(), "build finished");
    Ok(())
}

async fn run_step(ctx: &mut Ctx, step: &StepConfig, log: &mut LogWriter) -> Result<StepEnd, StoreError> {
    match &step.kind {
        StepKind::Shell(shell) => shell_step(ctx, step, shell, log).await,
        StepKind::Git(git) => git_step(ctx, step, git, log).await,
        StepKind::Upload(upload) => upload_step(ctx, step, upload, log).await,
        StepKind::Download(download) => download_step(ctx, step, download, log).await,
    }
}

fn shell_args(step: &StepConfig, workdir: &str, command: Value, env: Value) -> Value {
    json!({
        "workdir": workdir,
        "command": command,
        "env": env,
        "want_stdout": true,
        "want_stderr": true,
        "logfiles": {},
        "timeout": step.timeout.map(|d| d.as_secs()).unwrap_or(DEFAULT_TIMEOUT_SECS),
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

fn describe(step: &StepConfig, results: Results, result: &CommandResult) -> String {
    let mut s = format!("{} {}", step.name, results.name());
    match result.failure_reason.as_deref() {
        Some("timeout") | Some("timeout_without_output") => s.push_str(" (timed out)"),
        Some("max_lines_failure") => s.push_str(" (max lines)"),
        _ => {}
    }
    s
}

async fn shell_step(
    ctx: &mut Ctx,
    step: &StepConfig,
    shell: &ShellStep,
    log: &mut LogWriter,
) -> Result<StepEnd, StoreError> {
    let workdir = ctx.worker.join(&[&ctx.builddir, shell.workdir.as_deref().unwrap_or("build")]);
    let command = match &shell.command {
        Command::Shell(s) => json!(interpolate(s, &ctx.props)),
        Command::Argv(argv) => json!(argv.iter().map(|a| interpolate(a, &ctx.props)).collect::<Vec<_>>()),
    };
    let env: serde_json::Map<String, Value> =
        shell.env.iter().map(|(k, v)| (k.clone(), json!(interpolate(v, &ctx.props)))).collect();
    let pattern = match shell.warning_pattern.as_deref().map(Regex::new) {
        Some(Ok(re)) => Some(re),
        Some(Err(e)) => {
            log.add('h', &format!("invalid warning_pattern: {e}")).await?;
            return Ok(StepEnd {
                results: Results::Exception,
                lost: false,
                state: format!("{}: bad warning_pattern", step.name),
            });
        }
        None => None,
    };
    let args = shell_args(step, &workdir, command, Value::Object(env));
    let run = CommandRun {
        worker: &ctx.worker,
        builder: &ctx.builder,
        command_id: ctx.master.workers.command_id(),
        name: "shell",
        args,
        warning_pattern: pattern.as_ref(),
        capture_stdout: false,
    };
    let result = run.run(log, &mut ctx.stop, None).await?;
    let results = step_result(&result.end, &shell.decode_rc);
    let state = describe(step, results, &result);
    Ok(StepEnd { results, lost: result.lost, state })
}

/// Runs one command of a multi-command step (git), argv form.
async fn sub_command(
    ctx: &mut Ctx,
    step: &StepConfig,
    workdir: &str,
    argv: &[&str],
    log: &mut LogWriter,
    capture: bool,
) -> Result<CommandResult, StoreError> {
    let args = shell_args(step, workdir, json!(argv), json!({}));
    CommandRun {
        worker: &ctx.worker,
        builder: &ctx.builder,
        command_id: ctx.master.workers.command_id(),
        name: "shell",
        args,
        warning_pattern: None,
        capture_stdout: capture,
    }
    .run(log, &mut ctx.stop, None)
    .await
}

async fn fs_command(ctx: &mut Ctx, name: &str, args: Value, log: &mut LogWriter) -> Result<CommandResult, StoreError> {
    CommandRun {
        worker: &ctx.worker,
        builder: &ctx.builder,
        command_id: ctx.master.workers.command_id(),
        name,
        args,
        warning_pattern: None,
        capture_stdout: false,
    }
    .run(log, &mut ctx.stop, None)
    .await
}

/// A git checkout built from plain commands (argv, so it works on every
/// OS): clone or reuse, fetch the branch, check out the revision, clean.
async fn git_step(ctx: &mut Ctx, step: &StepConfig, git: &GitStep, log: &mut LogWriter) -> Result<StepEnd, StoreError> {
    let repo = git
        .repo
        .clone()
        .or_else(|| (!ctx.repository.is_empty()).then(|| ctx.repository.clone()))
        .or_else(|| ctx.master.config.github.repository.as_ref().map(|r| format!("https://github.com/{r}.git")))
        .unwrap_or_default();
    let repo = interpolate(&repo, &ctx.props);
    let (checkout_dir, copy_to) = if git.method == GitMethod::Copy && git.mode == GitMode::Full {
        (ctx.worker.join(&[&ctx.builddir, "source"]), Some(ctx.worker.join(&[&ctx.builddir, "build"])))
    } else {
        (ctx.worker.join(&[&ctx.builddir, "build"]), None)
    };
    let fail =
        |results: Results, what: &str, lost: bool| StepEnd { results, lost, state: format!("{} {what}", step.name) };
    macro_rules! check {
        ($result:expr, $what:expr) => {{
            let r = $result;
            if r.lost {
                return Ok(fail(Results::Retry, "lost", true));
            }
            let res = step_result(&r.end, &BTreeMap::new());
            if res != Results::Success {
                return Ok(fail(res, $what, false));
            }
            r
        }};
    }
    if repo.is_empty() {
        log.add('h', "no repository: set `repo` on the git step or github.repository").await?;
        return Ok(fail(Results::Exception, "no repository", false));
    }
    if git.mode == GitMode::Full && git.method == GitMethod::Clobber {
        check!(
            fs_command(ctx, "rmdir", json!({"paths": [checkout_dir], "timeout": 600, "logEnviron": false}), log)
                .await?,
            "clobber"
        );
    }
    let dotgit = ctx.worker.join(&[&checkout_dir, ".git"]);
    let stat = fs_command(ctx, "stat", json!({"path": dotgit}), log).await?;
    if stat.lost {
        return Ok(fail(Results::Retry, "lost", true));
    }
    if stat.end.rc != Some(0) {
        check!(fs_command(ctx, "mkdir", json!({"paths": [checkout_dir]}), log).await?, "mkdir");
        check!(sub_command(ctx, step, &checkout_dir, &["git", "init", "-q"], log, false).await?, "init");
        check!(
            sub_command(ctx, step, &checkout_dir, &["git", "remote", "add", "origin", &repo], log, false).await?,
            "remote"
        );
    } else {
        check!(
            sub_command(ctx, step, &checkout_dir, &["git", "remote", "set-url", "origin", &repo], log, false).await?,
            "remote"
        );
    }
    let branch = ctx.branch.clone().filter(|b| !b.is_empty());
    let revision = ctx.revision.clone().filter(|r| !r.is_empty());
    match &branch {
        Some(b) => {
            let refspec = format!("+refs/heads/{b}:refs/remotes/origin/{b}");
            check!(
                sub_command(ctx, step, &checkout_dir, &["git", "fetch", "-q", "origin", &refspec], log, false).await?,
                "fetch"
            );
        }
        None => {
            check!(
                sub_command(ctx, step, &checkout_dir, &["git", "fetch", "-q", "origin"], log, false).await?,
                "fetch"
            );
        }
    }
    let target = match (&revision, &branch) {
        (Some(r), _) => r.clone(),
        (None, Some(b)) => format!("origin/{b}"),
        (None, None) => "FETCH_HEAD".to_string(),
    };
    let checkout = sub_command(ctx, step, &checkout_dir, &["git", "checkout", "-q", "-f", &target], log, false).await?;
    if checkout.lost {
        return Ok(fail(Results::Retry, "lost", true));
    }
    if checkout.end.rc != Some(0) {
        // The revision may be on no fetched branch (a force push): ask for it directly.
        check!(
            sub_command(ctx, step, &checkout_dir, &["git", "fetch", "-q", "origin", &target], log, false).await?,
            "fetch revision"
        );
        check!(
            sub_command(ctx, step, &checkout_dir, &["git", "checkout", "-q", "-f", &target], log, false).await?,
            "checkout"
        );
    }
    if git.mode == GitMode::Full {
        match git.method {
            GitMethod::Fresh | GitMethod::Copy | GitMethod::Clobber => {
                check!(
                    sub_command(ctx, step, &checkout_dir, &["git", "clean", "-f", "-f", "-d", "-x", "-q"], log, false)
                        .await?,
                    "clean"
                );
            }
            GitMethod::Clean => {
                check!(
                    sub_command(ctx, step, &checkout_dir, &["git", "clean", "-f", "-f", "-d", "-q"], log, false)
                        .await?,
                    "clean"
                );
            }
        }
    }
    if git.submodules {
        check!(
            sub_command(ctx, step, &checkout_dir, &["git", "submodule", "update", "--init", "--recursive"], log, false)
                .await?,
            "submodules"
        );
    }
    let head =
        check!(sub_command(ctx, step, &checkout_dir, &["git", "rev-parse", "HEAD"], log, true).await?, "rev-parse");
    let got = head.stdout.trim().to_string();
    if let Some(to) = copy_to {
        check!(
            fs_command(ctx, "rmdir", json!({"paths": [to], "timeout": 600, "logEnviron": false}), log).await?,
            "copy"
        );
        check!(
            fs_command(
                ctx,
                "cpdir",
                json!({"from_path": checkout_dir, "to_path": to, "timeout": 1200, "logEnviron": false}),
                log
            )
            .await?,
            "copy"
        );
    }
    ctx.props.insert("got_revision".into(), got.clone());
    ctx.master.store.set_build_properties(ctx.build_id, &[("got_revision".into(), json!(got), "Git".into())]).await?;
    Ok(StepEnd {
        results: Results::Success,
        lost: false,
        state: format!("{} {}", step.name, got.chars().take(12).collect::<String>()),
    })
}

/// Largest file an upload step takes.
const MAX_UPLOAD: u64 = 1 << 30;

/// A file from the worker's build folder to the build's artifact folder:
/// `<artifacts>/<builder>/<build number>/<dest>`.
async fn upload_step(
    ctx: &mut Ctx,
    step: &StepConfig,
    upload: &UploadStep,
    log: &mut LogWriter,
) -> Result<StepEnd, StoreError> {
    let src = interpolate(&upload.src, &ctx.props);
    let dest = interpolate(&upload.dest, &ctx.props);
    let refused =
        |why: String| StepEnd { results: Results::Exception, lost: false, state: format!("{} {why}", step.name) };
    let unsafe_dest = dest.is_empty()
        || dest.starts_with('/')
        || dest.starts_with('\\')
        || dest.split(['/', '\\']).any(|part| part == "..");
    if unsafe_dest {
        log.add('h', &format!("refusing to write outside the artifact folder: {dest:?}")).await?;
        return Ok(refused("bad destination".into()));
    }
    let builder = ctx.props.get("buildername").map(|b| sanitize(b)).unwrap_or_default();
    let number = ctx.props.get("buildnumber").cloned().unwrap_or_default();
    let target = ctx.master.config.master.artifacts.join(builder).join(number).join(&dest);
    let workdir = ctx.worker.join(&[&ctx.builddir, "build"]);
    let path = ctx.worker.join(&[&workdir, &src]);
    if upload.directory {
        return upload_directory(ctx, step, log, path, workdir, src, dest, target).await;
    }
    let mut sink = match UploadSink::new(target.clone(), MAX_UPLOAD) {
        Ok(s) => s,
        Err(e) => {
            log.add('h', &format!("cannot prepare {}: {e}", target.display())).await?;
            return Ok(refused("cannot write".into()));
        }
    };
    log.add('h', &format!("uploading {path} to {dest}")).await?;
    let args = json!({
        "path": path,
        "workdir": workdir,
        "workersrc": src,
        "blocksize": 262_144,
        "maxsize": MAX_UPLOAD,
        "keepstamp": false,
    });
    let run = CommandRun {
        worker: &ctx.worker,
        builder: &ctx.builder,
        command_id: ctx.master.workers.command_id(),
        name: "upload_file",
        args,
        warning_pattern: None,
        capture_stdout: false,
    };
    let result = run.run(log, &mut ctx.stop, Some(&mut sink as &mut dyn super::upload::Transfer)).await?;
    let mut results = step_result(&result.end, &BTreeMap::new());
    if results == Results::Success && !sink.closed {
        results = Results::Failure;
    }
    if results == Results::Success {
        log.add('h', &format!("stored {} bytes as {dest}", sink.written())).await?;
    } else if sink.closed {
        // The worker closes even a file it could not read: keep no empty stand-in.
        let _ = std::fs::remove_file(sink.dest());
    }
    Ok(StepEnd { results, lost: result.lost, state: format!("{} {}", step.name, results.name()) })
}

/// A file from the master to the worker's build folder.
async fn download_step(
    ctx: &mut Ctx,
    step: &StepConfig,
    download: &DownloadStep,
    log: &mut LogWriter,
) -> Result<StepEnd, StoreError> {
    let dest = interpolate(&download.dest, &ctx.props);
    let mut source = match DownloadSource::open(&download.src) {
        Ok(s) => s,
        Err(e) => {
            log.add('h', &format!("cannot read {}: {e}", download.src.display())).await?;
            return Ok(StepEnd { results: Results::Exception, lost: false, state: format!("{} no source", step.name) });
        }
    };
    let workdir = ctx.worker.join(&[&ctx.builddir, "build"]);
    let path = ctx.worker.join(&[&workdir, &dest]);
    log.add('h', &format!("downloading {} to {path}", download.src.display())).await?;
    let args = json!({
        "path": path,
        "workdir": workdir,
        "workerdest": dest,
        "blocksize": 65_536,
        "maxsize": null,
        "mode": download.mode,
    });
    let run = CommandRun {
        worker: &ctx.worker,
        builder: &ctx.builder,
        command_id: ctx.master.workers.command_id(),
        name: "download_file",
        args,
        warning_pattern: None,
        capture_stdout: false,
    };
    let result = run.run(log, &mut ctx.stop, Some(&mut source as &mut dyn super::upload::Transfer)).await?;
    let results = step_result(&result.end, &BTreeMap::new());
    if results == Results::Success {
        log.add('h', &format!("sent {} bytes", source.sent)).await?;
    }
    Ok(StepEnd { results, lost: result.lost, state: format!("{} {}", step.name, results.name()) })
}

#[allow(clippy::too_many_arguments)]
async fn upload_directory(
    ctx: &mut Ctx,
    step: &StepConfig,
    log: &mut LogWriter,
    path: String,
    workdir: String,
    src: String,
    dest: String,
    target: std::path::PathBuf,
) -> Result<StepEnd, StoreError> {
    let mut sink = match DirectorySink::new(target.clone(), MAX_UPLOAD) {
        Ok(s) => s,
        Err(e) => {
            log.add('h', &format!("cannot prepare {}: {e}", target.display())).await?;
            return Ok(StepEnd {
                results: Results::Exception,
                lost: false,
                state: format!("{} cannot write", step.name),
            });
        }
    };
    log.add('h', &format!("uploading the folder {path} to {dest}")).await?;
    let args = json!({
        "path": path,
        "workdir": workdir,
        "workersrc": src,
        "blocksize": 65_536,
        "maxsize": MAX_UPLOAD,
        "compress": null,
    });
    let run = CommandRun {
        worker: &ctx.worker,
        builder: &ctx.builder,
        command_id: ctx.master.workers.command_id(),
        name: "upload_directory",
        args,
        warning_pattern: None,
        capture_stdout: false,
    };
    let result = run.run(log, &mut ctx.stop, Some(&mut sink as &mut dyn super::upload::Transfer)).await?;
    for skipped in &sink.skipped {
        log.add('h', &format!("skipped {skipped}: links, special files and paths outside the folder are not unpacked"))
            .await?;
    }
    let mut results = step_result(&result.end, &BTreeMap::new());
    if results == Results::Success && !sink.unpacked {
        results = Results::Failure;
    }
    Ok(StepEnd { results, lost: result.lost, state: format!("{} {}", step.name, results.name()) })
}
