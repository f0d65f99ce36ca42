//! Query strings of Buildbot's Data API: `field=value`, `field__op=value`,
//! `order=-field`, `limit`, `offset`, `field=` projection; and Cascade's
//! `total=1`, which counts the rows a page was taken from.

use cascade_store::{Filter, ListQuery, Op, Order};

use crate::error::HttpError;

/// A parsed list query and the fields to keep in each object (empty: all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub query: ListQuery,
    pub fields: Vec<String>,
    /// Build properties to inline (`property=name`, `property=*` for all).
    pub properties: Vec<String>,
}

pub fn parse(raw: Option<&str>) -> Result<Parsed, HttpError> {
    let pairs: Vec<(String, String)> = match raw {
        None | Some("") => Vec::new(),
        Some(q) => {
            serde_urlencoded::from_str(q).map_err(|e| HttpError::bad_request(format!("malformed query string: {e}")))?
        }
    };
    let mut parsed = Parsed::default();
    let mut count = false;
    let int = |name: &str, v: &str| -> Result<i64, HttpError> {
        v.parse::<i64>().map_err(|_| HttpError::bad_request(format!("{name} must be an integer, got {v:?}")))
    };
    for (key, value) in pairs {
        // What no store can compare with: PostgreSQL refuses NUL in text.
        if key.contains('\0') || value.contains('\0') {
            return Err(HttpError::bad_request(format!("{}: contains a NUL character", key.replace('\0', ""))));
        }
        match key.as_str() {
            "limit" => parsed.query.limit = Some(int("limit", &value)?),
            "offset" => parsed.query.offset = Some(int("offset", &value)?),
            "order" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    let (field, descending) = match part.strip_prefix('-') {
                        Some(f) => (f, true),
                        None => (part, false),
                    };
                    parsed.query.order.push(Order { field: field.to_string(), descending });
                }
            }
            // Cascade's own: count the matching rows for `meta.total` (capped).
            "total" => count = matches!(value.as_str(), "1" | "true" | "yes"),
            "field" => parsed.fields.extend(value.split(',').filter(|f| !f.is_empty()).map(str::to_string)),
            "property" => parsed.properties.extend(value.split(',').filter(|f| !f.is_empty()).map(str::to_string)),
            _ => {
                let (field, op) = match key.split_once("__") {
                    Some((f, op)) => {
                        (f, Op::parse(op).ok_or_else(|| HttpError::bad_request(format!("unknown operator {op:?}")))?)
                    }
                    None => (key.as_str(), Op::Eq),
                };
                let values: Vec<String> =
                    if op == Op::In { value.split(',').map(str::to_string).collect() } else { vec![value] };
                // Repeating `field=a&field=b` means "a or b", as in Buildbot.
                match parsed
                    .query
                    .filters
                    .iter_mut()
                    .find(|f| f.field == field && f.op == op && matches!(op, Op::Eq | Op::In))
                {
                    Some(existing) => existing.values.extend(values),
                    None => parsed.query.filters.push(Filter { field: field.to_string(), op, values }),
                }
            }
        }
    }
    // Counting is the one part of a page that grows with the history: a
    // page is counted only when asked, or when the count is all it asks for.
    parsed.query.skip_count = !(count || parsed.query.limit == Some(0));
    let values: usize = parsed.query.filters.iter().map(|f| f.values.len()).sum::<usize>()
        + parsed.query.order.len()
        + parsed.fields.len()
        + parsed.properties.len();
    if values > MAX_VALUES {
        return Err(HttpError::bad_request(format!("too many values in the query: {values} (at most {MAX_VALUES})")));
    }
    Ok(parsed)
}

/// Filter values, sort keys and fields one query may name: each is a bound
/// parameter or a clause, and SQLite takes at most 32,766 parameters (and
/// slows long before), so no client may ask for thousands.
pub const MAX_VALUES: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_names_a_bounded_number_of_values() {
        let many = format!("state_string__in={}", vec!["x"; MAX_VALUES + 1].join(","));
        let err = parse(Some(&many)).expect_err("refused");
        assert!(err.message().contains("too many values"), "{}", err.message());
        let enough = format!("state_string__in={}", vec!["x"; MAX_VALUES].join(","));
        assert!(parse(Some(&enough)).is_ok());
    }

    #[test]
    fn nul_is_refused_by_name() {
        let e = parse(Some("branch=%00")).expect_err("refused");
        assert_eq!(
            (e.status(), e.message()),
            (axum::http::StatusCode::BAD_REQUEST, "branch: contains a NUL character")
        );
        assert!(parse(Some("bran%00ch=x")).is_err());
    }

    #[test]
    fn parses_filters_orders_and_paging() {
        let p = parse(Some("builderid=3&builderid=4&complete=false&submitted_at__gt=10&order=-buildrequestid&limit=5&offset=10&field=buildrequestid&field=builderid&property=*"))
            .expect("parses");
        assert_eq!(p.query.limit, Some(5));
        assert_eq!(p.query.offset, Some(10));
        assert_eq!(p.query.order, vec![Order { field: "buildrequestid".into(), descending: true }]);
        assert_eq!(p.fields, vec!["buildrequestid", "builderid"]);
        assert_eq!(p.query.filters.len(), 3);
        assert_eq!(p.query.filters[0].values, vec!["3", "4"]);
        assert_eq!(p.query.filters[2].op, Op::Gt);
    }

    #[test]
    fn a_page_is_counted_only_when_asked_or_when_the_count_is_all_it_asks() {
        let counted = |q: &str| !parse(Some(q)).expect("parses").query.skip_count;
        assert!(!counted("limit=50&order=-buildid"));
        assert!(counted("limit=50&total=1"));
        assert!(counted("limit=50&total=true"));
        assert!(!counted("limit=50&total=0"));
        assert!(counted("limit=0"), "limit=0 asks for nothing but the count");
        let p = parse(Some("total=1&builderid=3")).expect("parses");
        assert_eq!(p.query.filters.len(), 1, "total is not a filter");
    }

    #[test]
    fn rejects_nonsense() {
        assert!(parse(Some("limit=ten")).is_err());
        assert!(parse(Some("builderid__near=3")).is_err());
        let empty = parse(None).expect("empty");
        assert_eq!((empty.query.filters.len(), empty.query.limit, empty.fields.len()), (0, None, 0));
    }
}
