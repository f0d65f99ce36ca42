//! Worker and user passwords: argon2id hashes in PHC format, and the gate
//! every check goes through: each costs about 19 MiB for a moment, so only a
//! few run at once, whatever arrives.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::PasswordHasher;
use argon2::password_hash::phc::PasswordHash;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("the stored hash is not a valid argon2 PHC string: {0}")]
    BadHash(String),
}

pub fn hash(password: &str) -> Result<String, PasswordError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches `phc`.
pub fn verify(password: &str, phc: &str) -> Result<bool, PasswordError> {
    verify_in(password, phc, &mut Vec::new())
}

/// The most memory a stored hash may ask of a check (argon2's `m` in KiB):
/// a hash that asks for more is refused rather than run.
const MAX_COST_KIB: usize = 256 * 1024;

/// `verify`, with argon2's working memory in `scratch` (grown to fit, kept
/// by the caller for the next check). Checks that each allocate 19 MiB
/// leave the allocator holding far more than the checks running at once
/// (600 wrong logins left 12.5 GiB); reused memory holds exactly that.
/// The outputs are compared in constant time.
fn verify_in(password: &str, phc: &str, scratch: &mut Vec<argon2::Block>) -> Result<bool, PasswordError> {
    let bad = |e: &dyn std::fmt::Display| PasswordError::BadHash(e.to_string());
    let parsed = PasswordHash::new(phc).map_err(|e| bad(&e))?;
    let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
        return Err(PasswordError::BadHash("no salt or no hash".into()));
    };
    let params = argon2::Params::try_from(&parsed).map_err(|e| bad(&e))?;
    let algorithm = argon2::Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| bad(&e))?;
    let version = parsed.version.map(argon2::Version::try_from).transpose().map_err(|e| bad(&e))?.unwrap_or_default();
    let blocks = params.block_count();
    if blocks > MAX_COST_KIB {
        return Err(PasswordError::BadHash(format!("a memory cost of {blocks} KiB is more than this master allows")));
    }
    if scratch.len() < blocks {
        scratch.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt.as_ref(), &mut out, &mut scratch[..])
        .map_err(|e| bad(&e))?;
    Ok(bool::from(subtle::ConstantTimeEq::ct_eq(out.as_slice(), expected.as_bytes())))
}

/// Busy: every slot for a check stayed taken while this one waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks at once; try again shortly")]
pub struct Busy;

/// Bounds how many argon2 checks run at once, and how long one waits.
pub struct Gate {
    permits: Arc<tokio::sync::Semaphore>,
    slots: usize,
    wait: Duration,
    /// Working memory, one per slot in use, kept between checks.
    scratch: Arc<parking_lot::Mutex<Vec<Vec<argon2::Block>>>>,
}

impl Gate {
    /// `slots` checks at once (one per core is plenty); a check waits at
    /// most `wait` for a slot.
    pub fn new(slots: usize, wait: Duration) -> Gate {
        let slots = slots.max(1);
        let scratch = Arc::new(parking_lot::Mutex::new(Vec::new()));
        Gate { permits: Arc::new(tokio::sync::Semaphore::new(slots)), slots, wait, scratch }
    }

    /// A gate with one slot per core, at most four.
    pub fn for_this_machine() -> Gate {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Gate::new(cores.min(4), Duration::from_secs(2))
    }

    /// Whether `password` matches `phc`, off the async threads. `phc`
    /// `None` (an unknown name) costs the same as a real check and fails, so
    /// timing does not tell names apart.
    pub async fn verify(&self, password: &str, phc: Option<&str>) -> Result<bool, Busy> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        let (password, phc, pool) = (password.to_string(), phc.map(str::to_string), self.scratch.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut scratch = pool.lock().pop().unwrap_or_default();
            let matched = match phc {
                Some(h) => verify_in(&password, &h, &mut scratch).unwrap_or(false),
                None => {
                    let _ = verify_in(&password, dummy_hash(), &mut scratch);
                    false
                }
            };
            pool.lock().push(scratch);
            matched
        });
        Ok(checked.await.unwrap_or(false))
    }

    /// Checks running (or holding a slot) now.
    pub fn running(&self) -> usize {
        self.slots - self.permits.available_permits()
    }
}

/// An argon2 hash of a random password, checked for unknown names.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash(&uuid::Uuid::new_v4().to_string()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ_by_salt() {
        let a = hash("example-password").expect("hash");
        let b = hash("example-password").expect("hash");
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b, "salted");
        assert!(verify("example-password", &a).expect("verify"));
        assert!(!verify("wrong", &a).expect("verify"));
        assert!(verify("x", "not a hash").is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_gate_runs_a_few_checks_at_once_and_turns_the_rest_away_quickly() {
        let gate = Arc::new(Gate::new(2, Duration::from_millis(50)));
        let phc = hash("right").expect("hash");
        let mut tasks = Vec::new();
        for _ in 0..40 {
            let (gate, phc) = (gate.clone(), phc.clone());
            tasks.push(tokio::spawn(async move { gate.verify("wrong", Some(&phc)).await }));
        }
        let mut most = 0;
        while tasks.iter().any(|t| !t.is_finished()) {
            most = most.max(gate.running());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(most <= 2, "at most two at once, saw {most}");
        let mut busy = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(ok) => assert!(!ok),
                Err(Busy) => busy += 1,
            }
        }
        assert!(busy > 0, "the rest are turned away rather than queued for long");
        assert!(gate.scratch.lock().len() <= 2, "working memory is kept per slot, not per check");
        assert_eq!(gate.verify("right", Some(&phc)).await, Ok(true));
        assert_eq!(gate.verify("right", None).await, Ok(false), "an unknown name fails");
    }
}
