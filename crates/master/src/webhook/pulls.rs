//! Pull requests built on the fleet: a trigger label (then removed, so
//! adding it again builds again), a `!buildbot <regex>` comment from a
//! writer, new commits and closing (which cancel what is pending).
//!
//! What decides is synchronous (GitHub's answers, then one store
//! transaction) and the delivery is answered once the build is stored;
//! what is said back on the PR follows in the background
//! ([`crate::pulls`]). When GitHub cannot be asked, the delivery is refused
//! with 503 and the poller's pass over open labelled PRs builds it later.

use axum::Json;
use axum::response::{IntoResponse, Response};
use cascade_model::pull::{self, PullAction};
use cascade_model::text;
use cascade_store::Delivery;
use serde_json::json;

use super::pull::{IssueCommentEvent, PullRequestEvent};
use super::push::Repository;
use super::{Hook, accepted, duplicate, unstored};
use crate::error::HttpError;
use crate::github::GithubError;
use crate::pulls::payload::{
    PR_NUMBER_MAX, PullRequest, bad_pattern_comment, check_pull_request, no_builder_comment, refused_comment,
};
use crate::pulls::{Build, Trigger};
use crate::scheduler::{CommentAsk, PullTarget};

fn github_failed(e: GithubError) -> HttpError {
    tracing::warn!(error = %e, "GitHub's API failed while handling a pull request");
    HttpError::unavailable(format!("{e}; redeliver later"))
}

/// A forged delivery could name any commenter or labeller: pull requests
/// are built only from signed deliveries.
fn signed_only(hook: &Hook) -> Result<(), HttpError> {
    if hook.secret.is_none() {
        return Err(HttpError::new(
            axum::http::StatusCode::FORBIDDEN,
            "pull requests are built only from signed deliveries: set github.webhook_secret",
        ));
    }
    Ok(())
}

/// Why a PR cannot be built now, if GitHub has no merge commit for it.
fn no_merge(pr: &PullRequest) -> Option<String> {
    pr.merge_commit_sha.is_none().then(|| {
        format!("pull request #{} has no merge commit yet (a conflict, or GitHub is still merging it)", pr.number)
    })
}

fn invalid(event: &str, e: text::FieldError) -> HttpError {
    HttpError::bad_request(format!("invalid {event} payload: {e}"))
}

/// The configured repository (`owner/name`) and its web address, if the
/// delivery is for it; else why it is not handled.
fn our_repository(hook: &Hook, repo: &Repository) -> Result<(String, String), String> {
    let Some(want) = &hook.catalog.config.github.repository else {
        return Err("pull requests are built only with [github] repository set".into());
    };
    match repo.full_name() {
        Some(got) if got.eq_ignore_ascii_case(want) => {
            let place = repo.web_url().unwrap_or_else(|| format!("https://github.com/{want}"));
            Ok((want.clone(), place))
        }
        got => Err(format!("repository {} is not configured here", got.unwrap_or_default())),
    }
}

/// `pull_request`: a trigger label builds; new commits and closing cancel.
pub async fn pull_request(
    hook: &Hook,
    ev: PullRequestEvent,
    delivery: Option<&Delivery>,
) -> Result<Response, HttpError> {
    signed_only(hook)?;
    check_pull_request(&ev.pull_request).map_err(|e| invalid("pull_request", e))?;
    let (repo, place) = match our_repository(hook, &ev.repository) {
        Ok(r) => r,
        Err(reason) => return Ok(accepted(reason)),
    };
    let pr = &ev.pull_request;
    match PullAction::parse(&ev.action) {
        PullAction::Labeled => {
            let Some(label) = ev.label.as_ref().map(|l| l.name.as_str()) else {
                return Err(HttpError::bad_request("invalid pull_request payload: label: missing"));
            };
            let Some(target) = hook.schedulers.for_label(label) else {
                return Ok(accepted(format!("label {label:?} triggers no build")));
            };
            if pr.state != "open" {
                return Ok(accepted(format!("pull request #{} is not open", pr.number)));
            }
            let sender = ev
                .sender
                .as_ref()
                .ok_or_else(|| HttpError::bad_request("invalid pull_request payload: sender: missing"))?;
            text::login("sender.login", &sender.login).map_err(|e| invalid("pull_request", e))?;
            // A label is an approval to run the PR's code: only writers' count.
            if sender.is_bot() || !hook.pulls.may_build(&repo, &sender.login).await.map_err(github_failed)? {
                tracing::info!(user = ?sender.login, pr = pr.number, "a trigger label from a user without write permission ignored");
                return Ok(accepted(format!("{} may not start builds", sender.login)));
            }
            if let Some(reason) = no_merge(pr) {
                return Ok(accepted(format!("{reason}; the poller tries again")));
            }
            if hook.pulls.head_skips_ci(&repo, pr).await.map_err(github_failed)? {
                return Ok(accepted(format!("the head commit of #{} asks to skip CI", pr.number)));
            }
            let build = Build { repo: &repo, place: &place, pr, target, trigger: Trigger::Label(label.to_string()) };
            schedule(hook, build, delivery).await
        }
        action if action.cancels() => cancel(hook, &place, pr.number, action, delivery).await,
        _ => Ok(accepted(format!("pull_request action {:?} is not handled", ev.action))),
    }
}

/// `issue_comment`: a writer's `!buildbot <regex>` on a PR builds the matching builders.
pub async fn issue_comment(
    hook: &Hook,
    ev: IssueCommentEvent,
    delivery: Option<&Delivery>,
) -> Result<Response, HttpError> {
    signed_only(hook)?;
    if ev.action != "created" {
        return Ok(accepted(format!("issue_comment action {:?} is not handled", ev.action)));
    }
    if ev.comment.user.is_bot() {
        return Ok(accepted("comments by bots are no commands".into()));
    }
    if ev.issue.pull_request.is_none() {
        return Ok(accepted("the comment is not on a pull request".into()));
    }
    let (repo, place) = match our_repository(hook, &ev.repository) {
        Ok(r) => r,
        Err(reason) => return Ok(accepted(reason)),
    };
    let login = &ev.comment.user.login;
    text::login("comment.user.login", login).map_err(|e| invalid("issue_comment", e))?;
    let number = ev.issue.number;
    text::positive("issue.number", number, PR_NUMBER_MAX).map_err(|e| invalid("issue_comment", e))?;
    let target = match asked_target(hook, &repo, number, login, &ev.comment.body).await? {
        Ok(target) => target,
        Err(reason) => return Ok(accepted(reason)),
    };
    let pr: PullRequest =
        hook.pulls.github.get(&format!("/repos/{repo}/pulls/{number}")).await.map_err(github_failed)?;
    check_pull_request(&pr).map_err(|e| github_failed(GithubError::Failed(e.to_string())))?;
    if pr.state != "open" {
        return Ok(accepted(format!("pull request #{number} is not open")));
    }
    if let Some(reason) = no_merge(&pr) {
        hook.pulls.follow_up(&repo, number, None, format!("@{login}: {reason}; nothing was scheduled."));
        return Ok(accepted(reason));
    }
    let build = Build { repo: &repo, place: &place, pr: &pr, target, trigger: Trigger::Comment(login.clone()) };
    schedule(hook, build, delivery).await
}

/// The builders a comment asks for, if its author may ask; otherwise why
/// not, said on the PR too.
async fn asked_target(
    hook: &Hook,
    repo: &str,
    number: u64,
    login: &str,
    body: &str,
) -> Result<Result<PullTarget, String>, HttpError> {
    let ask = hook.schedulers.for_comment(body);
    if ask == CommentAsk::Nothing {
        return Ok(Err("the comment asks for no build".into()));
    }
    let may = hook.pulls.may_build(repo, login).await.map_err(github_failed)?;
    let (comment, reason) = match ask {
        _ if !may => {
            tracing::info!(user = ?login, pr = number, "a build asked by a user without write permission refused");
            (refused_comment(login), format!("{login} may not start builds"))
        }
        CommentAsk::Build { target, .. } => return Ok(Ok(target)),
        CommentAsk::NoBuilder { pattern } => {
            (no_builder_comment(login, &pattern), format!("no builder matches {pattern:?}"))
        }
        CommentAsk::BadPattern(why) => (bad_pattern_comment(login, &why), format!("not a builder pattern: {why}")),
        CommentAsk::Nothing => return Ok(Err("the comment asks for no build".into())),
    };
    hook.pulls.follow_up(repo, number, None, comment);
    Ok(Err(reason))
}

/// Stores the build and answers with what was made.
async fn schedule(hook: &Hook, b: Build<'_>, delivery: Option<&Delivery>) -> Result<Response, HttpError> {
    if b.target.builders.is_empty() {
        return Ok(accepted(format!("scheduler {:?} has no builder for this trigger", b.target.scheduler)));
    }
    let Some(stored) = hook.pulls.schedule(b, delivery).await.map_err(unstored)? else { return Ok(duplicate()) };
    Ok(Json(json!({
        "change": stored.change_id,
        "buildset": stored.buildset_id,
        "requests": stored.request_ids,
    }))
    .into_response())
}

/// New commits or closing: the PR's pending requests are cancelled, and
/// its running builds on this master stopped when the scheduler says so.
async fn cancel(
    hook: &Hook,
    repository: &str,
    number: u64,
    action: PullAction,
    delivery: Option<&Delivery>,
) -> Result<Response, HttpError> {
    let branch = pull::merge_ref(number);
    let now = hook.clock.now();
    let Some(cancelled) = hook.store.cancel_pending(delivery, repository, &branch, now).await.map_err(unstored)? else {
        return Ok(duplicate());
    };
    let mut stopped = 0;
    if hook.schedulers.cancels_running() {
        let running = hook.store.running_builds_on_branch(repository, &branch).await.map_err(unstored)?;
        let here = hook.catalog.master_id;
        stopped = running.into_iter().filter(|(id, master)| *master == here && hook.runner.stop_build(*id)).count();
    }
    tracing::info!(pr = number, ?action, cancelled, stopped, "pull request's builds cancelled");
    Ok(Json(json!({ "cancelled_requests": cancelled, "stopped_builds": stopped })).into_response())
}
