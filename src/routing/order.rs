//! The order a request tries its candidate routes in: strictly by priority; within a priority,
//! nearest to the caller first (in bands, so near-equal regions still share by weight); then a
//! weighted random draw, with standbys (weight 0) last. Also the explanation the response's
//! `x-relay-region` header gives.

use serde::Serialize;

use crate::routing::below;
use crate::routing::geo::{
    band_of_km, caller_position, haversine_km, region_info, Caller, CallerBasis, Position,
};

// ---- candidates and the order of attempts -----------------------------------------------

/// One channel that could serve a request, as the relay sees it after resolving the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub channel_id: &'a str,
    /// Larger is tried first; a lower priority is reached only when every higher one failed or
    /// is unusable.
    pub priority: i32,
    /// Relative share of traffic within a priority; 0 makes the channel a standby.
    pub weight: u32,
    /// A name `region_info` knows (`eu-central`, `us-east-1`, `westeurope`…); unknown names
    /// and `None` both mean "somewhere unknown".
    pub region: Option<&'a str>,
}

/// The order in which to try `cands`: indices of the usable ones, highest priority first; within
/// a priority, the nearest distance band first (when the caller's position is known), and within
/// a band a weighted random order drawn without replacement, standbys (weight 0) last in a
/// uniform random order. Unlocated candidates form the farthest band when the caller is located.
/// The same draws give the same order.
pub fn attempt_order(
    cands: &[Candidate],
    caller: &Caller,
    usable: impl Fn(usize) -> bool,
    draw: &mut impl FnMut() -> u32,
) -> Vec<usize> {
    let origin = caller_position(caller);
    let mut keyed: Vec<(i32, u32, usize)> = cands
        .iter()
        .enumerate()
        .filter(|(i, _)| usable(*i))
        .map(|(i, c)| (c.priority, geo_band(c.region, origin.as_ref()), i))
        .collect();
    // Index as the last key makes the tiers' starting order, and so the result, independent of
    // how the sort breaks ties.
    keyed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut order = Vec::with_capacity(keyed.len());
    for tier in keyed.chunk_by(|a, b| a.0 == b.0 && a.1 == b.1) {
        let (mut active, mut standby): (Vec<Weighted>, Vec<Weighted>) = tier
            .iter()
            .map(|&(_, _, i)| (i, cands.get(i).map_or(0, |c| c.weight)))
            .partition(|&(_, w)| w > 0);
        shuffle_weighted(&mut active, draw, &mut order);
        // Standbys share the load evenly among themselves once they are needed.
        standby.iter_mut().for_each(|s| s.1 = 1);
        shuffle_weighted(&mut standby, draw, &mut order);
    }
    order
}

/// A candidate's index and its weight.
type Weighted = (usize, u32);

/// Weighted choice without replacement: each step picks with probability weight / remaining
/// total. One draw per step; a last remaining entry takes none.
fn shuffle_weighted(
    pool: &mut Vec<Weighted>,
    draw: &mut impl FnMut() -> u32,
    out: &mut Vec<usize>,
) {
    while !pool.is_empty() {
        let pos = if pool.len() == 1 {
            0
        } else {
            let total: u64 = pool.iter().map(|&(_, w)| u64::from(w)).sum();
            let mut r = below(draw(), total);
            pool.iter()
                .position(|&(_, w)| {
                    let w = u64::from(w);
                    if r < w {
                        true
                    } else {
                        r -= w;
                        false
                    }
                })
                .unwrap_or(pool.len() - 1)
        };
        out.push(pool.remove(pos).0);
    }
}

/// Band of unlocated candidates: after every located one.
const UNLOCATED_BAND: u32 = u32::MAX;

fn geo_band(region: Option<&str>, origin: Option<&Position>) -> u32 {
    let Some(origin) = origin else {
        return 0;
    };
    match region.and_then(region_info) {
        Some(r) => band_of_km(haversine_km(origin.lat_lon(), r.lat_lon())),
        None => UNLOCATED_BAND,
    }
}

/// Why a candidate sat where it did, for `x-relay-region` and logs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Placement<'a> {
    /// The region as the channel names it.
    pub region: Option<&'a str>,
    /// From the caller's position to the region; `None` when either is unknown.
    pub distance_km: Option<u32>,
    pub band: Option<u32>,
    /// What the caller's position was taken from; `None` when it is unknown.
    pub caller: Option<CallerBasis>,
}

impl Placement<'_> {
    /// `eu-central; km=412; band=0; caller=country`, or `none; caller=unknown`. The region is
    /// operator text, so anything but `[A-Za-z0-9._-]` is replaced to keep the header valid.
    pub fn header_value(&self) -> String {
        let region: String = match self.region {
            Some(r) => r
                .chars()
                .take(64)
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
            None => "none".into(),
        };
        let mut out = region;
        if let Some(km) = self.distance_km {
            out.push_str(&format!("; km={km}"));
        }
        if let Some(band) = self.band {
            out.push_str(&format!("; band={band}"));
        }
        let caller = self.caller.map_or("unknown", |c| c.as_str());
        out.push_str(&format!("; caller={caller}"));
        out
    }
}

/// Where `cand` stands relative to `caller`: the facts `attempt_order` ordered it by.
pub fn explain<'a>(cand: &Candidate<'a>, caller: &Caller) -> Placement<'a> {
    let origin = caller_position(caller);
    let distance = origin
        .as_ref()
        .zip(cand.region.and_then(region_info))
        .map(|(o, r)| haversine_km(o.lat_lon(), r.lat_lon()));
    Placement {
        region: cand.region,
        // `as` saturates, and distances on Earth are far below u32::MAX anyway.
        distance_km: distance.map(|km| km.round() as u32),
        band: distance.map(band_of_km),
        caller: origin.map(|o| o.basis),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::geo::region_allowed;
    use crate::routing::xorshift;

    fn cand(
        id: &'static str,
        priority: i32,
        weight: u32,
        region: Option<&'static str>,
    ) -> Candidate<'static> {
        Candidate {
            channel_id: id,
            priority,
            weight,
            region,
        }
    }

    fn nowhere() -> Caller {
        Caller::default()
    }

    fn from_country(code: &str) -> Caller {
        Caller {
            country: Some(code.into()),
            ..Caller::default()
        }
    }

    /// How often each candidate comes first over `n` orders.
    fn first_counts(cands: &[Candidate], caller: &Caller, n: usize) -> Vec<usize> {
        let mut draw = xorshift(0x9E37_79B9);
        let mut counts = vec![0; cands.len()];
        for _ in 0..n {
            let order = attempt_order(cands, caller, |_| true, &mut draw);
            assert_eq!(order.len(), cands.len());
            counts[order[0]] += 1;
        }
        counts
    }

    #[test]
    fn weights_share_first_place_within_tolerance() {
        let cands = [
            cand("a", 0, 1, None),
            cand("b", 0, 2, None),
            cand("c", 0, 7, None),
        ];
        let counts = first_counts(&cands, &nowhere(), 10_000);
        for (count, expected) in counts.iter().zip([1_000.0, 2_000.0, 7_000.0]) {
            assert!((*count as f64 - expected).abs() < 250.0, "{counts:?}");
        }
        // Without replacement: second place given `c` first splits 1:2 between a and b.
        let mut draw = xorshift(7);
        let (mut a_second, mut b_second) = (0, 0);
        for _ in 0..10_000 {
            let order = attempt_order(&cands, &nowhere(), |_| true, &mut draw);
            if order[0] == 2 {
                match order[1] {
                    0 => a_second += 1,
                    _ => b_second += 1,
                }
            }
        }
        let share = f64::from(a_second) / f64::from(a_second + b_second);
        assert!((share - 1.0 / 3.0).abs() < 0.03, "{share}");
    }

    #[test]
    fn priority_is_strict_whatever_the_weights() {
        let cands = [
            cand("low", 1, 1_000_000, None),
            cand("high", 5, 1, None),
            cand("mid", 3, 0, None),
            cand("high2", 5, 1, None),
        ];
        let mut draw = xorshift(3);
        for _ in 0..1_000 {
            let order = attempt_order(&cands, &nowhere(), |_| true, &mut draw);
            let mut tail = order[2..].to_vec();
            assert!(
                order[..2].contains(&1) && order[..2].contains(&3),
                "{order:?}"
            );
            tail.truncate(2);
            assert_eq!(tail, vec![2, 0]);
        }
    }

    #[test]
    fn standbys_come_after_every_weighted_candidate_of_their_tier() {
        let cands = [
            cand("s1", 0, 0, None),
            cand("w1", 0, 1, None),
            cand("s2", 0, 0, None),
            cand("w2", 0, 1, None),
        ];
        let mut draw = xorshift(11);
        let mut s1_first_of_standbys = 0;
        for _ in 0..2_000 {
            let order = attempt_order(&cands, &nowhere(), |_| true, &mut draw);
            let mut head = order[..2].to_vec();
            head.sort();
            assert_eq!(head, vec![1, 3]);
            if order[2] == 0 {
                s1_first_of_standbys += 1;
            }
        }
        // Standbys share evenly among themselves.
        assert!(
            (800..1_200).contains(&s1_first_of_standbys),
            "{s1_first_of_standbys}"
        );
        // Only standbys: still served.
        let only = [cand("s", 0, 0, None)];
        assert_eq!(
            attempt_order(&only, &nowhere(), |_| true, &mut draw),
            vec![0]
        );
    }

    #[test]
    fn unusable_candidates_are_left_out_and_order_is_replayable() {
        let cands = [
            cand("a", 0, 1, None),
            cand("b", 0, 1, None),
            cand("c", 1, 1, None),
        ];
        let mut draw = xorshift(5);
        for _ in 0..100 {
            let order = attempt_order(&cands, &nowhere(), |i| i != 2, &mut draw);
            assert!(order == vec![0, 1] || order == vec![1, 0]);
        }
        assert!(attempt_order(&cands, &nowhere(), |_| false, &mut draw).is_empty());
        assert!(attempt_order(&[], &nowhere(), |_| true, &mut draw).is_empty());
        let a = attempt_order(&cands, &nowhere(), |_| true, &mut xorshift(42));
        let b = attempt_order(&cands, &nowhere(), |_| true, &mut xorshift(42));
        assert_eq!(a, b);
    }

    #[test]
    fn a_caller_prefers_the_nearest_band() {
        let cands = [
            cand("us", 0, 100, Some("us-east")),
            cand("eu", 0, 1, Some("eu-central")),
        ];
        let de = from_country("DE");
        assert_eq!(first_counts(&cands, &de, 1_000), vec![0, 1_000]);
        // Unknown location: pure weights.
        let counts = first_counts(&cands, &nowhere(), 10_000);
        assert!((9_800..=10_000).contains(&counts[0]), "{counts:?}");
        // Coordinates beat the country; the colo beats the country; the continent is a last resort.
        let in_virginia = Caller {
            country: Some("DE".into()),
            lat_lon: Some((38.0, -78.0)),
            ..Caller::default()
        };
        assert_eq!(first_counts(&cands, &in_virginia, 100), vec![100, 0]);
        let via_iad = Caller {
            country: Some("DE".into()),
            colo: Some("iad".into()),
            ..Caller::default()
        };
        assert_eq!(first_counts(&cands, &via_iad, 100), vec![100, 0]);
        let europe = Caller {
            country: Some("XX".into()),
            continent: Some("EU".into()),
            lat_lon: Some((0.0, 0.0)),
            ..Caller::default()
        };
        assert_eq!(first_counts(&cands, &europe, 100), vec![0, 100]);
        assert_eq!(
            caller_position(&europe).map(|p| p.basis),
            Some(CallerBasis::Continent)
        );
    }

    #[test]
    fn near_equal_regions_stay_weight_balanced() {
        // From Berlin, Frankfurt (~420 km) and Dublin (~1320 km) share band 0.
        let cands = [
            cand("fra", 0, 1, Some("eu-central-1")),
            cand("dub", 0, 3, Some("eu-west-1")),
            cand("iad", 0, 1_000, Some("us-east-1")),
        ];
        let counts = first_counts(&cands, &from_country("DE"), 10_000);
        assert_eq!(counts[2], 0);
        assert!((2_250..2_750).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn unlocated_candidates_follow_located_ones_only_for_a_located_caller() {
        let cands = [
            cand("x", 0, 1_000, None),
            cand("far", 0, 1, Some("au")),
            cand("odd", 0, 1_000, Some("mars-north-1")),
        ];
        let mut draw = xorshift(9);
        for _ in 0..200 {
            let order = attempt_order(&cands, &from_country("FR"), |_| true, &mut draw);
            assert_eq!(order[0], 1);
        }
        let counts = first_counts(&cands, &nowhere(), 10_000);
        assert!(counts[1] < 50, "{counts:?}");
        // No candidate located: geo changes nothing even for a located caller.
        let plain = [cand("a", 0, 1, None), cand("b", 0, 1, None)];
        let counts = first_counts(&plain, &from_country("FR"), 10_000);
        assert!((4_700..5_300).contains(&counts[0]), "{counts:?}");
    }

    #[test]
    fn explain_says_where_and_how_far() {
        let c = cand("eu", 0, 1, Some("eu-central"));
        let p = explain(&c, &from_country("DE"));
        assert_eq!(p.band, Some(0));
        assert!((400..450).contains(&p.distance_km.unwrap_or(0)), "{p:?}");
        assert!(p.header_value().starts_with("eu-central; km="));
        assert!(p.header_value().ends_with("; band=0; caller=country"));
        let p = explain(&cand("x", 0, 1, Some("bad;value\r\n")), &nowhere());
        assert_eq!(p.header_value(), "bad_value__; caller=unknown");
        assert_eq!(
            explain(&cand("x", 0, 1, None), &nowhere()).header_value(),
            "none; caller=unknown"
        );
    }

    #[test]
    fn jurisdiction_pins_tenants() {
        assert!(region_allowed(None, None));
        assert!(region_allowed(None, Some("us-east")));
        assert!(region_allowed(Some("eu"), Some("eu-central-1")));
        assert!(region_allowed(Some("EU"), Some("westeurope")));
        assert!(!region_allowed(Some("eu"), Some("uk")));
        assert!(!region_allowed(Some("eu"), Some("us-east")));
        assert!(!region_allowed(Some("eu"), None));
        assert!(!region_allowed(Some("eu"), Some("somewhere")));
        assert!(!region_allowed(Some("fedramp"), Some("us-east-1")));
        // Used as the `usable` filter, pinning composes with ordering.
        let cands = [
            cand("us", 0, 1, Some("us-east")),
            cand("eu", 0, 1, Some("eu-west")),
        ];
        let order = attempt_order(
            &cands,
            &from_country("US"),
            |i| region_allowed(Some("eu"), cands.get(i).and_then(|c| c.region)),
            &mut xorshift(1),
        );
        assert_eq!(order, vec![1]);
    }
}
