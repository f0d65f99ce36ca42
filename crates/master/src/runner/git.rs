//! A git checkout from plain commands (argv, so it works on every OS):
//! [`plan`] decides them from the step's mode and method, pure; [`run`]
//! executes the plan on the worker.

use std::collections::BTreeMap;

use cascade_config::{GitMethod, GitMode, GitStep, StepConfig};
use cascade_model::Results;
use cascade_model::outcome::{interpolate, step_result};
use cascade_store::StoreError;
use cascade_store::records::PatchRecord;
use serde_json::json;

use super::build::{Ctx, StepEnd};
use super::command::CommandResult;
use super::log::LogWriter;

/// An argv.
type Argv = Vec<String>;

/// What a checkout runs, decided before anything runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitPlan {
    /// Where the repository lives on the worker.
    pub dir: String,
    /// `method = copy`: the build folder the checkout is copied to.
    pub copy_to: Option<String>,
    /// `method = clobber`: remove `dir` first.
    pub clobber: bool,
    /// When `dir` has no `.git`: create it (after `mkdir`).
    pub init: Vec<Argv>,
    /// When it has one: point it at the repository.
    pub reuse: Vec<Argv>,
    /// Fetch the branch (or everything).
    pub fetch: Argv,
    /// Check out the revision (or the branch's tip).
    pub checkout: Argv,
    /// When the checkout fails: fetch the revision itself (a force push
    /// left it on no branch), then check out again.
    pub fetch_revision: Argv,
    /// Then: remove what the checkout does not hold.
    pub clean: Option<Argv>,
    /// Then: submodules.
    pub submodules: Option<Argv>,
    /// When any of it fails: remove `dir` and run the plan once more.
    pub clobber_on_failure: bool,
}

fn argv(parts: &[&str]) -> Argv {
    parts.iter().map(std::string::ToString::to_string).collect()
}

/// The repository a git step clones: its own `repo`, else the change's,
/// else the configured GitHub repository's.
pub fn repository(step: &GitStep, change_repository: &str, github: Option<&str>) -> Option<String> {
    step.repo
        .clone()
        .or_else(|| (!change_repository.is_empty()).then(|| change_repository.to_string()))
        .or_else(|| github.map(|r| format!("https://github.com/{r}.git")))
}

/// What fetches `branch` (a branch name, or a full ref such as
/// `refs/pull/5/merge`) into a remote-tracking ref, and that ref's name to
/// check out: `+refs/pull/5/merge:refs/remotes/origin/pull/5/merge`, `origin/pull/5/merge`.
pub fn refspec(branch: &str) -> (String, String) {
    let (source, name) = match branch.strip_prefix("refs/") {
        Some(rest) => match rest.strip_prefix("heads/") {
            Some(b) => (branch.to_string(), b),
            None => (branch.to_string(), rest),
        },
        None => (format!("refs/heads/{branch}"), branch),
    };
    (format!("+{source}:refs/remotes/origin/{name}"), format!("origin/{name}"))
}

/// `git fetch` with the step's shallow and partial-clone options, then `what`.
fn fetch_argv(step: &GitStep, what: &[&str]) -> Argv {
    let mut args = argv(&["git", "fetch", "-q"]);
    if let Some(depth) = step.depth {
        args.push(format!("--depth={depth}"));
    }
    if let Some(filter) = &step.filter {
        args.push(format!("--filter={filter}"));
    }
    args.push("origin".into());
    args.extend(what.iter().map(std::string::ToString::to_string));
    args
}

/// The commands of a checkout of `repo` at `branch`/`revision`, in `build`
/// (the build folder) or, for `method = copy`, in `source` copied to `build`.
pub fn plan(
    step: &GitStep,
    repo: &str,
    branch: Option<&str>,
    revision: Option<&str>,
    folders: (&str, &str),
) -> GitPlan {
    let (source, build) = folders;
    let full = step.mode == GitMode::Full;
    let copy = full && step.method == GitMethod::Copy;
    let refs = branch.map(refspec);
    let fetch = match &refs {
        Some((spec, _)) => fetch_argv(step, &[spec]),
        None => fetch_argv(step, &[]),
    };
    let target = match (revision, refs) {
        (Some(r), _) => r.to_string(),
        (None, Some((_, tracking))) => tracking,
        (None, None) => "FETCH_HEAD".to_string(),
    };
    let clean = match step.method {
        _ if !full => None,
        GitMethod::Clean => Some(argv(&["git", "clean", "-f", "-f", "-d", "-q"])),
        GitMethod::Fresh | GitMethod::Copy | GitMethod::Clobber => {
            Some(argv(&["git", "clean", "-f", "-f", "-d", "-x", "-q"]))
        }
    };
    GitPlan {
        dir: if copy { source } else { build }.to_string(),
        copy_to: copy.then(|| build.to_string()),
        clobber: full && step.method == GitMethod::Clobber,
        init: vec![argv(&["git", "init", "-q"]), argv(&["git", "remote", "add", "origin", repo])],
        reuse: vec![argv(&["git", "remote", "set-url", "origin", repo])],
        fetch,
        checkout: argv(&["git", "checkout", "-q", "-f", &target]),
        fetch_revision: fetch_argv(step, &[&target]),
        clean,
        submodules: step.submodules.then(|| argv(&["git", "submodule", "update", "--init", "--recursive"])),
        clobber_on_failure: step.clobber_on_failure,
    }
}

/// Why a checkout stopped early.
enum Halt {
    /// The step ends with this.
    End(StepEnd),
    /// The store failed.
    Store(StoreError),
}

impl From<StoreError> for Halt {
    fn from(e: StoreError) -> Halt {
        Halt::Store(e)
    }
}

/// Runs the git step: plan, then each command, stopping at the first that fails.
pub async fn run(ctx: &mut Ctx, step: &StepConfig, git: &GitStep, log: &mut LogWriter) -> Result<StepEnd, StoreError> {
    let github = ctx.runner.catalog.config.github.repository.clone();
    let repo = repository(git, &ctx.repository, github.as_deref()).map(|r| interpolate(&r, &ctx.props));
    let Some(repo) = repo.filter(|r| !r.is_empty()) else {
        log.header("no repository: set `repo` on the git step or github.repository").await?;
        return Ok(StepEnd::new(Results::Exception, format!("{} no repository", step.name)));
    };
    let folders = (ctx.worker.join(&[&ctx.builddir, "source"]), ctx.worker.join(&[&ctx.builddir, "build"]));
    let (branch, revision) = (ctx.branch.clone(), ctx.revision.clone());
    let plan = plan(git, &repo, branch.as_deref(), revision.as_deref(), (&folders.0, &folders.1));
    let mut outcome = execute(ctx, step, &plan, log).await;
    if plan.clobber_on_failure
        && let Err(Halt::End(end)) = &outcome
        && !end.lost
        && !*ctx.stop.borrow()
    {
        // A repository a killed build left corrupt: start from nothing, once.
        log.header("the checkout failed: removing the folder and checking out from scratch").await?;
        let fresh = GitPlan { clobber: true, clobber_on_failure: false, ..plan.clone() };
        outcome = execute(ctx, step, &fresh, log).await;
    }
    let got = match outcome {
        Ok(got) => got,
        Err(Halt::End(end)) => return Ok(end),
        Err(Halt::Store(e)) => return Err(e),
    };
    ctx.props.insert("got_revision".into(), got.clone());
    let props = [("got_revision".to_string(), json!(got), "Git".to_string())];
    ctx.runner.store.set_build_properties(ctx.build_id, &props).await?;
    Ok(StepEnd::new(Results::Success, format!("{} {}", step.name, got.chars().take(12).collect::<String>())))
}

/// Executes a plan; returns the revision checked out.
async fn execute(ctx: &mut Ctx, step: &StepConfig, plan: &GitPlan, log: &mut LogWriter) -> Result<String, Halt> {
    let dir = plan.dir.as_str();
    if plan.clobber {
        check(step, "clobber", rmdir(ctx, dir, log).await?)?;
    }
    let stat = ctx.fs_command("stat", json!({"path": ctx.worker.join(&[dir, ".git"])}), log).await?;
    lost(step, &stat)?;
    if stat.end.rc == Some(0) {
        for args in &plan.reuse {
            check(step, "remote", ctx.git(step, dir, args, log, false).await?)?;
        }
    } else {
        check(step, "mkdir", ctx.fs_command("mkdir", json!({"paths": [dir]}), log).await?)?;
        for (args, what) in plan.init.iter().zip(["init", "remote"]) {
            check(step, what, ctx.git(step, dir, args, log, false).await?)?;
        }
    }
    check(step, "fetch", ctx.git(step, dir, &plan.fetch, log, false).await?)?;
    let checkout = ctx.git(step, dir, &plan.checkout, log, false).await?;
    lost(step, &checkout)?;
    if checkout.end.rc != Some(0) {
        check(step, "fetch revision", ctx.git(step, dir, &plan.fetch_revision, log, false).await?)?;
        check(step, "checkout", ctx.git(step, dir, &plan.checkout, log, false).await?)?;
    }
    for (args, what) in [(&plan.clean, "clean"), (&plan.submodules, "submodules")] {
        if let Some(args) = args {
            check(step, what, ctx.git(step, dir, args, log, false).await?)?;
        }
    }
    let head = ctx.git(step, dir, &argv(&["git", "rev-parse", "HEAD"]), log, true).await?;
    let got = check(step, "rev-parse", head)?.stdout.trim().to_string();
    // The worker says what it checked out; only a commit id is believed.
    if cascade_model::text::revision("got_revision", &got).is_err() {
        let state = format!("{} rev-parse: not a commit id", step.name);
        return Err(Halt::End(StepEnd::new(Results::Exception, state)));
    }
    if let Some(to) = &plan.copy_to {
        check(step, "copy", rmdir(ctx, to, log).await?)?;
        let args = json!({"from_path": dir, "to_path": to, "timeout": 1200, "logEnviron": false});
        check(step, "copy", ctx.fs_command("cpdir", args, log).await?)?;
    }
    if let Some(patch) = ctx.patch.clone() {
        apply_patch(ctx, step, plan.copy_to.as_deref().unwrap_or(dir), &patch, log).await?;
    }
    Ok(got)
}

/// A try job's diff, applied to the checkout as Buildbot's git step does
/// (`git apply --index`, so the next checkout's `checkout -f` undoes it).
async fn apply_patch(
    ctx: &mut Ctx,
    step: &StepConfig,
    dir: &str,
    patch: &PatchRecord,
    log: &mut LogWriter,
) -> Result<(), Halt> {
    log.header(&format!("applying the try job's diff ({} bytes, -p{})", patch.body.len(), patch.level)).await?;
    let args = apply_argv(patch.level);
    check(step, "patch", ctx.git_with_input(step, dir, &args, log, &patch.body).await?)?;
    Ok(())
}

/// `git apply` for a diff at `-p<level>`, read from standard input.
pub fn apply_argv(level: i64) -> Argv {
    vec!["git".into(), "apply".into(), "--index".into(), "-p".into(), level.max(0).to_string(), "-".into()]
}

async fn rmdir(ctx: &mut Ctx, path: &str, log: &mut LogWriter) -> Result<CommandResult, StoreError> {
    ctx.fs_command("rmdir", json!({"paths": [path], "timeout": 600, "logEnviron": false}), log).await
}

/// A lost worker ends the step as RETRY.
fn lost(step: &StepConfig, r: &CommandResult) -> Result<(), Halt> {
    if r.lost {
        return Err(Halt::End(StepEnd { results: Results::Retry, lost: true, state: format!("{} lost", step.name) }));
    }
    Ok(())
}

/// A command that did not succeed ends the step with its result.
fn check(step: &StepConfig, what: &str, r: CommandResult) -> Result<CommandResult, Halt> {
    lost(step, &r)?;
    match step_result(&r.end, &BTreeMap::new()) {
        Results::Success => Ok(r),
        res => Err(Halt::End(StepEnd::new(res, format!("{} {what}", step.name)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(mode: GitMode, method: GitMethod) -> GitStep {
        GitStep { repo: None, mode, method, submodules: false, depth: None, filter: None, clobber_on_failure: false }
    }

    #[test]
    fn any_ref_is_fetched_by_its_own_refspec() {
        let pr = plan(&step(GitMode::Full, GitMethod::Fresh), "r", Some("refs/pull/5/merge"), None, FOLDERS);
        assert_eq!(
            pr.fetch,
            argv(&["git", "fetch", "-q", "origin", "+refs/pull/5/merge:refs/remotes/origin/pull/5/merge"])
        );
        assert_eq!(pr.checkout, argv(&["git", "checkout", "-q", "-f", "origin/pull/5/merge"]));
        assert_eq!(refspec("refs/pull/5/head").1, "origin/pull/5/head");
        assert_eq!(
            refspec("refs/heads/3.14"),
            ("+refs/heads/3.14:refs/remotes/origin/3.14".into(), "origin/3.14".into())
        );
        assert_eq!(refspec("main"), ("+refs/heads/main:refs/remotes/origin/main".into(), "origin/main".into()));
        assert_eq!(refspec("refs/tags/v3.14.0").0, "+refs/tags/v3.14.0:refs/remotes/origin/tags/v3.14.0");
    }

    #[test]
    fn shallow_and_partial_clones_fetch_with_their_options() {
        let mut s = step(GitMode::Full, GitMethod::Fresh);
        s.depth = Some(50);
        s.filter = Some("blob:none".into());
        s.clobber_on_failure = true;
        let p = plan(&s, "r", Some("main"), Some("abc"), FOLDERS);
        let spec = "+refs/heads/main:refs/remotes/origin/main";
        assert_eq!(p.fetch, argv(&["git", "fetch", "-q", "--depth=50", "--filter=blob:none", "origin", spec]));
        assert_eq!(
            p.fetch_revision,
            argv(&["git", "fetch", "-q", "--depth=50", "--filter=blob:none", "origin", "abc"])
        );
        assert!(p.clobber_on_failure && !p.clobber);
    }

    const FOLDERS: (&str, &str) = ("/w/b/source", "/w/b/build");

    #[test]
    fn fresh_checks_out_the_revision_in_the_build_folder_and_cleans_everything() {
        let p = plan(&step(GitMode::Full, GitMethod::Fresh), "https://r", Some("main"), Some("abc"), FOLDERS);
        assert_eq!(p.dir, "/w/b/build");
        assert_eq!(p.copy_to, None);
        assert!(!p.clobber);
        assert_eq!(p.fetch, argv(&["git", "fetch", "-q", "origin", "+refs/heads/main:refs/remotes/origin/main"]));
        assert_eq!(p.checkout, argv(&["git", "checkout", "-q", "-f", "abc"]));
        assert_eq!(p.fetch_revision, argv(&["git", "fetch", "-q", "origin", "abc"]));
        assert_eq!(p.clean, Some(argv(&["git", "clean", "-f", "-f", "-d", "-x", "-q"])));
        assert_eq!(p.init[1], argv(&["git", "remote", "add", "origin", "https://r"]));
        assert_eq!(p.reuse, vec![argv(&["git", "remote", "set-url", "origin", "https://r"])]);
    }

    #[test]
    fn each_method_prepares_and_cleans_its_own_way() {
        let clobber = plan(&step(GitMode::Full, GitMethod::Clobber), "r", Some("main"), None, FOLDERS);
        assert!(clobber.clobber);
        assert_eq!(clobber.checkout, argv(&["git", "checkout", "-q", "-f", "origin/main"]));
        let copy = plan(&step(GitMode::Full, GitMethod::Copy), "r", None, None, FOLDERS);
        assert_eq!((copy.dir.as_str(), copy.copy_to.as_deref()), ("/w/b/source", Some("/w/b/build")));
        assert_eq!(copy.fetch, argv(&["git", "fetch", "-q", "origin"]));
        assert_eq!(copy.checkout, argv(&["git", "checkout", "-q", "-f", "FETCH_HEAD"]));
        let clean = plan(&step(GitMode::Full, GitMethod::Clean), "r", None, None, FOLDERS);
        assert_eq!(clean.clean, Some(argv(&["git", "clean", "-f", "-f", "-d", "-q"])), "keeps ignored files");
        let incremental = plan(&step(GitMode::Incremental, GitMethod::Clobber), "r", None, None, FOLDERS);
        assert!(!incremental.clobber && incremental.clean.is_none() && incremental.copy_to.is_none());
        let mut with_subs = step(GitMode::Incremental, GitMethod::Fresh);
        with_subs.submodules = true;
        assert!(plan(&with_subs, "r", None, None, FOLDERS).submodules.is_some());
    }

    #[test]
    fn the_repository_comes_from_the_step_the_change_or_github() {
        let mut s = step(GitMode::Full, GitMethod::Fresh);
        assert_eq!(
            repository(&s, "", Some("python/cpython")).as_deref(),
            Some("https://github.com/python/cpython.git")
        );
        assert_eq!(repository(&s, "https://x/y", Some("python/cpython")).as_deref(), Some("https://x/y"));
        s.repo = Some("file:///r".into());
        assert_eq!(repository(&s, "https://x/y", None).as_deref(), Some("file:///r"));
        assert_eq!(repository(&step(GitMode::Full, GitMethod::Fresh), "", None), None);
    }
}
