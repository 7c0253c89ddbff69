//! Which channel a request tries, in what order, and whether a channel or one of its upstream
//! keys should be tried at all: priority and weighted choice among candidates, a preference for
//! channels near the caller, jurisdiction pinning, a circuit breaker per (channel, upstream
//! model), cooldowns per upstream key, and the retry budget of one request.
//!
//! Everything here is pure: time arrives as `now_ms`, randomness as a `draw` function returning
//! uniform `u32`s, so a test replays any sequence and only the edge reads `Date::now()` or
//! `getrandom`. The breaker and the key pool are the states a Durable Object keeps as JSON, in
//! the manner of `limits.rs`.
//!
//! Floating point is used for geography only; every decision that is counted (breaker windows,
//! cooldowns, budgets) is integer arithmetic, so it cannot drift between isolates.

pub mod channel;
pub mod health;
pub mod model_map;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A uniform integer in `0..n` from one draw. Multiply-shift rather than modulo: no loop, so a
/// draw sequence maps to exactly one outcome, and the bias is below 2^-32 per unit of `n`.
fn below(draw: u32, n: u64) -> u64 {
    // The product shifted right by 32 is < n, so it fits.
    ((u128::from(draw) * u128::from(n)) >> 32) as u64
}

fn i64_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

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

/// Where a request comes from, from `request.cf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Caller {
    /// ISO 3166-1 alpha-2 (`DE`); Cloudflare's `XX` and `T1` (Tor) match nothing.
    pub country: Option<String>,
    /// Cloudflare's two-letter continent code (`EU`, `NA`, `AS`, `AF`, `OC`, `SA`, `AN`).
    pub continent: Option<String>,
    /// IATA code of the Cloudflare data centre that took the request (`FRA`).
    pub colo: Option<String>,
    pub lat_lon: Option<(f64, f64)>,
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

// ---- geography -------------------------------------------------------------------------

/// Mean Earth radius (IUGG), which puts London–New York at about 5570 km.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;
/// Regions whose distances fall in the same band are equally near: weights, not a few hundred
/// kilometres, decide between them.
pub const BAND_KM: f64 = 2000.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionInfo {
    /// The name as the table spells it (lowercase).
    pub name: &'static str,
    pub lat: f64,
    pub lon: f64,
    /// Cloudflare's continent code, so it compares with `Caller::continent`.
    pub continent: &'static str,
    /// Whose law the data falls under: `eu` for EU member states, otherwise a lowercase country
    /// code (`us`, `ch`, `jp`…), with the United Kingdom as `uk`.
    pub jurisdiction: &'static str,
}

impl RegionInfo {
    pub fn lat_lon(&self) -> (f64, f64) {
        (self.lat, self.lon)
    }
}

const fn region(
    name: &'static str,
    lat: f64,
    lon: f64,
    continent: &'static str,
    jurisdiction: &'static str,
) -> RegionInfo {
    RegionInfo {
        name,
        lat,
        lon,
        continent,
        jurisdiction,
    }
}

/// Generic names first, then AWS, Azure and Google Cloud names, each at the city of its data
/// centres (to the precision that bands of 2000 km need). No region is `fedramp`: that is a
/// property of an account, not of a place, and must not be inferred from a name.
const REGIONS: &[RegionInfo] = &[
    region("us-east", 38.9, -77.4, "NA", "us"),
    region("us-west", 45.6, -121.2, "NA", "us"),
    region("us-central", 41.3, -95.9, "NA", "us"),
    region("ca", 45.5, -73.6, "NA", "ca"),
    region("sa-east", -23.5, -46.6, "SA", "br"),
    region("eu-west", 53.3, -6.3, "EU", "eu"),
    region("eu-central", 50.1, 8.7, "EU", "eu"),
    region("eu-north", 59.3, 18.1, "EU", "eu"),
    region("eu-south", 45.5, 9.2, "EU", "eu"),
    region("uk", 51.5, -0.1, "EU", "uk"),
    region("me", 25.2, 55.3, "AS", "ae"),
    region("af-south", -33.9, 18.4, "AF", "za"),
    region("ap-south", 19.1, 72.9, "AS", "in"),
    region("ap-southeast", 1.35, 103.8, "AS", "sg"),
    region("ap-northeast", 35.7, 139.7, "AS", "jp"),
    region("ap-east", 22.3, 114.2, "AS", "hk"),
    region("au", -33.9, 151.2, "OC", "au"),
    // AWS
    region("us-east-1", 38.9, -77.4, "NA", "us"),
    region("us-east-2", 40.0, -83.0, "NA", "us"),
    region("us-west-1", 37.4, -121.9, "NA", "us"),
    region("us-west-2", 45.6, -121.2, "NA", "us"),
    region("ca-central-1", 45.5, -73.6, "NA", "ca"),
    region("sa-east-1", -23.5, -46.6, "SA", "br"),
    region("eu-west-1", 53.3, -6.3, "EU", "eu"),
    region("eu-west-2", 51.5, -0.1, "EU", "uk"),
    region("eu-west-3", 48.9, 2.35, "EU", "eu"),
    region("eu-central-1", 50.1, 8.7, "EU", "eu"),
    region("eu-central-2", 47.4, 8.5, "EU", "ch"),
    region("eu-north-1", 59.3, 18.1, "EU", "eu"),
    region("eu-south-1", 45.5, 9.2, "EU", "eu"),
    region("eu-south-2", 41.6, -0.9, "EU", "eu"),
    region("me-south-1", 26.1, 50.6, "AS", "bh"),
    region("me-central-1", 25.2, 55.3, "AS", "ae"),
    region("af-south-1", -33.9, 18.4, "AF", "za"),
    region("ap-south-1", 19.1, 72.9, "AS", "in"),
    region("ap-southeast-1", 1.35, 103.8, "AS", "sg"),
    region("ap-southeast-2", -33.9, 151.2, "OC", "au"),
    region("ap-northeast-1", 35.7, 139.7, "AS", "jp"),
    region("ap-northeast-2", 37.6, 127.0, "AS", "kr"),
    region("ap-northeast-3", 34.7, 135.5, "AS", "jp"),
    region("ap-east-1", 22.3, 114.2, "AS", "hk"),
    // Azure
    region("eastus", 37.4, -79.0, "NA", "us"),
    region("eastus2", 36.7, -78.4, "NA", "us"),
    region("westus", 37.8, -122.4, "NA", "us"),
    region("westus2", 47.2, -119.9, "NA", "us"),
    region("westus3", 33.4, -112.1, "NA", "us"),
    region("centralus", 41.6, -93.6, "NA", "us"),
    region("northcentralus", 41.9, -87.6, "NA", "us"),
    region("southcentralus", 29.4, -98.5, "NA", "us"),
    region("canadacentral", 43.7, -79.4, "NA", "ca"),
    region("canadaeast", 46.8, -71.2, "NA", "ca"),
    region("brazilsouth", -23.5, -46.6, "SA", "br"),
    region("northeurope", 53.3, -6.3, "EU", "eu"),
    region("westeurope", 52.4, 4.9, "EU", "eu"),
    region("francecentral", 48.9, 2.35, "EU", "eu"),
    region("germanywestcentral", 50.1, 8.7, "EU", "eu"),
    region("swedencentral", 60.7, 17.1, "EU", "eu"),
    region("italynorth", 45.5, 9.2, "EU", "eu"),
    region("polandcentral", 52.2, 21.0, "EU", "eu"),
    region("spaincentral", 40.4, -3.7, "EU", "eu"),
    region("switzerlandnorth", 47.4, 8.5, "EU", "ch"),
    region("norwayeast", 59.9, 10.8, "EU", "no"),
    region("uksouth", 51.5, -0.1, "EU", "uk"),
    region("ukwest", 51.5, -3.2, "EU", "uk"),
    region("uaenorth", 25.2, 55.3, "AS", "ae"),
    region("southafricanorth", -26.2, 28.0, "AF", "za"),
    region("centralindia", 18.5, 73.9, "AS", "in"),
    region("southindia", 13.1, 80.3, "AS", "in"),
    region("southeastasia", 1.35, 103.8, "AS", "sg"),
    region("eastasia", 22.3, 114.2, "AS", "hk"),
    region("japaneast", 35.7, 139.7, "AS", "jp"),
    region("japanwest", 34.7, 135.5, "AS", "jp"),
    region("koreacentral", 37.6, 127.0, "AS", "kr"),
    region("australiaeast", -33.9, 151.2, "OC", "au"),
    region("australiasoutheast", -37.8, 145.0, "OC", "au"),
    // Google Cloud
    region("us-east1", 33.2, -80.0, "NA", "us"),
    region("us-east4", 39.0, -77.5, "NA", "us"),
    region("us-east5", 40.0, -83.0, "NA", "us"),
    region("us-central1", 41.3, -95.9, "NA", "us"),
    region("us-south1", 32.8, -96.8, "NA", "us"),
    region("us-west1", 45.6, -121.2, "NA", "us"),
    region("us-west4", 36.2, -115.1, "NA", "us"),
    region("northamerica-northeast1", 45.5, -73.6, "NA", "ca"),
    region("southamerica-east1", -23.5, -46.6, "SA", "br"),
    region("europe-west1", 50.4, 3.8, "EU", "eu"),
    region("europe-west2", 51.5, -0.1, "EU", "uk"),
    region("europe-west3", 50.1, 8.7, "EU", "eu"),
    region("europe-west4", 53.4, 6.8, "EU", "eu"),
    region("europe-west6", 47.4, 8.5, "EU", "ch"),
    region("europe-west8", 45.5, 9.2, "EU", "eu"),
    region("europe-west9", 48.9, 2.35, "EU", "eu"),
    region("europe-north1", 60.6, 27.2, "EU", "eu"),
    region("europe-southwest1", 40.4, -3.7, "EU", "eu"),
    region("europe-central2", 52.2, 21.0, "EU", "eu"),
    region("me-central1", 25.3, 51.5, "AS", "qa"),
    region("me-west1", 32.1, 34.8, "AS", "il"),
    region("africa-south1", -26.2, 28.0, "AF", "za"),
    region("asia-south1", 19.1, 72.9, "AS", "in"),
    region("asia-southeast1", 1.35, 103.8, "AS", "sg"),
    region("asia-east1", 24.1, 120.5, "AS", "tw"),
    region("asia-east2", 22.3, 114.2, "AS", "hk"),
    region("asia-northeast1", 35.7, 139.7, "AS", "jp"),
    region("asia-northeast3", 37.6, 127.0, "AS", "kr"),
    region("australia-southeast1", -33.9, 151.2, "OC", "au"),
];

/// The region a channel names, case-insensitively; `None` for names the table lacks (Vertex's
/// `global` among them: it is nowhere in particular).
pub fn region_info(name: &str) -> Option<RegionInfo> {
    let name = name.trim();
    REGIONS
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(name))
        .copied()
}

pub fn jurisdiction_of(region: &str) -> Option<&'static str> {
    region_info(region).map(|r| r.jurisdiction)
}

/// A tenant pinned to a jurisdiction uses only channels in a region known to be under it; a
/// channel without a (known) region never serves a pinned tenant, since nothing says where its
/// data goes.
pub fn region_allowed(tenant_jurisdiction: Option<&str>, channel_region: Option<&str>) -> bool {
    let Some(wanted) = tenant_jurisdiction else {
        return true;
    };
    channel_region
        .and_then(jurisdiction_of)
        .is_some_and(|j| j.eq_ignore_ascii_case(wanted.trim()))
}

/// Great-circle distance of two (lat, lon) points in degrees.
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.0.to_radians(), b.0.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.1 - a.1).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    // Rounding can push h a hair past 1 for antipodes; asin would give NaN.
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

pub fn band_of_km(km: f64) -> u32 {
    // `as` saturates and maps NaN to 0.
    (km / BAND_KM).floor() as u32
}

/// What a caller's position was taken from, most precise first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallerBasis {
    Coordinates,
    Colo,
    Country,
    Continent,
}

impl CallerBasis {
    pub fn as_str(&self) -> &'static str {
        match self {
            CallerBasis::Coordinates => "coordinates",
            CallerBasis::Colo => "colo",
            CallerBasis::Country => "country",
            CallerBasis::Continent => "continent",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub lat: f64,
    pub lon: f64,
    pub basis: CallerBasis,
}

impl Position {
    pub fn lat_lon(&self) -> (f64, f64) {
        (self.lat, self.lon)
    }
}

/// The caller's position: `request.cf` coordinates, else the data centre that took the request
/// (it tells US east from west, which a country cannot, and it is where the upstream call
/// leaves from), else the country's representative point, else the continent's.
pub fn caller_position(caller: &Caller) -> Option<Position> {
    let at = |(lat, lon): (f64, f64), basis| Position { lat, lon, basis };
    if let Some(p) = caller.lat_lon.filter(|&p| plausible(p)) {
        return Some(at(p, CallerBasis::Coordinates));
    }
    let lookup = |table: &[(&str, f64, f64)], code: &Option<String>| {
        let code = code.as_deref()?.trim();
        table
            .iter()
            .find(|(c, _, _)| c.eq_ignore_ascii_case(code))
            .map(|&(_, lat, lon)| (lat, lon))
    };
    if let Some(p) = lookup(COLOS, &caller.colo) {
        return Some(at(p, CallerBasis::Colo));
    }
    if let Some(p) = lookup(COUNTRIES, &caller.country) {
        return Some(at(p, CallerBasis::Country));
    }
    lookup(CONTINENTS, &caller.continent).map(|p| at(p, CallerBasis::Continent))
}

/// Real coordinates: finite, on the globe, and not (0, 0), which is what a missing value
/// parsed as a number looks like.
fn plausible((lat, lon): (f64, f64)) -> bool {
    lat.is_finite()
        && lon.is_finite()
        && lat.abs() <= 90.0
        && lon.abs() <= 180.0
        && (lat, lon) != (0.0, 0.0)
}

/// Major Cloudflare data centres by IATA code.
const COLOS: &[(&str, f64, f64)] = &[
    ("IAD", 38.95, -77.46),
    ("EWR", 40.69, -74.17),
    ("BOS", 42.36, -71.01),
    ("ORD", 41.98, -87.90),
    ("DFW", 32.90, -97.04),
    ("ATL", 33.64, -84.43),
    ("MIA", 25.79, -80.29),
    ("DEN", 39.86, -104.67),
    ("PHX", 33.43, -112.01),
    ("LAX", 33.94, -118.41),
    ("SJC", 37.36, -121.93),
    ("SEA", 47.45, -122.31),
    ("YYZ", 43.68, -79.63),
    ("YUL", 45.47, -73.74),
    ("YVR", 49.19, -123.18),
    ("QRO", 20.62, -100.19),
    ("GRU", -23.43, -46.47),
    ("EZE", -34.82, -58.54),
    ("SCL", -33.39, -70.79),
    ("BOG", 4.70, -74.15),
    ("LIM", -12.02, -77.11),
    ("LHR", 51.47, -0.45),
    ("MAN", 53.35, -2.27),
    ("DUB", 53.42, -6.27),
    ("AMS", 52.31, 4.76),
    ("BRU", 50.90, 4.48),
    ("CDG", 49.01, 2.55),
    ("FRA", 50.04, 8.56),
    ("MUC", 48.35, 11.79),
    ("ZRH", 47.46, 8.55),
    ("MXP", 45.63, 8.72),
    ("MAD", 40.47, -3.56),
    ("LIS", 38.77, -9.13),
    ("VIE", 48.11, 16.57),
    ("PRG", 50.10, 14.26),
    ("WAW", 52.17, 20.97),
    ("CPH", 55.62, 12.66),
    ("ARN", 59.65, 17.92),
    ("OSL", 60.19, 11.10),
    ("HEL", 60.32, 24.96),
    ("ATH", 37.94, 23.94),
    ("IST", 41.26, 28.74),
    ("TLV", 32.01, 34.89),
    ("DXB", 25.25, 55.36),
    ("BOM", 19.09, 72.87),
    ("DEL", 28.56, 77.10),
    ("MAA", 12.99, 80.17),
    ("SIN", 1.36, 103.99),
    ("KUL", 2.75, 101.71),
    ("BKK", 13.69, 100.75),
    ("CGK", -6.13, 106.66),
    ("MNL", 14.51, 121.02),
    ("HKG", 22.31, 113.91),
    ("TPE", 25.08, 121.23),
    ("ICN", 37.46, 126.44),
    ("NRT", 35.77, 140.39),
    ("KIX", 34.43, 135.24),
    ("SYD", -33.95, 151.18),
    ("MEL", -37.67, 144.84),
    ("AKL", -37.01, 174.79),
    ("JNB", -26.14, 28.24),
    ("CPT", -33.97, 18.60),
    ("LOS", 6.58, 3.32),
    ("NBO", -1.32, 36.93),
    ("CAI", 30.12, 31.41),
];

/// A representative point per country: the capital, or the population centre where the capital
/// is far from most people (US, BR, AU, NZ, TR, NG, ZA).
const COUNTRIES: &[(&str, f64, f64)] = &[
    ("US", 37.4, -92.2),
    ("CA", 45.4, -75.7),
    ("MX", 19.4, -99.1),
    ("BR", -23.5, -46.6),
    ("AR", -34.6, -58.4),
    ("CL", -33.5, -70.7),
    ("CO", 4.7, -74.1),
    ("PE", -12.0, -77.0),
    ("VE", 10.5, -66.9),
    ("GB", 51.5, -0.1),
    ("IE", 53.3, -6.3),
    ("FR", 48.9, 2.35),
    ("DE", 52.5, 13.4),
    ("NL", 52.4, 4.9),
    ("BE", 50.8, 4.35),
    ("LU", 49.6, 6.1),
    ("CH", 46.9, 7.45),
    ("AT", 48.2, 16.4),
    ("IT", 41.9, 12.5),
    ("ES", 40.4, -3.7),
    ("PT", 38.7, -9.1),
    ("SE", 59.3, 18.1),
    ("NO", 59.9, 10.75),
    ("DK", 55.7, 12.6),
    ("FI", 60.2, 24.9),
    ("PL", 52.2, 21.0),
    ("CZ", 50.1, 14.4),
    ("HU", 47.5, 19.0),
    ("RO", 44.4, 26.1),
    ("BG", 42.7, 23.3),
    ("GR", 38.0, 23.7),
    ("UA", 50.45, 30.5),
    ("RU", 55.75, 37.6),
    ("TR", 41.0, 29.0),
    ("IL", 32.1, 34.8),
    ("AE", 25.2, 55.3),
    ("SA", 24.7, 46.7),
    ("QA", 25.3, 51.5),
    ("IR", 35.7, 51.4),
    ("IQ", 33.3, 44.4),
    ("EG", 30.0, 31.2),
    ("MA", 33.6, -7.6),
    ("NG", 6.5, 3.4),
    ("GH", 5.6, -0.2),
    ("KE", -1.3, 36.8),
    ("ET", 9.0, 38.7),
    ("ZA", -26.2, 28.0),
    ("IN", 28.6, 77.2),
    ("PK", 33.7, 73.0),
    ("BD", 23.8, 90.4),
    ("LK", 6.9, 79.9),
    ("CN", 39.9, 116.4),
    ("HK", 22.3, 114.2),
    ("TW", 25.0, 121.6),
    ("JP", 35.7, 139.7),
    ("KR", 37.6, 127.0),
    ("SG", 1.35, 103.8),
    ("MY", 3.1, 101.7),
    ("TH", 13.75, 100.5),
    ("VN", 21.0, 105.8),
    ("ID", -6.2, 106.8),
    ("PH", 14.6, 121.0),
    ("AU", -33.9, 151.2),
    ("NZ", -36.85, 174.8),
];

/// Rough population centres of Cloudflare's continents.
const CONTINENTS: &[(&str, f64, f64)] = &[
    ("NA", 39.0, -90.0),
    ("SA", -15.0, -55.0),
    ("EU", 50.0, 10.0),
    ("AF", 5.0, 20.0),
    ("AS", 25.0, 100.0),
    ("OC", -30.0, 145.0),
    ("AN", -80.0, 0.0),
];

// ---- circuit breaker -------------------------------------------------------------------

/// How a breaker judges a (channel, upstream model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerConfig {
    /// Outcomes older than this no longer count.
    pub window_ms: i64,
    /// Fewer outcomes than this in the window never open the breaker: two failures out of
    /// three requests are noise, not an outage.
    pub min_requests: u32,
    /// Opens when failures are at least this share of the window's outcomes (1–100).
    pub failure_percent: u32,
    /// How long the first opening lasts; each reopening without a close doubles it.
    pub cooldown_ms: i64,
    pub max_cooldown_ms: i64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window_ms: 30_000,
            min_requests: 10,
            failure_percent: 50,
            cooldown_ms: 10_000,
            max_cooldown_ms: 120_000,
        }
    }
}

/// The window is this many fixed sub-buckets: memory stays constant however many isolates
/// report, and an outcome leaves the window at most one bucket late.
const BREAKER_BUCKETS: i64 = 10;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    /// `now_ms / bucket_ms` of the bucket.
    slot: i64,
    successes: u32,
    failures: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
enum Phase {
    #[default]
    Closed,
    /// Half-open once `until_ms` has passed; `probe_since_ms` is the probe let through then.
    Open {
        until_ms: i64,
        #[serde(default)]
        probe_since_ms: Option<i64>,
    },
}

/// A circuit breaker over one (channel, upstream model); a Durable Object stores it as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Breaker {
    #[serde(default)]
    config: BreakerConfig,
    #[serde(default)]
    phase: Phase,
    #[serde(default)]
    tallies: Vec<Tally>,
    /// Openings since the last close: the exponent of the cooldown.
    #[serde(default)]
    consecutive_opens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until_ms: i64 },
    HalfOpen,
}

impl BreakerState {
    pub fn phase(&self) -> BreakerPhase {
        match self {
            BreakerState::Closed => BreakerPhase::Closed,
            BreakerState::Open { .. } => BreakerPhase::Open,
            BreakerState::HalfOpen => BreakerPhase::HalfOpen,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerPhase {
    Closed,
    Open,
    HalfOpen,
}

/// Whether a request may go to the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "admit")]
pub enum Admit {
    Yes,
    /// The one request that tests a half-open channel: report it with `record_probe`.
    Probe,
    No {
        retry_in_ms: u64,
    },
}

/// A breaker as the admin API and the relay's isolates see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerView {
    pub state: BreakerPhase,
    pub successes: u64,
    pub failures: u64,
    pub open_until_ms: Option<i64>,
    pub consecutive_opens: u32,
    pub probe_in_flight: bool,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config,
            ..Breaker::default()
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The operator changed the settings: the state stays, the next decision uses the new ones.
    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = config;
    }

    pub fn state(&self, now_ms: i64) -> BreakerState {
        match self.phase {
            Phase::Closed => BreakerState::Closed,
            Phase::Open { until_ms, .. } if now_ms < until_ms => BreakerState::Open { until_ms },
            Phase::Open { .. } => BreakerState::HalfOpen,
        }
    }

    /// Closed admits everything; open nothing; half-open exactly one probe at a time. A probe
    /// whose outcome has not come back within `cooldown_ms` is taken as lost (its isolate died),
    /// and the next request becomes the probe.
    pub fn admit(&mut self, now_ms: i64) -> Admit {
        let cooldown = self.config.cooldown_ms.max(0);
        match &mut self.phase {
            Phase::Closed => Admit::Yes,
            Phase::Open { until_ms, .. } if now_ms < *until_ms => Admit::No {
                retry_in_ms: u64::try_from(*until_ms - now_ms).unwrap_or(0),
            },
            Phase::Open { probe_since_ms, .. } => match *probe_since_ms {
                Some(since) if now_ms.saturating_sub(since) < cooldown => Admit::No {
                    retry_in_ms: u64::try_from(since.saturating_add(cooldown) - now_ms)
                        .unwrap_or(0),
                },
                _ => {
                    *probe_since_ms = Some(now_ms);
                    Admit::Probe
                }
            },
        }
    }

    fn bucket_ms(&self) -> i64 {
        (self.config.window_ms / BREAKER_BUCKETS).max(1)
    }

    fn forget_old(&mut self, now_ms: i64) {
        let oldest = now_ms.div_euclid(self.bucket_ms()) - BREAKER_BUCKETS;
        self.tallies.retain(|t| t.slot > oldest);
    }

    fn window_counts(&self, now_ms: i64) -> (u64, u64) {
        let oldest = now_ms.div_euclid(self.bucket_ms()) - BREAKER_BUCKETS;
        self.tallies
            .iter()
            .filter(|t| t.slot > oldest)
            .fold((0, 0), |(s, f), t| {
                (s + u64::from(t.successes), f + u64::from(t.failures))
            })
    }

    /// Outcomes an isolate batched up. Only a closed breaker counts them: while open or
    /// half-open, late reports from before the opening say nothing about the channel now, and
    /// only the probe decides.
    pub fn record(&mut self, success: u32, failure: u32, now_ms: i64) {
        if self.phase != Phase::Closed || success.saturating_add(failure) == 0 {
            return;
        }
        self.forget_old(now_ms);
        let slot = now_ms.div_euclid(self.bucket_ms());
        match self.tallies.iter_mut().find(|t| t.slot == slot) {
            Some(t) => {
                t.successes = t.successes.saturating_add(success);
                t.failures = t.failures.saturating_add(failure);
            }
            None => self.tallies.push(Tally {
                slot,
                successes: success,
                failures: failure,
            }),
        }
        let (successes, failures) = self.window_counts(now_ms);
        let total = successes + failures;
        let percent = u64::from(self.config.failure_percent.clamp(1, 100));
        if total >= u64::from(self.config.min_requests.max(1)) && failures * 100 >= total * percent
        {
            self.trip(now_ms);
        }
    }

    /// The probe's outcome. Success closes and starts a fresh window; failure reopens for twice
    /// the last cooldown (up to the maximum). An outcome arriving while closed is an ordinary
    /// one; while open (a stale probe after a reopening) it is ignored.
    pub fn record_probe(&mut self, success: bool, now_ms: i64) {
        match self.state(now_ms) {
            BreakerState::HalfOpen if success => {
                self.phase = Phase::Closed;
                self.tallies.clear();
                self.consecutive_opens = 0;
            }
            BreakerState::HalfOpen => self.trip(now_ms),
            BreakerState::Closed => self.record(u32::from(success), u32::from(!success), now_ms),
            BreakerState::Open { .. } => {}
        }
    }

    fn trip(&mut self, now_ms: i64) {
        self.consecutive_opens = self.consecutive_opens.saturating_add(1);
        let base = self.config.cooldown_ms.max(0);
        let doubling = 2i64.saturating_pow(self.consecutive_opens - 1);
        let cooldown = base
            .saturating_mul(doubling)
            .min(self.config.max_cooldown_ms.max(base));
        self.phase = Phase::Open {
            until_ms: now_ms.saturating_add(cooldown),
            probe_since_ms: None,
        };
    }

    pub fn view(&self, now_ms: i64) -> BreakerView {
        let (successes, failures) = self.window_counts(now_ms);
        let (open_until_ms, probe_in_flight) = match self.phase {
            Phase::Closed => (None, false),
            Phase::Open {
                until_ms,
                probe_since_ms,
            } => (
                Some(until_ms),
                probe_since_ms.is_some_and(|since| {
                    now_ms.saturating_sub(since) < self.config.cooldown_ms.max(0)
                }),
            ),
        };
        BreakerView {
            state: self.state(now_ms).phase(),
            successes,
            failures,
            open_until_ms,
            consecutive_opens: self.consecutive_opens,
            probe_in_flight,
        }
    }
}

/// Whether an upstream outcome counts against the channel's breaker: no answer at all
/// (`None`: connection error or timeout) and 5xx do. 429 does not: it says one key's quota is
/// spent, which the key pool handles, while the channel itself is healthy; other 4xx are the
/// request's fault.
pub fn is_failure(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => (500..=599).contains(&s),
    }
}

// ---- key pools -------------------------------------------------------------------------

/// Longest a key cools for an upstream's `Retry-After`: a misconfigured upstream asking for a
/// day must not bench a key for a day.
pub const MAX_RETRY_AFTER_MS: u64 = 10 * 60_000;
const FIRST_BACKOFF_MS: u64 = 1_000;
const MAX_BACKOFF_MS: u64 = 60_000;
/// A 429 this long after the previous one starts a new streak: the pool hears only what the
/// relay reports, and a key that went unused for a while should not carry its old streak.
const STREAK_MEMORY_MS: i64 = 10 * 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyState {
    Ok,
    Cooling,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyReason {
    /// 429 from the upstream.
    RateLimited,
    /// 401: the upstream does not know the key.
    Unauthorized,
    /// 403: the key is known but not allowed (suspended account, no access to the model).
    Forbidden,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct KeyHealth {
    #[serde(default)]
    cooling_until_ms: i64,
    #[serde(default)]
    streak: u32,
    #[serde(default)]
    last_429_ms: i64,
    #[serde(default)]
    disabled: Option<KeyReason>,
}

impl KeyHealth {
    fn available(&self, now_ms: i64) -> bool {
        self.disabled.is_none() && self.cooling_until_ms <= now_ms
    }
}

/// The health of one channel's upstream keys, by fingerprint (never the key itself). Keys the
/// pool has no entry for are healthy; entries go away once there is nothing to remember.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyPool {
    #[serde(default)]
    keys: BTreeMap<String, KeyHealth>,
}

/// One key as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyView {
    pub fingerprint: String,
    pub state: KeyState,
    /// End of the cooldown while cooling.
    pub until_ms: Option<i64>,
    pub reason: Option<KeyReason>,
    pub consecutive_429s: u32,
}

impl KeyPool {
    fn available(&self, fingerprint: &str, now_ms: i64) -> bool {
        self.keys
            .get(fingerprint)
            .is_none_or(|h| h.available(now_ms))
    }

    /// A uniformly random index into `fingerprints` among keys neither cooling nor disabled;
    /// `None` when there is none (see `next_available_ms`).
    pub fn pick(
        &self,
        fingerprints: &[&str],
        now_ms: i64,
        draw: &mut impl FnMut() -> u32,
    ) -> Option<usize> {
        let open: Vec<usize> = (0..fingerprints.len())
            .filter(|&i| {
                fingerprints
                    .get(i)
                    .is_some_and(|fp| self.available(fp, now_ms))
            })
            .collect();
        match open.len() {
            0 => None,
            1 => open.first().copied(),
            n => {
                let k = usize::try_from(below(draw(), n as u64)).unwrap_or(0);
                open.get(k).copied()
            }
        }
    }

    /// What the upstream answered a request made with this key. 429 cools the key for the
    /// upstream's `Retry-After` (capped) or else 1 s, 2 s, 4 s… up to 60 s over a streak;
    /// 401 and 403 disable it until an operator calls `enable`, since retrying a rejected
    /// credential only adds load; 2xx ends a 429 streak. Other statuses say nothing about the key.
    pub fn on_status(
        &mut self,
        fingerprint: &str,
        status: u16,
        retry_after_ms: Option<u64>,
        now_ms: i64,
    ) {
        match status {
            429 => {
                let h = self.keys.entry(fingerprint.to_string()).or_default();
                let fresh =
                    h.streak == 0 || now_ms.saturating_sub(h.last_429_ms) >= STREAK_MEMORY_MS;
                h.streak = if fresh { 1 } else { h.streak.saturating_add(1) };
                h.last_429_ms = now_ms;
                let cool = match retry_after_ms {
                    Some(ms) => ms.min(MAX_RETRY_AFTER_MS),
                    None => {
                        let doubling = 1u64 << (h.streak - 1).min(16);
                        FIRST_BACKOFF_MS
                            .saturating_mul(doubling)
                            .min(MAX_BACKOFF_MS)
                    }
                };
                // Never shorten a cooldown a later-arriving report already set.
                h.cooling_until_ms = h.cooling_until_ms.max(now_ms.saturating_add(i64_ms(cool)));
            }
            401 | 403 => {
                let reason = if status == 401 {
                    KeyReason::Unauthorized
                } else {
                    KeyReason::Forbidden
                };
                self.keys
                    .entry(fingerprint.to_string())
                    .or_default()
                    .disabled = Some(reason);
            }
            200..=299 => {
                if let Some(h) = self.keys.get_mut(fingerprint) {
                    h.streak = 0;
                    if h.disabled.is_none() && h.cooling_until_ms <= now_ms {
                        self.keys.remove(fingerprint);
                    }
                }
            }
            _ => {}
        }
    }

    /// An operator vouches for the key again: it starts afresh, cooldown and streak included.
    pub fn enable(&mut self, fingerprint: &str) {
        self.keys.remove(fingerprint);
    }

    /// Drops what the pool remembers about keys the channel no longer has.
    pub fn retain_only(&mut self, fingerprints: &[&str]) {
        self.keys
            .retain(|fp, _| fingerprints.contains(&fp.as_str()));
    }

    pub fn view(&self, now_ms: i64) -> Vec<KeyView> {
        self.keys
            .iter()
            .map(|(fp, h)| {
                let (state, until_ms, reason) = match h.disabled {
                    Some(reason) => (KeyState::Disabled, None, Some(reason)),
                    None if h.cooling_until_ms > now_ms => (
                        KeyState::Cooling,
                        Some(h.cooling_until_ms),
                        Some(KeyReason::RateLimited),
                    ),
                    None => (KeyState::Ok, None, None),
                };
                KeyView {
                    fingerprint: fp.clone(),
                    state,
                    until_ms,
                    reason,
                    consecutive_429s: h.streak,
                }
            })
            .collect()
    }

    /// When the first of `fingerprints` can be used again: `now_ms` if one can now, the end of
    /// the shortest cooldown if all are cooling (for the client's `Retry-After`), `None` if
    /// every key is disabled or there are none.
    pub fn next_available_ms(&self, fingerprints: &[&str], now_ms: i64) -> Option<i64> {
        fingerprints
            .iter()
            .filter_map(|fp| match self.keys.get(*fp) {
                None => Some(now_ms),
                Some(h) if h.disabled.is_some() => None,
                Some(h) => Some(h.cooling_until_ms.max(now_ms)),
            })
            .min()
    }
}

// ---- retry policy ----------------------------------------------------------------------

/// Whether an upstream outcome is worth another attempt: no answer (`None`), 408, 425, 429 and
/// the overload/gateway 5xx (500, 502, 503, 504, Anthropic's 529). Any other 4xx would fail the
/// same way again; 409 too (a conflict is about the request's content), and 501 means the
/// upstream lacks the feature.
pub fn retryable(status: Option<u16>) -> bool {
    match status {
        None => true,
        Some(s) => matches!(s, 408 | 425 | 429 | 500 | 502 | 503 | 504 | 529),
    }
}

/// How much retrying one request may do. `max_attempts` counts every upstream attempt of the
/// request, on whichever channel, the first included, so fallbacks cannot multiply the load
/// an outage puts on the remaining channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryBudget {
    pub max_attempts: u32,
    /// From the first attempt's start; no attempt starts later than this.
    pub total_ms: i64,
    pub base_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            max_attempts: 3,
            total_ms: 30_000,
            base_backoff_ms: 100,
            max_backoff_ms: 2_000,
        }
    }
}

impl RetryBudget {
    /// The wait before retrying on the same channel after `attempt` attempts have been made,
    /// or `None` when the budget is spent. The wait is full jitter — uniform in
    /// `0..=min(max_backoff, base × 2^(attempt−1))` — so isolates that failed together do not
    /// retry together; an upstream `Retry-After` is a floor. A wait that would end past the
    /// total budget is `None`: the upstream told us not to come back in time.
    pub fn next_delay(
        &self,
        attempt: u32,
        retry_after_ms: Option<u64>,
        started_ms: i64,
        now_ms: i64,
        draw: &mut impl FnMut() -> u32,
    ) -> Option<u64> {
        let remaining = self.remaining_ms(attempt, started_ms, now_ms)?;
        let doubling = 1u64 << attempt.saturating_sub(1).min(32);
        let cap = self
            .base_backoff_ms
            .saturating_mul(doubling)
            .min(self.max_backoff_ms);
        let jitter = below(draw(), cap.saturating_add(1));
        let delay = retry_after_ms.map_or(jitter, |ra| ra.max(jitter));
        (delay < remaining).then_some(delay)
    }

    /// The wait before the next attempt: none when it goes to another channel (the failure
    /// was this channel's, and so was any `Retry-After`), `next_delay` when it is the same
    /// channel again; `None` when the budget is spent either way.
    pub fn delay_before(
        &self,
        next_is_same_channel: bool,
        attempt: u32,
        retry_after_ms: Option<u64>,
        started_ms: i64,
        now_ms: i64,
        draw: &mut impl FnMut() -> u32,
    ) -> Option<u64> {
        if next_is_same_channel {
            self.next_delay(attempt, retry_after_ms, started_ms, now_ms, draw)
        } else {
            self.remaining_ms(attempt, started_ms, now_ms).map(|_| 0)
        }
    }

    /// Milliseconds left for further attempts, `None` when attempts or time are used up.
    fn remaining_ms(&self, attempt: u32, started_ms: i64, now_ms: i64) -> Option<u64> {
        if attempt >= self.max_attempts {
            return None;
        }
        let left = started_ms
            .saturating_add(self.total_ms)
            .saturating_sub(now_ms);
        u64::try_from(left).ok().filter(|&ms| ms > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marsaglia's xorshift32: deterministic, and uniform enough for tolerance tests.
    fn xorshift(seed: u32) -> impl FnMut() -> u32 {
        let mut s = seed.max(1);
        move || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        }
    }

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
    fn regions_and_jurisdictions() {
        assert_eq!(region_info("EU-West-1").map(|r| r.name), Some("eu-west-1"));
        assert_eq!(region_info("global"), None);
        for eu in [
            "eu-central",
            "eu-north-1",
            "westeurope",
            "europe-west4",
            "germanywestcentral",
        ] {
            assert_eq!(jurisdiction_of(eu), Some("eu"), "{eu}");
        }
        for us in ["us-east-1", "eastus", "us-central1", "us-west"] {
            assert_eq!(jurisdiction_of(us), Some("us"), "{us}");
        }
        assert_eq!(jurisdiction_of("uk"), Some("uk"));
        assert_eq!(jurisdiction_of("eu-west-2"), Some("uk"));
        assert_eq!(jurisdiction_of("europe-west6"), Some("ch"));
        assert_eq!(jurisdiction_of("asia-northeast1"), Some("jp"));
        assert_eq!(jurisdiction_of("nowhere"), None);
        assert!(REGIONS.iter().all(|r| r.jurisdiction != "fedramp"));
        // Every name is unique, lowercase and on the globe.
        for (i, r) in REGIONS.iter().enumerate() {
            assert_eq!(r.name, r.name.to_ascii_lowercase());
            assert!(plausible(r.lat_lon()), "{}", r.name);
            assert!(
                REGIONS[i + 1..].iter().all(|o| o.name != r.name),
                "{}",
                r.name
            );
        }
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

    #[test]
    fn haversine_is_sane() {
        let london = (51.5074, -0.1278);
        let new_york = (40.7128, -74.0060);
        let km = haversine_km(london, new_york);
        assert!((km - 5570.0).abs() < 15.0, "{km}");
        assert_eq!(haversine_km(london, london), 0.0);
        assert!((haversine_km(london, new_york) - haversine_km(new_york, london)).abs() < 1e-9);
        let half = haversine_km((0.0, 0.0), (0.0, 180.0));
        assert!(
            (half - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1.0,
            "{half}"
        );
        assert_eq!(band_of_km(1_999.9), 0);
        assert_eq!(band_of_km(2_000.0), 1);
        assert_eq!(band_of_km(f64::NAN), 0);
    }

    fn small_breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            window_ms: 10_000,
            min_requests: 4,
            failure_percent: 50,
            cooldown_ms: 1_000,
            max_cooldown_ms: 3_000,
        })
    }

    #[test]
    fn breaker_opens_at_the_threshold_only_after_min_requests() {
        let mut b = small_breaker();
        b.record(0, 3, 0);
        assert_eq!(b.state(0), BreakerState::Closed, "3 < min_requests");
        assert_eq!(b.admit(0), Admit::Yes);
        // Successes bring the window to min_requests, and 3 failures of 6 is exactly 50%.
        b.record(3, 0, 10);
        assert_eq!(b.state(10), BreakerState::Open { until_ms: 1_010 });
        let mut b = small_breaker();
        b.record(3, 2, 0);
        assert_eq!(b.state(0), BreakerState::Closed, "40% is below 50%");
        b.record(0, 1, 5);
        assert_eq!(b.state(5), BreakerState::Open { until_ms: 1_005 });
        assert_eq!(b.admit(500), Admit::No { retry_in_ms: 505 });
        let v = b.view(500);
        assert_eq!(
            (
                v.state,
                v.failures,
                v.successes,
                v.open_until_ms,
                v.consecutive_opens
            ),
            (BreakerPhase::Open, 3, 3, Some(1_005), 1)
        );
    }

    #[test]
    fn the_window_slides_and_forgets_old_failures() {
        let mut b = small_breaker();
        b.record(0, 3, 0);
        // 10 s later the first failures have left the window: 1 failure of 4 stays closed.
        b.record(3, 1, 10_000);
        assert_eq!(b.state(10_000), BreakerState::Closed);
        assert_eq!(b.view(10_000).failures, 1);
        // Within the window they count: 3 + 1 failures of 7.
        let mut b = small_breaker();
        b.record(0, 3, 0);
        b.record(3, 1, 8_999);
        assert_eq!(b.state(8_999), BreakerState::Open { until_ms: 9_999 });
    }

    #[test]
    fn half_open_lets_one_probe_through_and_closes_on_success() {
        let mut b = small_breaker();
        b.record(0, 4, 0);
        assert_eq!(b.state(1_000), BreakerState::HalfOpen);
        assert_eq!(b.admit(1_000), Admit::Probe);
        assert_eq!(b.admit(1_001), Admit::No { retry_in_ms: 999 });
        assert!(b.view(1_001).probe_in_flight);
        // Reports from before the opening do not count while half-open.
        b.record(0, 50, 1_100);
        assert_eq!(b.view(1_100).failures, 4);
        b.record_probe(true, 1_200);
        assert_eq!(b.state(1_200), BreakerState::Closed);
        let v = b.view(1_200);
        assert_eq!(
            (v.failures, v.consecutive_opens, v.probe_in_flight),
            (0, 0, false)
        );
        assert_eq!(b.admit(1_200), Admit::Yes);
    }

    #[test]
    fn a_lost_probe_lets_another_through() {
        let mut b = small_breaker();
        b.record(0, 4, 0);
        assert_eq!(b.admit(1_000), Admit::Probe);
        assert_eq!(b.admit(1_999), Admit::No { retry_in_ms: 1 });
        assert_eq!(b.admit(2_000), Admit::Probe);
    }

    #[test]
    fn failed_probes_double_the_cooldown_up_to_the_maximum() {
        let mut b = small_breaker();
        b.record(0, 4, 0);
        let mut now = 1_000;
        for expected in [2_000, 3_000, 3_000] {
            assert_eq!(b.admit(now), Admit::Probe);
            b.record_probe(false, now + 10);
            assert_eq!(
                b.state(now + 10),
                BreakerState::Open {
                    until_ms: now + 10 + expected
                }
            );
            now += 10 + expected;
        }
        assert_eq!(b.view(now).consecutive_opens, 4);
        // A stale probe outcome while open changes nothing.
        let before = b.clone();
        b.record_probe(true, now - 1);
        assert_eq!(b, before);
        assert_eq!(b.admit(now), Admit::Probe);
        b.record_probe(true, now);
        assert_eq!(b.state(now), BreakerState::Closed);
        // After a close the next opening starts from the base cooldown again.
        b.record(0, 4, now);
        assert_eq!(
            b.state(now),
            BreakerState::Open {
                until_ms: now + 1_000
            }
        );
    }

    #[test]
    fn breaker_state_round_trips_as_json() {
        let mut b = Breaker::default();
        b.record(1, 20, 5);
        assert_eq!(b.admit(10_005), Admit::Probe);
        let json = serde_json::to_string(&b).unwrap();
        let back: Breaker = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
        let empty: Breaker = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, Breaker::default());
        let view = serde_json::to_value(b.view(10_006)).unwrap();
        assert_eq!(view["state"], "half_open");
        assert_eq!(view["probe_in_flight"], true);
        assert_eq!(
            serde_json::to_value(Admit::No { retry_in_ms: 3 }).unwrap(),
            serde_json::json!({"admit": "no", "retry_in_ms": 3})
        );
    }

    #[test]
    fn degenerate_breaker_settings_stay_safe() {
        let mut b = Breaker::new(BreakerConfig {
            window_ms: 0,
            min_requests: 0,
            failure_percent: 0,
            cooldown_ms: -5,
            max_cooldown_ms: -5,
        });
        b.record(0, 0, 0);
        assert_eq!(
            b.state(0),
            BreakerState::Closed,
            "nothing recorded opens nothing"
        );
        b.record(1, 0, 0);
        // failure_percent 0 is taken as 1%: successes alone never open.
        assert_eq!(b.state(0), BreakerState::Closed);
        b.record(0, 1, 1);
        assert_eq!(b.state(1), BreakerState::HalfOpen);
    }

    #[test]
    fn what_counts_against_a_breaker() {
        assert!(is_failure(None));
        for s in [500, 502, 503, 504, 529] {
            assert!(is_failure(Some(s)), "{s}");
        }
        for s in [200, 400, 401, 404, 408, 429] {
            assert!(!is_failure(Some(s)), "{s}");
        }
    }

    #[test]
    fn key_pool_backs_off_on_429_streaks() {
        let mut pool = KeyPool::default();
        let mut now = 0;
        for expected in [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000] {
            pool.on_status("k1", 429, None, now);
            assert_eq!(pool.next_available_ms(&["k1"], now), Some(now + expected));
            now += expected;
        }
        // A 2xx ends the streak.
        pool.on_status("k1", 200, None, now);
        assert!(pool.view(now).is_empty(), "nothing left to remember");
        pool.on_status("k1", 429, None, now);
        assert_eq!(pool.next_available_ms(&["k1"], now), Some(now + 1_000));
        // A 429 long after the last one starts a new streak.
        pool.on_status("k1", 429, None, now + 1_000);
        assert_eq!(pool.view(now + 1_000)[0].consecutive_429s, 2);
        pool.on_status("k1", 429, None, now + 1_000 + STREAK_MEMORY_MS);
        assert_eq!(
            pool.view(now + 1_000 + STREAK_MEMORY_MS)[0].consecutive_429s,
            1
        );
    }

    #[test]
    fn key_pool_honours_retry_after_with_a_cap() {
        let mut pool = KeyPool::default();
        pool.on_status("k", 429, Some(5_000), 100);
        assert_eq!(pool.next_available_ms(&["k"], 100), Some(5_100));
        pool.on_status("k", 429, Some(86_400_000), 200);
        assert_eq!(
            pool.next_available_ms(&["k"], 200),
            Some(200 + MAX_RETRY_AFTER_MS as i64)
        );
        // A shorter Retry-After never shortens a cooldown already set.
        pool.on_status("k", 429, Some(1), 300);
        assert_eq!(
            pool.next_available_ms(&["k"], 300),
            Some(200 + MAX_RETRY_AFTER_MS as i64)
        );
    }

    #[test]
    fn key_pool_picks_among_usable_keys() {
        let fps = ["a", "b", "c"];
        let mut pool = KeyPool::default();
        let mut draw = xorshift(77);
        let mut counts = [0; 3];
        for _ in 0..3_000 {
            counts[pool.pick(&fps, 0, &mut draw).unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|c| (900..1_100).contains(c)),
            "{counts:?}"
        );
        pool.on_status("a", 429, None, 0);
        pool.on_status("c", 401, None, 0);
        for _ in 0..100 {
            assert_eq!(pool.pick(&fps, 10, &mut draw), Some(1));
        }
        pool.on_status("b", 403, None, 0);
        assert_eq!(pool.pick(&fps, 10, &mut draw), None);
        assert_eq!(pool.next_available_ms(&fps, 10), Some(1_000));
        assert_eq!(pool.pick(&fps, 1_000, &mut draw), Some(0));
        assert_eq!(pool.next_available_ms(&["b", "c"], 10), None);
        assert_eq!(pool.next_available_ms(&[], 10), None);
        assert_eq!(pool.next_available_ms(&["new"], 10), Some(10));
    }

    #[test]
    fn disabled_keys_wait_for_an_operator() {
        let mut pool = KeyPool::default();
        pool.on_status("k", 401, None, 0);
        pool.on_status("k", 200, None, 1);
        assert_eq!(pool.pick(&["k"], 1_000_000, &mut xorshift(1)), None);
        let view = pool.view(5);
        assert_eq!(
            view,
            vec![KeyView {
                fingerprint: "k".into(),
                state: KeyState::Disabled,
                until_ms: None,
                reason: Some(KeyReason::Unauthorized),
                consecutive_429s: 0,
            }]
        );
        let json = serde_json::to_value(&view).unwrap();
        assert_eq!(json[0]["state"], "disabled");
        assert_eq!(json[0]["reason"], "unauthorized");
        pool.enable("k");
        assert_eq!(pool.pick(&["k"], 6, &mut xorshift(1)), Some(0));
        assert!(pool.view(6).is_empty());
    }

    #[test]
    fn key_pool_views_and_round_trips() {
        let mut pool = KeyPool::default();
        pool.on_status("a", 429, Some(2_000), 0);
        pool.on_status("b", 403, None, 0);
        pool.on_status("c", 500, None, 0);
        let view = pool.view(1_000);
        assert_eq!(view.len(), 2, "a 500 says nothing about the key");
        assert_eq!(
            (view[0].state, view[0].until_ms, view[0].reason),
            (KeyState::Cooling, Some(2_000), Some(KeyReason::RateLimited))
        );
        assert_eq!(pool.view(2_000)[0].state, KeyState::Ok);
        let back: KeyPool = serde_json::from_str(&serde_json::to_string(&pool).unwrap()).unwrap();
        assert_eq!(back, pool);
        pool.retain_only(&["b"]);
        assert_eq!(pool.view(0).len(), 1);
        assert_eq!(
            serde_json::from_str::<KeyPool>("{}").unwrap(),
            KeyPool::default()
        );
    }

    #[test]
    fn what_is_worth_retrying() {
        assert!(retryable(None));
        for s in [408, 425, 429, 500, 502, 503, 504, 529] {
            assert!(retryable(Some(s)), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 413, 422, 501] {
            assert!(!retryable(Some(s)), "{s}");
        }
    }

    #[test]
    fn the_budget_runs_out_by_attempts_and_by_time() {
        let budget = RetryBudget::default();
        let mut draw = xorshift(13);
        assert!(budget.next_delay(1, None, 0, 10, &mut draw).is_some());
        assert!(budget.next_delay(2, None, 0, 10, &mut draw).is_some());
        assert_eq!(budget.next_delay(3, None, 0, 10, &mut draw), None);
        assert_eq!(budget.delay_before(false, 3, None, 0, 10, &mut draw), None);
        assert_eq!(budget.next_delay(1, None, 0, 30_000, &mut draw), None);
        assert_eq!(
            budget.delay_before(false, 1, None, 0, 30_000, &mut draw),
            None
        );
        // A delay that would end past the budget is refused rather than cut short.
        let mut max = || u32::MAX;
        assert_eq!(budget.next_delay(1, None, 0, 29_950, &mut max), None);
        assert_eq!(budget.next_delay(1, None, 0, 29_850, &mut max), Some(100));
    }

    #[test]
    fn retry_after_is_a_floor_when_it_fits() {
        let budget = RetryBudget::default();
        let mut zero = || 0;
        assert_eq!(
            budget.next_delay(1, Some(5_000), 0, 1_000, &mut zero),
            Some(5_000)
        );
        assert_eq!(
            budget.next_delay(1, Some(1), 0, 1_000, &mut || u32::MAX),
            Some(100)
        );
        assert_eq!(
            budget.next_delay(1, Some(29_000), 0, 1_000, &mut zero),
            None
        );
        // Another channel needs no wait, whatever this one said.
        assert_eq!(
            budget.delay_before(false, 1, Some(29_000), 0, 1_000, &mut zero),
            Some(0)
        );
        assert_eq!(
            budget.delay_before(true, 1, Some(5_000), 0, 1_000, &mut zero),
            Some(5_000)
        );
    }

    #[test]
    fn jitter_stays_within_the_exponential_cap() {
        let budget = RetryBudget {
            max_attempts: 10,
            ..RetryBudget::default()
        };
        let mut draw = xorshift(99);
        for (attempt, cap) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (5, 1_600),
            (6, 2_000),
            (9, 2_000),
        ] {
            let delays: Vec<u64> = (0..2_000)
                .filter_map(|_| budget.next_delay(attempt, None, 0, 0, &mut draw))
                .collect();
            assert_eq!(delays.len(), 2_000);
            assert!(delays.iter().all(|&d| d <= cap), "attempt {attempt}");
            let (lo, hi) = (delays.iter().min(), delays.iter().max());
            assert!(
                lo < Some(&(cap / 10)) && hi > Some(&(cap * 9 / 10)),
                "attempt {attempt}: full jitter"
            );
        }
        assert_eq!(budget.next_delay(1, None, 0, 0, &mut || 0), Some(0));
        assert_eq!(
            budget.next_delay(1, None, 0, 0, &mut || u32::MAX),
            Some(100)
        );
    }
}
