//! Calendar arithmetic on Unix milliseconds, in the proleptic Gregorian calendar: civil dates
//! and day numbers (Howard Hinnant's algorithms, exact for every date, leap years included),
//! the day/week/month periods quotas and budgets count in, and RFC 3339 timestamps.
//! Pure: every function takes the time it works on.

use serde::{Deserialize, Serialize};

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

// ---- calendar periods ------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Day, Period::Week, Period::Month];

    pub fn name(&self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm: exact for every
/// Gregorian date, leap years included).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month 1–12, day 1–31) of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `[start, end)` in UTC ms of the period containing `now_ms`, with periods starting at local
/// midnight `offset_minutes` east of UTC. Weeks start on Monday (ISO 8601).
pub fn period_bounds(period: Period, now_ms: i64, offset_minutes: i32) -> (i64, i64) {
    let offset_ms = i64::from(offset_minutes) * MINUTE_MS;
    let local_day = (now_ms + offset_ms).div_euclid(DAY_MS);
    let (start_day, end_day) = match period {
        Period::Day => (local_day, local_day + 1),
        Period::Week => {
            // 1970-01-01 was a Thursday: day 0 has ISO weekday 4 (Monday = 1).
            let weekday = (local_day + 3).rem_euclid(7);
            (local_day - weekday, local_day - weekday + 7)
        }
        Period::Month => {
            let (y, m, _) = civil_from_days(local_day);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (days_from_civil(y, m, 1), days_from_civil(ny, nm, 1))
        }
    };
    (start_day * DAY_MS - offset_ms, end_day * DAY_MS - offset_ms)
}

/// `YYYY-MM-DD`, optionally followed by `T`/space, `HH:MM[:SS[.fraction]]` and a zone (`Z` or
/// `±HH:MM`). A missing zone means UTC, the zone of every bucket here. A space where the zone's
/// sign belongs is read as `+`: an unencoded `+02:00` in a query string arrives as ` 02:00`.
pub fn parse_rfc3339(s: &[u8]) -> Option<i64> {
    let mut cur = Cursor { s, pos: 0 };
    let year = cur.digits(4)?;
    cur.eat(b'-')?;
    let month = cur.digits(2)?;
    cur.eat(b'-')?;
    let day = cur.digits(2)?;
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let mut ms = days_from_civil(year, u32::try_from(month).ok()?, u32::try_from(day).ok()?)
        .checked_mul(DAY_MS)?;
    if cur.done() {
        return Some(ms);
    }
    match cur.bump()? {
        b'T' | b't' | b' ' => {}
        _ => return None,
    }
    let hour = cur.digits(2)?;
    cur.eat(b':')?;
    let minute = cur.digits(2)?;
    // RFC 3339 allows a leap second (60); Unix time has none, so it reads as the next second.
    let mut second = 0;
    if cur.peek() == Some(b':') {
        cur.bump()?;
        second = cur.digits(2)?;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut millis = 0;
    if cur.peek() == Some(b'.') {
        cur.bump()?;
        let start = cur.pos;
        let mut scale = 100;
        while let Some(d) = cur.peek().filter(u8::is_ascii_digit) {
            cur.bump()?;
            // Digits past the millisecond are dropped: the ledger keeps milliseconds.
            millis += i64::from(d - b'0') * scale;
            scale /= 10;
        }
        if cur.pos == start || cur.pos - start > 9 {
            return None;
        }
    }
    ms += hour * HOUR_MS + minute * 60_000 + second * 1000 + millis;
    let offset = match cur.bump() {
        None => 0,
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-' | b' ')) => {
            let oh = cur.digits(2)?;
            cur.eat(b':')?;
            let om = cur.digits(2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let magnitude = oh * HOUR_MS + om * 60_000;
            if sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        Some(_) => return None,
    };
    if !cur.done() {
        return None;
    }
    // Local time minus its offset is UTC.
    ms.checked_sub(offset)
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    fn done(&self) -> bool {
        self.pos >= self.s.len()
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.bump()? == want).then_some(())
    }

    fn digits(&mut self, n: usize) -> Option<i64> {
        let mut v = 0i64;
        for _ in 0..n {
            let d = self.bump().filter(u8::is_ascii_digit)?;
            v = v * 10 + i64::from(d - b'0');
        }
        Some(v)
    }
}

pub fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

pub fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a Thursday

    #[test]
    fn civil_calendar_round_trips_across_leap_years() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2000, 2, 29),
            (2024, 2, 29),
            (2100, 3, 1),
            (1969, 12, 31),
            (2026, 11, 23),
        ] {
            assert_eq!(civil_from_days(days_from_civil(y, m, d)), (y, m, d));
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(
            days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28),
            2,
            "2024 is a leap year"
        );
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1,
            "2100 is not"
        );
    }

    #[test]
    fn periods_start_at_local_midnight() {
        let day = 86_400_000;
        assert_eq!(period_bounds(Period::Day, T0 + 5, 0), (T0, T0 + day));
        assert_eq!(period_bounds(Period::Day, T0 - 1, 0), (T0 - day, T0));
        // UTC+2: local midnight is 22:00 UTC the day before.
        let two_h = 2 * 3_600_000;
        assert_eq!(
            period_bounds(Period::Day, T0, 120),
            (T0 - two_h, T0 - two_h + day)
        );
        assert_eq!(
            period_bounds(Period::Day, T0 - two_h - 1, 120).1,
            T0 - two_h
        );
        // UTC-5 at 03:00 UTC on Jan 1 is still Dec 31 locally.
        let (start, _) = period_bounds(Period::Day, T0 + 3 * 3_600_000, -300);
        assert_eq!(start, T0 - day + 5 * 3_600_000);
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let day = 86_400_000;
        // 2026-01-01 is a Thursday: its week began Monday 2025-12-29.
        assert_eq!(
            period_bounds(Period::Week, T0, 0),
            (T0 - 3 * day, T0 + 4 * day)
        );
        let (s, e) = period_bounds(Period::Month, T0 + 40 * day, 0);
        assert_eq!(
            (s, e),
            (T0 + 31 * day, T0 + 59 * day),
            "February 2026 has 28 days"
        );
        let feb_2028 = days_from_civil(2028, 2, 10) * day;
        let (s, e) = period_bounds(Period::Month, feb_2028, 0);
        assert_eq!((e - s) / day, 29, "leap February");
        let dec = days_from_civil(2026, 12, 31) * day;
        assert_eq!(
            period_bounds(Period::Month, dec, 0).1,
            days_from_civil(2027, 1, 1) * day
        );
    }
}
