//! From a failed regrtest run to what a developer types: the command with
//! the build's flags, its seed and the failed tests, and the `--fromfile`
//! order file to bisect.

/// regrtest options that take a value as the next word.
const TAKES_VALUE: [&str; 30] = [
    "-j",
    "--multiprocess",
    "-u",
    "--use",
    "-R",
    "--huntrleaks",
    "-m",
    "--match",
    "-i",
    "--ignore",
    "--matchfile",
    "--ignorefile",
    "-f",
    "--fromfile",
    "--randseed",
    "--timeout",
    "--testdir",
    "--junit-xml",
    "-M",
    "--memlimit",
    "--tempdir",
    "-S",
    "--start",
    "-D",
    "--coverdir",
    "-t",
    "--threshold",
    "-p",
    "--python",
    "--prioritize",
];

/// Options dropped from the build's command: they name the build's files,
/// its seed or its test selection, which the reproduction replaces.
const DROPPED: [&str; 6] = ["--junit-xml", "-f", "--fromfile", "--randseed", "-S", "--start"];

/// The command that re-runs `tests` as the build's `command` ran them: its
/// interpreter and flags (`./python` for an interpreter called `python`),
/// `--randseed` with the build's seed, and the tests. `None` when the
/// command does not run `-m test`.
pub fn command(command: &str, seed: Option<&str>, tests: &[&str]) -> Option<String> {
    let words = split(command)?;
    let at = words.windows(2).position(|w| w[0] == "-m" && w[1] == "test")?;
    let mut out: Vec<String> = words[..at].to_vec();
    if let Some(interpreter) = out.first_mut() {
        let base = interpreter.rsplit(['/', '\\']).next().unwrap_or(interpreter);
        if base == "python" || base == "python.exe" {
            *interpreter = format!("./{base}");
        }
    }
    out.extend(["-m".to_string(), "test".to_string()]);
    let mut rest = words[at + 2..].iter();
    while let Some(word) = rest.next() {
        let (flag, inline) = word.split_once('=').map_or((word.as_str(), false), |(f, _)| (f, true));
        let is_option = word.starts_with('-');
        let takes_value = is_option && !inline && TAKES_VALUE.contains(&flag);
        let value = if takes_value { rest.next() } else { None };
        if !is_option || DROPPED.contains(&flag) {
            continue;
        }
        out.push(word.clone());
        out.extend(value.cloned());
    }
    if let Some(seed) = seed {
        out.extend(["--randseed".to_string(), seed.to_string()]);
    }
    out.extend(tests.iter().map(|t| (*t).to_string()));
    Some(out.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" "))
}

/// The `--fromfile` content for bisecting `failing`: the tests that ran
/// before it in its process, then it. With `-j` each file runs in a fresh
/// worker process, so only the file itself; serially, every file before it.
pub fn order_file(order: &[String], parallel: bool, failing: &str) -> Option<String> {
    let position = order.iter().position(|f| f == failing)?;
    let names: Vec<&str> =
        if parallel { vec![failing] } else { order[..=position].iter().map(String::as_str).collect() };
    Some(names.iter().map(|n| format!("{n}\n")).collect())
}

/// Words of a command line: whitespace-separated, with '…' and "…" quoting
/// and backslash escapes. `None` for an unclosed quote.
fn split(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => word.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => word.push(chars.next()?),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next()?);
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// A word as a POSIX shell reads it back: quoted only when it must be.
fn quote(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain { word.to_string() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: Option<&str> = Some("2711784543");

    #[test]
    fn the_builds_flags_with_the_seed_and_the_failed_tests() {
        let build = "/srv/cpython/python -W default -bb -E -m test --slow-ci --testdir /tmp/t --junit-xml /tmp/r.xml \
             --randseed 5 -j2 -uall test_a test_b";
        assert_eq!(
            command(build, SEED, &["test_b"]).as_deref(),
            Some(
                "./python -W default -bb -E -m test --slow-ci --testdir /tmp/t -j2 -uall --randseed 2711784543 test_b"
            )
        );
    }

    #[test]
    fn quoting_survives_the_round_trip() {
        let cmd =
            command(r#"python3 -m test --timeout=1200 -m 'test_x*' "a b""#, SEED, &["test_a"]).expect("a command");
        assert_eq!(cmd, "python3 -m test --timeout=1200 -m 'test_x*' --randseed 2711784543 test_a");
        assert_eq!(split(&cmd).map(|w| w.len()), Some(9));
        assert!(command("python -m 'unclosed", SEED, &[]).is_none());
        assert!(command("make test", SEED, &[]).is_none());
    }

    #[test]
    fn order_files_follow_the_process() {
        let order: Vec<String> = ["test_a", "test_b", "test_c"].map(String::from).to_vec();
        assert_eq!(order_file(&order, false, "test_b").as_deref(), Some("test_a\ntest_b\n"));
        assert_eq!(order_file(&order, true, "test_b").as_deref(), Some("test_b\n"));
        assert_eq!(order_file(&order, false, "test_z"), None);
    }
}
