//! Geography: the cloud regions channels can name (with their jurisdiction and coordinates),
//! where a caller is (from `request.cf`: coordinates, else colo, country, continent), and the
//! distance between the two. Floating point is used here only; no decision that is counted
//! depends on it.

use serde::{Deserialize, Serialize};

// ---- geography -------------------------------------------------------------------------

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
