//! Cron expressions, in UTC: five fields (`minute hour day-of-month month day-of-week`) or six
//! with seconds first. Each field is `*`, a number, a range `a-b`, a list `a,b`, and any of them
//! with a step `/n`; months and weekdays also by name (`jan`, `mon`); weekday 0 and 7 are
//! Sunday. As in Vixie cron, when both day fields are restricted a day matching either runs.

use std::collections::BTreeSet;

/// A parsed expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronExpr {
    text: String,
    seconds: BTreeSet<u32>,
    minutes: BTreeSet<u32>,
    hours: BTreeSet<u32>,
    days: BTreeSet<u32>,
    months: BTreeSet<u32>,
    weekdays: BTreeSet<u32>,
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(s: &str, names: &[&str], base: u32) -> Option<u32> {
    s.parse().ok().or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(s)).map(|i| i as u32 + base))
}

fn field(text: &str, what: &str, lo: u32, hi: u32, names: &[&str], base: u32) -> Result<(BTreeSet<u32>, bool), String> {
    let bad = |why: String| format!("{what} field {text:?}: {why}");
    let mut out = BTreeSet::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| bad(format!("step {s:?} is not a number")))?;
                if step == 0 {
                    return Err(bad("a step of 0".into()));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = value(a, names, base).ok_or_else(|| bad(format!("{a:?} is not a value")))?;
            let b = value(b, names, base).ok_or_else(|| bad(format!("{b:?} is not a value")))?;
            (a, b)
        } else {
            let a = value(range, names, base).ok_or_else(|| bad(format!("{range:?} is not a value")))?;
            // `a/n` means from a to the end in steps of n.
            (a, if part.contains('/') { hi } else { a })
        };
        if a < lo || b > hi || a > b {
            return Err(bad(format!("{a}-{b} is outside {lo}-{hi}")));
        }
        out.extend((a..=b).step_by(step as usize));
    }
    Ok((out, text == "*"))
}

impl CronExpr {
    /// Parses five or six fields; the message names the bad field.
    pub fn parse(text: &str) -> Result<CronExpr, String> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let (sec, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            n => return Err(format!("{text:?}: {n} fields; expected 5 (min hour dom month dow) or 6 (sec first)")),
        };
        let (seconds, _) = field(sec, "second", 0, 59, &[], 0)?;
        let (minutes, _) = field(rest[0], "minute", 0, 59, &[], 0)?;
        let (hours, _) = field(rest[1], "hour", 0, 23, &[], 0)?;
        let (days, days_any) = field(rest[2], "day-of-month", 1, 31, &[], 0)?;
        let (months, _) = field(rest[3], "month", 1, 12, &MONTHS, 1)?;
        let (mut weekdays, weekdays_any) = field(rest[4], "day-of-week", 0, 7, &WEEKDAYS, 0)?;
        if weekdays.remove(&7) {
            weekdays.insert(0);
        }
        Ok(CronExpr { text: text.to_string(), seconds, minutes, hours, days, months, weekdays, days_any, weekdays_any })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn day_matches(&self, days_since_epoch: i64) -> bool {
        let (_, m, d) = civil(days_since_epoch);
        if !self.months.contains(&m) {
            return false;
        }
        // 1970-01-01 was a Thursday (4).
        let wd = (days_since_epoch + 4).rem_euclid(7) as u32;
        let (dom, dow) = (self.days.contains(&d), self.weekdays.contains(&wd));
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The first time strictly after `ms` (milliseconds since the epoch, UTC) that matches,
    /// within the next eight years (`None` for expressions that never match, like 31 February).
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        let start = ms.div_euclid(1000) + 1;
        let first = start.div_euclid(86_400);
        let mut from = start.rem_euclid(86_400) as u32;
        for day in first..first + 366 * 8 {
            if self.day_matches(day) {
                if let Some(t) = self.time_in_day(from) {
                    return Some((day * 86_400 + i64::from(t)) * 1000);
                }
            }
            from = 0;
        }
        None
    }

    /// The first matching second of a day at or after `from` seconds into it.
    fn time_in_day(&self, from: u32) -> Option<u32> {
        let (h0, m0, s0) = (from / 3600, from / 60 % 60, from % 60);
        for &h in self.hours.range(h0..) {
            let mfrom = if h == h0 { m0 } else { 0 };
            for &m in self.minutes.range(mfrom..) {
                let sfrom = if h == h0 && m == m0 { s0 } else { 0 };
                if let Some(&s) = self.seconds.range(sfrom..).next() {
                    return Some(h * 3600 + m * 60 + s);
                }
            }
        }
        None
    }
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Milliseconds of a UTC time.
    fn t(s: &str) -> i64 {
        humantime::parse_rfc3339(s).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
    }

    #[test]
    fn next_occurrences() {
        let next = |e: &str, after: &str| {
            CronExpr::parse(e).unwrap().next_after(t(after)).map(|ms| {
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms as u64))
                    .to_string()
            })
        };
        assert_eq!(next("*/5 * * * *", "2026-11-27T05:52:10Z").as_deref(), Some("2026-11-27T05:55:00Z"));
        assert_eq!(next("* * * * * *", "2026-11-27T05:52:10.500Z").as_deref(), Some("2026-11-27T05:52:11Z"));
        assert_eq!(next("0 3 * * *", "2026-11-27T05:00:00Z").as_deref(), Some("2026-11-28T03:00:00Z"));
        // Sunday 2026-11-29; the weekly digest.
        assert_eq!(next("0 8 * * sun", "2026-11-27T05:00:00Z").as_deref(), Some("2026-11-29T08:00:00Z"));
        assert_eq!(next("0 8 * * 7", "2026-11-27T05:00:00Z").as_deref(), Some("2026-11-29T08:00:00Z"));
        assert_eq!(next("0 0 29 feb *", "2026-11-27T05:00:00Z").as_deref(), Some("2028-02-29T00:00:00Z"));
        assert_eq!(next("30 12 31 dec *", "2026-12-31T12:30:00Z").as_deref(), Some("2027-12-31T12:30:00Z"));
        // Both day fields restricted: either matches (the 1st, or a Monday).
        assert_eq!(next("0 0 1 * mon", "2026-11-27T05:00:00Z").as_deref(), Some("2026-11-30T00:00:00Z"));
        assert_eq!(next("0 0 31 2 *", "2026-11-27T05:00:00Z"), None);
        assert_eq!(next("10-20/5 * * * * *", "2026-11-27T05:52:16Z").as_deref(), Some("2026-11-27T05:52:20Z"));
    }

    #[test]
    fn bad_expressions_name_the_field() {
        for (e, what) in [
            ("* * * *", "4 fields"),
            ("61 * * * *", "minute"),
            ("* 24 * * *", "hour"),
            ("* * 0 * *", "day-of-month"),
            ("* * * 13 *", "month"),
            ("* * * * funday", "day-of-week"),
            ("*/0 * * * *", "step of 0"),
            ("5-1 * * * *", "minute"),
        ] {
            let err = CronExpr::parse(e).unwrap_err();
            assert!(err.contains(what), "{e}: {err}");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(t("2028-02-29T00:00:00Z") / 86_400_000), (2028, 2, 29));
    }
}
