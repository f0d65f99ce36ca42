//! Small value checks shared by the reader.

use std::str::FromStr;

use cascade_model::Results;

pub(crate) fn listen_address(s: &str) -> Result<std::net::SocketAddr, std::net::AddrParseError> {
    std::net::SocketAddr::from_str(s)
}

pub(crate) fn database_url(s: &str) -> bool {
    ["sqlite:", "postgres://", "postgresql://"].iter().any(|p| s.starts_with(p))
}

pub(crate) fn repository_name(s: &str) -> bool {
    let mut parts = s.split('/');
    matches!((parts.next(), parts.next(), parts.next()), (Some(o), Some(n), None) if !o.is_empty() && !n.is_empty())
}

pub(crate) fn result_by_name(name: &str) -> Option<Results> {
    Results::ALL.into_iter().find(|r| r.name() == name)
}

pub(crate) fn cron(expr: &str) -> Result<(), String> {
    croner::Cron::from_str(expr).map(|_| ()).map_err(|e| e.to_string())
}

pub(crate) fn address_range(s: &str) -> Result<cascade_model::net::AddressRange, String> {
    cascade_model::net::AddressRange::parse(s)
}

/// A `git clone --filter` spec git accepts: `blob:none`, `blob:limit=<n>[kmg]`, `tree:<depth>`.
pub fn git_filter(f: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if f == "blob:none" {
        return true;
    }
    if let Some(limit) = f.strip_prefix("blob:limit=") {
        let n = limit.strip_suffix(['k', 'm', 'g']).unwrap_or(limit);
        return digits(n);
    }
    f.strip_prefix("tree:").is_some_and(digits)
}
