//! Names derived from configured ones, shared by the master and its workers.

/// A builder's folder on a worker: its name with everything but ASCII
/// letters, digits, `.` and `-` replaced by `_`.
pub fn builder_folder(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_keep_only_safe_characters() {
        assert_eq!(builder_folder("AMD64 Fedora Stable 3.x"), "AMD64_Fedora_Stable_3.x");
        assert_eq!(builder_folder("../etc/ü"), ".._etc__");
    }
}
