use std::path::{Path, PathBuf};
use std::time::Duration;

use cascade_config::{Action, Command, SchedulerKind, SecretSource, StepKind, WorkerPassword, load, parse};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml")
}

const MINIMAL: &str = r#"
[github]
webhook_secret = "s3cret"

[[branch]]
name = "3.x"
git = "main"

[[worker]]
name = "w1"
password = "pw"

[[factory]]
name = "f"
steps = [{ command = "make" }]
"#;

#[test]
fn example_config_loads_and_expands_builders_per_branch() {
    let config = load(&example_path()).unwrap_or_else(|e| panic!("example config rejected:\n{e}"));
    let names: Vec<&str> = config.builders.iter().map(|b| b.name.as_str()).collect();
    assert!(names.contains(&"AMD64 Fedora Stable 3.x"));
    assert!(names.contains(&"AMD64 Fedora Stable 3.13"));
    assert!(names.contains(&"PPC64 AIX 3.x"));
    assert_eq!(names.len(), 4 + 3 + 2 + 1 + 3);
    let fedora = config.builders.iter().find(|b| b.name == "AMD64 Fedora Stable 3.14").expect("builder");
    assert_eq!(fedora.branch.as_deref(), Some("3.14"));
    assert_eq!(fedora.tags, vec!["stable", "tier-1", "3.14"], "the branch label is a tag");
    assert_eq!(config.branch("3.x").expect("3.x").git, "main");
    assert_eq!(config.branch("3.14").expect("3.14").git, "3.14");

    let sched = config.schedulers.iter().find(|s| s.name == "3.x").expect("scheduler 3.x");
    match &sched.kind {
        SchedulerKind::Branch { branch, tree_stable, ignore_files } => {
            assert_eq!(branch, "3.x");
            assert_eq!(*tree_stable, Duration::from_secs(30));
            assert_eq!(ignore_files.len(), 3);
        }
        other => panic!("unexpected kind {other:?}"),
    }
    // The 3.x scheduler lists 4 definitions; refleaks are left to the nightly one.
    let fed: Vec<_> = config.scheduler_builders(sched).iter().map(|b| b.name.clone()).collect();
    assert_eq!(fed.len(), 4);
    assert!(!fed.iter().any(|n| n.contains("Refleaks")));
    let nightly = config.schedulers.iter().find(|s| s.name == "nightly-refleaks").expect("nightly");
    let fed: Vec<_> = config.scheduler_builders(nightly).iter().map(|b| b.name.clone()).collect();
    assert_eq!(fed, vec!["AMD64 Fedora Refleaks 3.x"]);

    let prs = config.schedulers.iter().find(|s| s.name == "pull-request").expect("pull-request");
    let SchedulerKind::PullRequest(t) = &prs.kind else { panic!("a pull_request scheduler") };
    assert_eq!((t.branch.as_str(), t.labels.len(), t.cancel_running), ("PR", 2, true));
    assert_eq!(t.comment.as_deref(), Some("^!buildbot (.+)"));
    assert_eq!(t.label_tag, None);
    let fed: Vec<_> = config.scheduler_builders(prs).iter().map(|b| b.name.clone()).collect();
    assert_eq!(fed, vec!["AMD64 Fedora Stable PR", "AMD64 Fedora Refleaks PR"]);
    assert_eq!(config.pushed_branches(), vec!["3.13", "3.14", "main"], "PR is no git branch");

    let unix = config.factories.iter().find(|f| f.name == "unix").expect("unix factory");
    let test = unix.steps.iter().find(|s| s.name == "test").expect("test step");
    assert_eq!(test.timeout, Some(Duration::from_secs(30 * 60)));
    let StepKind::Shell(shell) = &test.kind else { panic!("test is a shell step") };
    assert_eq!(shell.decode_rc.get(&5), Some(&cascade_model::Results::Warnings));
    assert!(matches!(shell.command, Command::Argv(_)));
    assert!(matches!(unix.steps[0].kind, StepKind::Git(_)));
    assert!(unix.steps[0].halt_on_failure, "a source step halts by default");
    assert!(!test.halt_on_failure);
    assert!(matches!(config.workers[0].password, WorkerPassword::Hash(_)));
    assert!(matches!(
        config.github.webhook_secret.as_ref().map(|s| &s.source),
        Some(SecretSource::Env(name)) if name == "CASCADE_WEBHOOK_SECRET"
    ));
}

#[test]
fn every_error_is_reported_with_line_column_and_key() {
    let text = r#"[master]
title = "x"
colour = "blue"

[github]
webhook_secret = "s"

[[branch]]
name = "3.x"

[[worker]]
name = "w1"
password = "pw"

[[worker]]
name = "w1"
password = "pw"

[[factory]]
name = "f"
steps = [{ command = "make", bogus = 1 }]

[[builder]]
name = "B"
workers = ["w1", "nope"]
factory = "missing"
branches = ["3.x", "9.9"]

[[scheduler]]
name = "s"
kind = "branch"
branch = "3.x"
tree_stable = "soon"
"#;
    let errors = parse(text, Path::new("cascade.toml")).expect_err("config must be rejected").0;
    let lines: Vec<String> = errors.iter().map(std::string::ToString::to_string).collect();
    let expect = [
        "cascade.toml:3:1: master.colour: unknown key",
        "cascade.toml:15:1: worker[1].name: duplicate worker name \"w1\"",
        "cascade.toml:21:30: factory[0].steps[0].bogus: unknown key",
        "cascade.toml:25:18: builder[0].workers[1]: unknown worker \"nope\"",
        "cascade.toml:26:11: builder[0].factory: unknown factory \"missing\"",
        "cascade.toml:27:20: builder[0].branches[1]: unknown branch \"9.9\"",
        "cascade.toml:33:15: scheduler[0].tree_stable: invalid duration \"soon\"",
    ];
    for want in expect {
        assert!(lines.iter().any(|l| l.starts_with(want)), "missing error {want:?} in:\n{}", lines.join("\n"));
    }
    assert_eq!(lines.len(), expect.len(), "unexpected extra errors:\n{}", lines.join("\n"));
    // reported in file order
    let positions: Vec<usize> = errors.iter().map(|e| e.location.line).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted);
}

#[test]
fn syntax_errors_name_the_position() {
    let errors = parse("[master]\ntitle = \"unterminated\n", Path::new("c.toml")).expect_err("syntax error").0;
    assert!(!errors.is_empty());
    assert_eq!(errors[0].location.line, 2, "{}", errors[0]);
    assert!(errors[0].message.contains("TOML syntax error"));
}

#[test]
fn wrong_types_are_errors_not_panics() {
    let text = format!("{MINIMAL}\n[[builder]]\nname = 5\nworkers = \"w1\"\nfactory = \"f\"\ntags = [1]\n");
    let errors = parse(&text, Path::new("c.toml")).expect_err("rejected").0;
    let all = errors.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(all.contains("builder[0].name: expected a string, found an integer"), "{all}");
    assert!(all.contains("builder[0].workers: expected an array of strings, found a string"), "{all}");
    assert!(all.contains("builder[0].tags[0]: expected a string, found an integer"), "{all}");
}

#[test]
fn webhook_secret_is_required_unless_insecure() {
    let text = MINIMAL.replace("webhook_secret = \"s3cret\"", "repository = \"python/cpython\"");
    let errors = parse(&text, Path::new("c.toml")).expect_err("rejected").0;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key, "github.webhook_secret");
    let insecure = MINIMAL.replace("webhook_secret = \"s3cret\"", "insecure_webhook = true");
    let config = parse(&insecure, Path::new("c.toml")).expect("insecure accepted");
    assert!(config.github.insecure_webhook);
    assert!(config.github.webhook_secret.is_none());
}

#[test]
fn secrets_come_from_literal_env_and_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("hook.secret"), "from-file\n").expect("write");
    let path = dir.path().join("cascade.toml");
    let text = MINIMAL
        .replace("webhook_secret = \"s3cret\"", "webhook_secret = { file = \"hook.secret\" }")
        .replace("password = \"pw\"", "password = { env = \"CASCADE_TEST_WORKER_PW_THAT_IS_UNSET\" }");
    let config = parse(&text, &path).expect("parses");
    let err = config.resolve_secrets().expect_err("env var is unset").0;
    assert_eq!(err.len(), 1);
    assert_eq!(err[0].key, "worker[0].password");
    assert!(err[0].message.contains("CASCADE_TEST_WORKER_PW_THAT_IS_UNSET"));
    assert_eq!(err[0].location.line, 11);

    let text = text.replace("{ env = \"CASCADE_TEST_WORKER_PW_THAT_IS_UNSET\" }", "\"literal-pw\"");
    let config = parse(&text, &path).expect("parses");
    let secrets = config.resolve_secrets().expect("resolves");
    assert_eq!(secrets.webhook_secret.as_ref().map(cascade_config::SecretString::expose), Some("from-file"));
    assert_eq!(secrets.worker_passwords["w1"].expose(), "literal-pw");
    // never printed
    assert!(!format!("{secrets:?}").contains("literal-pw"));
    assert!(!format!("{config:?}").contains("literal-pw"));
}

#[test]
fn scheduler_checks() {
    let text = format!(
        "{MINIMAL}\n[[builder]]\nname = \"B\"\nworkers = [\"w1\"]\nfactory = \"f\"\nbranches = [\"3.x\"]\n\
         [[scheduler]]\nname = \"n\"\nkind = \"periodic\"\nbranch = \"3.x\"\ncron = \"not cron\"\n\
         [[scheduler]]\nname = \"n\"\nkind = \"sometimes\"\n\
         [[scheduler]]\nname = \"b\"\nkind = \"branch\"\nbranch = \"3.x\"\nignore_files = [\"[oops\"]\nbuilders = [\"Nope\"]\n"
    );
    let errors = parse(&text, Path::new("c.toml")).expect_err("rejected").0;
    let all = errors.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(all.contains("scheduler[0].cron: invalid cron expression"), "{all}");
    assert!(all.contains("scheduler[1].kind: unknown scheduler kind \"sometimes\""), "{all}");
    assert!(all.contains("scheduler[2].ignore_files[0]: invalid glob"), "{all}");
    assert!(all.contains("scheduler[2].builders[0]: unknown builder \"Nope\""), "{all}");
}

#[test]
fn sendchange_and_try_logins_share_the_pb_name_space() {
    let tools = "\n[sendchange]\nusers = [{ name = \"change\", password = \"changepw\" }]\n\
         [[builder]]\nname = \"B\"\nworkers = [\"w1\"]\nfactory = \"f\"\nbranches = [\"3.x\"]\n\
         [[scheduler]]\nname = \"try\"\nkind = \"try\"\nusers = [{ name = \"alice\", password = { env = \"CASCADE_TEST_TRY_PW_UNSET\" } }]\n";
    let config = parse(&format!("{MINIMAL}{tools}"), Path::new("c.toml")).expect("parses");
    assert_eq!(config.pb_role("w1"), Some(cascade_config::PbRole::Worker));
    assert_eq!(config.pb_role("change"), Some(cascade_config::PbRole::Sendchange));
    assert_eq!(config.pb_role("alice"), Some(cascade_config::PbRole::Try("try")));
    assert_eq!(config.pb_role("nobody"), None);
    let err = config.resolve_secrets().expect_err("the try password's variable is unset").0;
    assert_eq!(err[0].key, "scheduler[0].users[0].password");

    let clash = tools.replace("\"alice\"", "\"w1\"").replace("\"change\"", "\"w1\"");
    let errors = parse(&format!("{MINIMAL}{clash}"), Path::new("c.toml")).expect_err("rejected").0;
    let all = errors.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(all.contains("sendchange.users[0].name: PB login \"w1\" is already a worker"), "{all}");
    assert!(all.contains("scheduler[0].users[0].name: PB login \"w1\" is already a worker"), "{all}");
    let no_users =
        tools.replace("users = [{ name = \"alice\", password = { env = \"CASCADE_TEST_TRY_PW_UNSET\" } }]", "");
    let errors = parse(&format!("{MINIMAL}{no_users}"), Path::new("c.toml")).expect_err("rejected").0;
    assert!(errors.iter().any(|e| e.key == "scheduler[0].users"), "{errors:?}");
}

#[test]
fn builders_without_branches_keep_their_name() {
    let text = format!("{MINIMAL}\n[[builder]]\nname = \"docs\"\nworkers = [\"w1\"]\nfactory = \"f\"\n");
    let config = parse(&text, Path::new("c.toml")).expect("parses");
    assert_eq!(config.builders[0].name, "docs");
    assert_eq!(config.builders[0].branch, None);
}

#[test]
fn a_scheduler_must_feed_some_builder() {
    let text = format!(
        "{MINIMAL}\n[[branch]]\nname = \"3.14\"\n[[builder]]\nname = \"B\"\nworkers = [\"w1\"]\nfactory = \"f\"\nbranches = [\"3.x\"]\n\
         [[scheduler]]\nname = \"s\"\nkind = \"branch\"\nbranch = \"3.14\"\n"
    );
    let errors = parse(&text, Path::new("c.toml")).expect_err("rejected").0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].key, "scheduler[0].builders");
    assert!(errors[0].message.contains("feeds no builder"));
}

#[test]
fn users_and_auth_rules() {
    let text = format!(
        "{MINIMAL}\n[[user]]\nname = \"ann\"\nroles = [\"core-dev\"]\n[[user]]\nname = \"ann\"\n[[user]]\nname = \"eve\"\npassword_hash = \"plain\"\n\
         [auth]\nadmins = [\"root\"]\nrules = {{ stop = [\"core-dev\"], launch = [\"x\"] }}\n"
    );
    let errors = parse(&text, Path::new("c.toml")).expect_err("rejected").0;
    let all = errors.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(all.contains("user[1].name: duplicate user name \"ann\""), "{all}");
    assert!(all.contains("user[2].password_hash: expected an argon2 hash"), "{all}");
    assert!(all.contains("auth.rules.launch: unknown action"), "{all}");
    assert_eq!(errors.len(), 3, "{all}");

    let ok = format!(
        "{MINIMAL}\n[[user]]\nname = \"ann\"\nroles = [\"core-dev\"]\n[auth]\nadmins = [\"root\"]\nrules = {{ stop = [\"core-dev\"] }}\n"
    );
    let config = parse(&ok, Path::new("c.toml")).expect("parses");
    let roles = |r: &[&str]| r.iter().map(std::string::ToString::to_string).collect::<Vec<_>>();
    assert!(config.auth.allows("ann", &roles(&["core-dev"]), Action::Stop));
    assert!(!config.auth.allows("ann", &roles(&["core-dev"]), Action::Force));
    assert!(config.auth.allows("root", &[], Action::Force), "admins may do everything");
    assert!(config.auth.allows("zed", &roles(&["admin"]), Action::Rebuild), "so may the admin role");
    assert!(!config.auth.allows("bob", &roles(&["triage"]), Action::Stop));
}

#[test]
fn heartbeat_and_housekeeping_have_defaults_and_settings() {
    let config = parse(MINIMAL, Path::new("c.toml")).expect("parses");
    assert_eq!(config.master.heartbeat, Duration::from_secs(10));
    assert_eq!(config.janitor.every, Duration::from_secs(3600));
    assert_eq!(config.janitor.delivery_horizon, Duration::from_secs(7 * 24 * 3600));
    let text = format!(
        "[master]\nheartbeat = \"2s\"\n{MINIMAL}\n[janitor]\nevery = \"5m\"\nevent_horizon = \"1d\"\ndelivery_horizon = 60\n"
    );
    let config = parse(&text, Path::new("c.toml")).expect("parses");
    assert_eq!(config.master.heartbeat, Duration::from_secs(2));
    assert_eq!(config.janitor.every, Duration::from_secs(300));
    assert_eq!(config.janitor.event_horizon, Duration::from_secs(86_400));
    assert_eq!(config.janitor.delivery_horizon, Duration::from_secs(60));
    let bad = format!("{MINIMAL}\n[janitor]\nevery = \"soon\"\nsweep = true\n");
    let all = parse(&bad, Path::new("c.toml")).expect_err("rejected").to_string();
    assert!(all.contains("janitor.every"), "{all}");
    assert!(all.contains("janitor.sweep"), "{all}");
}

#[test]
fn git_modes_and_methods_are_checked_by_name() {
    let text = MINIMAL.replace(
        "steps = [{ command = \"make\" }]",
        "steps = [{ git = { mode = \"shallow\", method = \"wipe\" } }, { git = { method = \"copy\" } }]",
    );
    let errors = parse(&text, Path::new("c.toml")).expect_err("rejected").to_string();
    assert!(errors.contains("unknown mode \"shallow\"; expected \"full\" or \"incremental\""), "{errors}");
    assert!(
        errors.contains("unknown method \"wipe\"; expected \"fresh\", \"clobber\", \"copy\" or \"clean\""),
        "{errors}"
    );
    let ok = MINIMAL.replace("steps = [{ command = \"make\" }]", "steps = [{ git = { method = \"copy\" } }]");
    let config = parse(&ok, Path::new("c.toml")).expect("parses");
    match &config.factories[0].steps[0].kind {
        StepKind::Git(g) => {
            assert_eq!((g.mode, g.method), (cascade_config::GitMode::Full, cascade_config::GitMethod::Copy));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn limits_and_trusted_proxies() {
    let config = parse(MINIMAL, Path::new("c.toml")).expect("parses");
    assert_eq!(config.limits.header_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.store_timeout, Duration::from_secs(5));
    assert!(config.limits.password_checks >= 1 && config.limits.password_checks <= 4);
    assert!(config.master.trusted_proxies.is_empty());
    let text = format!(
        "[master]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]\n{MINIMAL}\n[limits]\nconnections = 50\nconnections_per_address = 5\nheader_timeout = \"2s\"\nworker_login_attempts = 3\n"
    );
    let config = parse(&text, Path::new("c.toml")).expect("parses");
    assert_eq!((config.limits.connections, config.limits.connections_per_address), (50, 5));
    assert_eq!(config.limits.header_timeout, Duration::from_secs(2));
    assert_eq!(config.limits.worker_login_attempts, 3);
    assert_eq!(config.master.trusted_proxies, vec!["127.0.0.1", "10.0.0.0/8"]);
    let bad =
        format!("[master]\ntrusted_proxies = [\"10.0.0.0/40\"]\n{MINIMAL}\n[limits]\nconnections = 0\ntimeouts = 1\n");
    let all = parse(&bad, Path::new("c.toml")).expect_err("rejected").to_string();
    assert!(all.contains("master.trusted_proxies[0]"), "{all}");
    assert!(all.contains("limits.connections: expected a positive number"), "{all}");
    assert!(all.contains("limits.timeouts: unknown key"), "{all}");
}

#[test]
fn reporters_take_kinds_events_filters_and_secrets() {
    use cascade_config::{ChatFormat, ReporterKind};
    use cascade_model::transition::NotifyEvent;
    let text = MINIMAL.replace(
        "webhook_secret = \"s3cret\"",
        "webhook_secret = \"s3cret\"\nrepository = \"python/cpython\"\ntoken = { env = \"CASCADE_TEST_GH\" }",
    ) + "\n[[reporter]]\nkind = \"webhook\"\nurl = \"https://chat.example.org/hook\"\nformat = \"discord\"\ntags = [\"stable\"]\n\
           [[reporter]]\nname = \"st\"\nkind = \"github_status\"\nevents = [\"finished\"]\ngive_up_after = \"10m\"\n";
    let config = parse(&text, Path::new("c.toml")).unwrap_or_else(|e| panic!("{e}"));
    let [chat, st] = &config.reporters[..] else { panic!("two reporters: {:?}", config.reporters) };
    assert_eq!(chat.name, "webhook-1");
    assert!(matches!(chat.kind, ReporterKind::Webhook { format: ChatFormat::Discord, .. }));
    assert_eq!(chat.events, [NotifyEvent::Better, NotifyEvent::Worse, NotifyEvent::Exception], "the default events");
    assert_eq!(chat.tags, ["stable"]);
    assert_eq!((st.events.as_slice(), st.give_up_after), (&[NotifyEvent::Finished][..], Duration::from_secs(600)));
    let context = match &st.kind {
        ReporterKind::GithubStatus { context } => context.clone(),
        other => panic!("{other:?}"),
    };
    assert_eq!(context, "buildbot/{builder}");
    let shown = format!("{:?}", config.reporters);
    assert!(shown.contains("<redacted>") && !shown.contains("chat.example.org"), "a webhook URL is a secret: {shown}");
}

#[test]
fn bad_reporters_are_errors_by_key() {
    let text = MINIMAL.to_string()
        + "\n[[reporter]]\nkind = \"pager\"\n[[reporter]]\nkind = \"webhook\"\nevents = [\"worse\", \"nonsense\"]\n\
           [[reporter]]\nkind = \"github_comment\"\n[[reporter]]\nkind = \"irc\"\nserver = \"irc.libera.chat\"\n\
           [[reporter]]\nkind = \"mail\"\n";
    let errors = parse(&text, Path::new("c.toml")).expect_err("rejected").0;
    let all = errors.iter().map(std::string::ToString::to_string).collect::<Vec<_>>().join("\n");
    assert!(all.contains("reporter[0].kind: unknown reporter kind \"pager\""), "{all}");
    assert!(all.contains("reporter[1].events: unknown event \"nonsense\""), "{all}");
    assert!(all.contains("reporter[1].url: missing required key"), "{all}");
    assert!(all.contains("github.token: a github_comment reporter needs github.token"), "{all}");
    assert!(all.contains("reporter[3].nick: missing required key"), "{all}");
    assert!(all.contains("reporter[3].channels: name at least one channel"), "{all}");
    assert!(all.contains("reporter[3].server: \"irc.libera.chat\" is not host:port"), "{all}");
    assert!(all.contains("reporter[4].smtp: missing required key"), "{all}");
    assert!(all.contains("reporter[4].from: missing required key"), "{all}");
    let plain = MINIMAL.to_string()
        + "\n[[reporter]]\nkind = \"mail\"\nsmtp = \"mx:25\"\nfrom = \"ci@example.org\"\nusername = \"ci\"\npassword = \"pw\"\n";
    let errors = parse(&plain, Path::new("c.toml")).expect_err("rejected").0;
    assert!(errors.iter().any(|e| e.to_string().contains("a password is sent only over STARTTLS")), "{errors:?}");
}

#[test]
fn a_ca_file_is_read_from_the_configs_folder_and_checked_when_the_config_is() {
    use cascade_config::ReporterKind;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
        .expect("ca");
    std::fs::write(dir.path().join("key.pem"), "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n")
        .expect("key");
    let irc = |extra: &str| {
        MINIMAL.to_string()
            + "\n[[reporter]]\nkind = \"irc\"\nserver = \"irc.example.org:6697\"\nnick = \"bot\"\nchannels = [\"#b\"]\n"
            + extra
    };
    let config = parse(&irc("ca_file = \"ca.pem\"\n"), &dir.path().join("c.toml")).unwrap_or_else(|e| panic!("{e}"));
    let ReporterKind::Irc(c) = &config.reporters[0].kind else { panic!("{:?}", config.reporters) };
    assert_eq!(c.ca_file.as_deref(), Some(dir.path().join("ca.pem").as_path()));
    let error = |text: String| parse(&text, &dir.path().join("c.toml")).expect_err("rejected").to_string();
    let missing = error(irc("ca_file = \"nope.pem\"\n"));
    assert!(missing.contains("reporter[0].ca_file: cannot read") && missing.contains("nope.pem"), "{missing}");
    let key = error(irc("ca_file = \"key.pem\"\n"));
    assert!(key.contains("reporter[0].ca_file:") && key.contains("holds no PEM certificate"), "{key}");
    let plain = error(irc("tls = false\nca_file = \"ca.pem\"\n"));
    assert!(plain.contains("a CA file is used only with tls = true"), "{plain}");
    let mail = MINIMAL.to_string()
        + "\n[[reporter]]\nkind = \"mail\"\nsmtp = \"mx:25\"\nfrom = \"ci@example.org\"\nca_file = \"ca.pem\"\n";
    assert!(error(mail).contains("a CA file is used only with starttls = true"));
}

#[test]
fn pull_request_triggers_and_git_options_are_checked_by_key() {
    let text = r#"[github]
insecure_webhook = true
[[branch]]
name = "PR"
[[worker]]
name = "w"
password = "p"
[[factory]]
name = "f"
steps = [{ git = { depth = 0, filter = "blob:some" } }]
[[builder]]
name = "b"
workers = ["w"]
factory = "f"
branches = ["PR"]
[[scheduler]]
name = "prs"
kind = "pull_request"
branch = "PR"
labels = { "ok" = ".*", "broken" = "(" }
comment = "^!buildbot .+"
[[scheduler]]
name = "loose"
kind = "pull_request"
branch = "PR"
comment = "!buildbot (.+)"
[[scheduler]]
name = "nothing"
kind = "pull_request"
branch = "PR"
"#;
    let errors = parse(text, Path::new("c.toml")).expect_err("rejected").to_string();
    for needle in [
        "factory[0].steps[0].git.depth: must be a positive number",
        "factory[0].steps[0].git.filter: \"blob:some\" is not a git filter",
        "scheduler[0].labels.broken: invalid regex",
        "scheduler[0].comment: needs a group",
        "scheduler[1].comment: must start with ^",
        "scheduler[2].labels: a pull_request scheduler needs `labels`, `comment` or both",
    ] {
        assert!(errors.contains(needle), "{needle:?} not in:\n{errors}");
    }
}

#[test]
fn a_builders_branch_label_is_a_tag_unless_turned_off() {
    let builder = |extra: &str| {
        let text = format!(
            "{MINIMAL}\n[[builder]]\nname = \"Linux\"\nworkers = [\"w1\"]\nfactory = \"f\"\nbranches = [\"3.x\"]\ntags = [\"stable\"]\n{extra}"
        );
        cascade_config::parse(&text, Path::new("t.toml")).expect("config").builders.remove(0).tags
    };
    assert_eq!(builder(""), ["stable", "3.x"]);
    assert_eq!(builder("branch_tag = false\n"), ["stable"]);
    let unbranched = format!("{MINIMAL}\n[[builder]]\nname = \"Docs\"\nworkers = [\"w1\"]\nfactory = \"f\"\n");
    let config = cascade_config::parse(&unbranched, Path::new("t.toml")).expect("config");
    assert!(config.builders[0].tags.is_empty(), "no branch, no branch tag");
}
