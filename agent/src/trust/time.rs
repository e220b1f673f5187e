//! Minimal UTC calendar arithmetic (no time-zone database needed).
//!
//! Used to parse the `valid-after` / `valid-before` options of an allowed
//! signers file and to render Unix timestamps in error messages.

/// Days since 1970-01-01 for a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Shift the year so that it starts in March: the leap day is then the
    // last day of the (shifted) year.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400; // 0..=399
    let m = i64::from(month);
    let shifted_month = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097; // 0..=146096
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153; // March = 0
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both values are small and positive by construction.
    (year, month as u32, day as u32)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ => {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            if leap {
                29
            } else {
                28
            }
        }
    }
}

/// Parses an OpenSSH absolute time as used by `valid-after`/`valid-before`:
/// `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, optionally followed by `Z`.
///
/// OpenSSH interprets a time without `Z` in the local time zone of the
/// verifying host; tend always interprets it as UTC so that verification
/// does not depend on the host's `TZ` (documented in the module docs).
/// Returns Unix seconds.
pub(crate) fn parse_ssh_time(s: &str) -> Result<i64, String> {
    let digits = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')).unwrap_or(s);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid time \"{s}\": expected YYYYMMDD[HHMM[SS]][Z]"));
    }
    if !matches!(digits.len(), 8 | 12 | 14) {
        return Err(format!(
            "invalid time \"{s}\": expected 8, 12 or 14 digits (YYYYMMDD[HHMM[SS]]), optionally followed by Z"
        ));
    }
    // All characters are ASCII digits, so slicing and parsing cannot fail;
    // map errors anyway instead of panicking.
    let num = |range: std::ops::Range<usize>| -> Result<u32, String> {
        digits
            .get(range)
            .and_then(|p| p.parse::<u32>().ok())
            .ok_or_else(|| format!("invalid time \"{s}\""))
    };
    let year = i64::from(num(0..4)?);
    let month = num(4..6)?;
    let day = num(6..8)?;
    let (hour, minute, second) = match digits.len() {
        8 => (0, 0, 0),
        12 => (num(8..10)?, num(10..12)?, 0),
        _ => (num(8..10)?, num(10..12)?, num(12..14)?),
    };
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(format!("invalid time \"{s}\": no such date"));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(format!("invalid time \"{s}\": no such time of day"));
    }
    Ok(
        days_from_civil(year, month, day) * 86_400
            + i64::from(hour) * 3600
            + i64::from(minute) * 60
            + i64::from(second),
    )
}

/// Renders Unix seconds as an RFC 3339 UTC timestamp, e.g.
/// `2024-01-01T00:00:00Z`.
pub(crate) fn format_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The current time as Unix seconds (0 if the clock is before 1970).
pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_lengths() {
        assert_eq!(parse_ssh_time("19700101"), Ok(0));
        assert_eq!(parse_ssh_time("19700101Z"), Ok(0));
        assert_eq!(parse_ssh_time("20240229"), Ok(1_709_164_800));
        assert_eq!(parse_ssh_time("202402291230"), Ok(1_709_164_800 + 12 * 3600 + 30 * 60));
        assert_eq!(
            parse_ssh_time("20240229123059Z"),
            Ok(1_709_164_800 + 12 * 3600 + 30 * 60 + 59)
        );
        assert_eq!(parse_ssh_time("20000301"), Ok(951_868_800));
    }

    #[test]
    fn rejects_bad_times() {
        for bad in [
            "",
            "2024",
            "2024010",
            "202401011",
            "20230229",
            "20241301",
            "20240132",
            "202401012460",
            "2024010100001",
            "2024-01-01",
            "20240101ZZ",
            "x0240101",
        ] {
            assert!(parse_ssh_time(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_round_trip() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_709_209_859), "2024-02-29T12:30:59Z");
        assert_eq!(format_unix(-1), "1969-12-31T23:59:59Z");
        for days in [-800_000i64, -1, 0, 59, 60, 365, 10_957, 11_016, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "day {days}");
        }
    }
}
