//! The query string of an admin listing: exact-match filters, `before` (Unix ms) and `limit`,
//! with a 400 naming any parameter the listing does not take.

use crate::error::RelayError;
use crate::support::url::query_pairs;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    pub filters: std::collections::BTreeMap<String, String>,
    pub before: Option<i64>,
    pub limit: u32,
}

impl Listing {
    pub fn filter(&self, name: &str) -> Option<String> {
        self.filters.get(name).cloned()
    }
}

/// Parses a listing's query string, accepting only the named filters (400 naming any other).
pub fn parse_listing(query: &str, filters: &[&str]) -> Result<Listing, RelayError> {
    let mut listing = Listing {
        filters: Default::default(),
        before: None,
        limit: 100,
    };
    let bad = |param: &str, message: &str| RelayError::invalid_value(param, message);
    for (name, value) in query_pairs(query) {
        match name.as_str() {
            "before" => {
                listing.before = Some(
                    value
                        .parse()
                        .map_err(|_| bad("before", "must be Unix milliseconds"))?,
                )
            }
            "limit" => {
                listing.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=1000).contains(l))
                    .ok_or_else(|| bad("limit", "must be between 1 and 1000"))?
            }
            f if filters.contains(&f) => {
                listing.filters.insert(name, value);
            }
            _ => {
                let expected = format!(
                    "unknown filter; expected {}, before, limit",
                    filters.join(", ")
                );
                return Err(bad(&name, &expected));
            }
        }
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_parse_filters_before_and_limit() {
        let l = parse_listing("tenant_id=t1&before=5&limit=10", &["tenant_id", "key_id"]).unwrap();
        assert_eq!(
            (l.filter("tenant_id"), l.filter("key_id"), l.before, l.limit),
            (Some("t1".into()), None, Some(5), 10)
        );
        assert_eq!(parse_listing("", &["a"]).unwrap().limit, 100);
        assert_eq!(
            parse_listing("limit=0", &["a"]).unwrap_err().param(),
            Some("limit")
        );
        assert_eq!(
            parse_listing("before=x", &["a"]).unwrap_err().param(),
            Some("before")
        );
        let e = parse_listing("key=1", &["tenant_id", "key_id"]).unwrap_err();
        assert_eq!(e.param(), Some("key"));
        assert!(e
            .message()
            .contains("expected tenant_id, key_id, before, limit"));
    }
}
