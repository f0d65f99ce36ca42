/// Unix seconds now. Everything below the edges takes time as an argument,
/// so tests can say what time it is.
pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}
