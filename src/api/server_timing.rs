//! The W3C `Server-Timing` header of a relay response: what the request waited on (a limiter,
//! D1, KV, a channel's health object, the upstream) and when its first byte was ready, so a
//! user sees it in the browser's devtools and a test can assert that a warm request waited on
//! no storage at all. Pure: the edge measures and passes durations in.

/// The waits a response can name. Storage waits are listed only when they happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// A key's or tenant's limiter Durable Object (a lease, a strict decision).
    Limiter,
    /// D1 (key grant, channel).
    D1,
    /// KV (model map, model groups, prices).
    Kv,
    /// A channel's health Durable Object (admitting a half-open breaker's probe).
    Health,
    /// The upstream, until its response headers.
    Upstream,
    /// The response cache (opt-in).
    Cache,
}

impl Wait {
    pub fn name(&self) -> &'static str {
        match self {
            Wait::Limiter => "limiter",
            Wait::D1 => "d1",
            Wait::Kv => "kv",
            Wait::Health => "health",
            Wait::Upstream => "upstream",
            Wait::Cache => "cache",
        }
    }

    /// A wait on the relay's own storage (not the upstream's work).
    pub fn is_storage(&self) -> bool {
        match self {
            Wait::Limiter | Wait::D1 | Wait::Kv | Wait::Health | Wait::Cache => true,
            Wait::Upstream => false,
        }
    }
}

/// The waits of one request, summed per kind (several D1 reads are one `d1` entry with their
/// total and count), in the order they first happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerTiming {
    waits: Vec<(Wait, f64, u32)>,
}

impl ServerTiming {
    pub fn add(&mut self, wait: Wait, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        match self.waits.iter_mut().find(|(w, _, _)| *w == wait) {
            Some((_, total, n)) => {
                *total += ms;
                *n += 1;
            }
            None => self.waits.push((wait, ms, 1)),
        }
    }

    /// Did the request wait on any storage?
    pub fn waited_on_storage(&self) -> bool {
        self.waits.iter().any(|(w, _, _)| w.is_storage())
    }

    /// The header value: each wait as `name;dur=ms` (with `desc="n calls"` when there were
    /// several), then `ttfb` — the time from the request's arrival to its response being
    /// handed to the runtime — and `total` for the relay's whole part.
    pub fn header_value(&self, ttfb_ms: f64) -> String {
        let mut out = String::new();
        for (wait, ms, n) in &self.waits {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(wait.name());
            out.push_str(&format!(";dur={ms:.1}"));
            if *n > 1 {
                out.push_str(&format!(";desc=\"{n} calls\""));
            }
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        let ttfb = if ttfb_ms.is_finite() {
            ttfb_ms.max(0.0)
        } else {
            0.0
        };
        out.push_str(&format!("ttfb;dur={ttfb:.1}"));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_sum_per_kind_in_first_order() {
        let mut t = ServerTiming::default();
        t.add(Wait::D1, 1.25);
        t.add(Wait::Upstream, 30.0);
        t.add(Wait::D1, 0.75);
        t.add(Wait::Kv, f64::NAN);
        assert_eq!(
            t.header_value(35.04),
            "d1;dur=2.0;desc=\"2 calls\", upstream;dur=30.0, kv;dur=0.0, ttfb;dur=35.0"
        );
        assert!(t.waited_on_storage());
    }

    #[test]
    fn a_warm_request_names_only_the_upstream() {
        let mut t = ServerTiming::default();
        t.add(Wait::Upstream, 4.0);
        assert!(!t.waited_on_storage());
        assert_eq!(t.header_value(5.0), "upstream;dur=4.0, ttfb;dur=5.0");
        assert_eq!(ServerTiming::default().header_value(-1.0), "ttfb;dur=0.0");
    }
}
