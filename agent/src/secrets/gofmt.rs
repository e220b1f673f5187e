//! Number and time formatting exactly as Go's `strconv`, `encoding/json` and
//! `time` packages do it, since sops' output and MAC depend on them.

/// Shortest round-trip decimal digits and decimal point position of a finite,
/// non-zero `f`: `f = 0.d1d2d3... * 10^dp`.
fn shortest_digits(f: f64) -> (Vec<u8>, i32) {
    let s = format!("{:e}", f.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    (digits, exp + 1)
}

fn special(f: f64, out: &mut Vec<u8>) -> bool {
    if f.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if f == f64::INFINITY {
        out.extend_from_slice(b"+Inf");
    } else if f == f64::NEG_INFINITY {
        out.extend_from_slice(b"-Inf");
    } else {
        return false;
    }
    true
}

/// Go `strconv.FormatFloat(f, 'f', -1, 64)`.
pub fn format_float_f(f: f64, out: &mut Vec<u8>) {
    if special(f, out) {
        return;
    }
    // Rust's Display is the shortest round-trip representation without exponent,
    // which is what Go's 'f' with precision -1 produces.
    out.extend_from_slice(f.to_string().as_bytes());
}

fn fmt_e(neg: bool, digits: &[u8], dp: i32, out: &mut Vec<u8>) {
    if neg {
        out.push(b'-');
    }
    out.push(digits.first().copied().unwrap_or(b'0'));
    if digits.len() > 1 {
        out.push(b'.');
        out.extend_from_slice(&digits[1..]);
    }
    out.push(b'e');
    let exp = if digits.first().is_some_and(|d| *d != b'0') {
        dp - 1
    } else {
        0
    };
    out.push(if exp < 0 { b'-' } else { b'+' });
    let e = exp.unsigned_abs();
    if e < 10 {
        out.push(b'0');
    }
    out.extend_from_slice(e.to_string().as_bytes());
}

/// Go `strconv.FormatFloat(f, 'g', -1, 64)`, as used by the YAML encoder.
pub fn format_float_g(f: f64, out: &mut Vec<u8>) {
    if special(f, out) {
        return;
    }
    if f == 0.0 {
        out.extend_from_slice(if f.is_sign_negative() { b"-0" } else { b"0" });
        return;
    }
    let (digits, dp) = shortest_digits(f);
    let exp = dp - 1;
    if !(-4..6).contains(&exp) {
        fmt_e(f < 0.0, &digits, dp, out);
    } else {
        format_float_f(f, out);
    }
}

/// Go `encoding/json` float encoding.
pub fn format_float_json(f: f64, out: &mut Vec<u8>) {
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let (digits, dp) = shortest_digits(f);
        let start = out.len();
        fmt_e(f < 0.0, &digits, dp, out);
        // Go cleans up e-09 to e-9.
        let n = out.len() - start;
        if n >= 4 && out[out.len() - 4] == b'e' && out[out.len() - 3] == b'-' && out[out.len() - 2] == b'0' {
            let last = out[out.len() - 1];
            let len = out.len();
            out[len - 2] = last;
            out.truncate(len - 1);
        }
    } else {
        format_float_f(f, out);
    }
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Reads 1 or 2 digits (Go's `getnum(value, false)`).
fn num12(s: &[u8], i: &mut usize) -> Option<u32> {
    let d0 = *s.get(*i)?;
    if !d0.is_ascii_digit() {
        return None;
    }
    *i += 1;
    let mut v = u32::from(d0 - b'0');
    if let Some(d1) = s.get(*i).copied().filter(u8::is_ascii_digit) {
        v = v * 10 + u32::from(d1 - b'0');
        *i += 1;
    }
    Some(v)
}

fn num2(s: &[u8], i: &mut usize) -> Option<u32> {
    let a = s.get(*i).copied().filter(u8::is_ascii_digit)?;
    let b = s.get(*i + 1).copied().filter(u8::is_ascii_digit)?;
    *i += 2;
    Some(u32::from(a - b'0') * 10 + u32::from(b - b'0'))
}

/// Parses a plain YAML scalar the way go-yaml's `parseTimestamp` does and
/// returns it in Go's `time.RFC3339Nano` form, or `None` if it is no timestamp.
pub fn yaml_timestamp(s: &str) -> Option<String> {
    let b = s.as_bytes();
    if b.len() < 5 || !b[..4].iter().all(u8::is_ascii_digit) || b[4] != b'-' {
        return None;
    }
    let year: i64 = s[..4].parse().ok()?;
    let mut i = 5;
    let month = num12(b, &mut i)?;
    if b.get(i) != Some(&b'-') {
        return None;
    }
    i += 1;
    let day = num12(b, &mut i)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let date = format!("{year:04}-{month:02}-{day:02}");
    if i == b.len() {
        return Some(format!("{date}T00:00:00Z"));
    }
    let sep = b[i];
    if sep != b'T' && sep != b't' && sep != b' ' {
        return None;
    }
    i += 1;
    let hour = num12(b, &mut i)?;
    if b.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    let minute = num12(b, &mut i)?;
    if b.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    let second = num12(b, &mut i)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut frac = String::new();
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 9)];
        frac = digits.trim_end_matches('0').to_string();
    }
    let zone = if sep == b' ' {
        if i != b.len() {
            return None;
        }
        "Z".to_string()
    } else {
        match b.get(i) {
            Some(b'Z') if i + 1 == b.len() => "Z".to_string(),
            Some(&c) if c == b'+' || c == b'-' => {
                i += 1;
                let oh = num2(b, &mut i)?;
                if b.get(i) != Some(&b':') {
                    return None;
                }
                i += 1;
                let om = num2(b, &mut i)?;
                if i != b.len() || oh > 23 || om > 59 {
                    return None;
                }
                if oh == 0 && om == 0 {
                    "Z".to_string()
                } else {
                    format!("{}{oh:02}:{om:02}", c as char)
                }
            }
            _ => return None,
        }
    };
    let frac = if frac.is_empty() {
        String::new()
    } else {
        format!(".{frac}")
    };
    Some(format!("{date}T{hour:02}:{minute:02}:{second:02}{frac}{zone}"))
}

/// Normalizes sops' `lastmodified` (parsed with RFC 3339, formatted with
/// `time.RFC3339`, i.e. without fractional seconds) as the MAC's additional data.
pub fn rfc3339_seconds(s: &str) -> Option<String> {
    let b = s.as_bytes();
    // Strict RFC 3339: YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm)
    if b.len() < 20 {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return None;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let zone = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => "Z".to_string(),
        Some(&c) if (c == b'+' || c == b'-') && i + 6 == b.len() => {
            let z = &s[i..];
            if z.as_bytes()[3] != b':' || !z[1..3].bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            if &z[1..] == "00:00" {
                "Z".to_string()
            } else {
                z.to_string()
            }
        }
        _ => return None,
    };
    Some(format!("{}T{}{}", &s[..10], &s[11..19], zone))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(f: f64) -> String {
        let mut v = Vec::new();
        format_float_g(f, &mut v);
        String::from_utf8(v).expect("ascii")
    }
    fn fl(f: f64) -> String {
        let mut v = Vec::new();
        format_float_f(f, &mut v);
        String::from_utf8(v).expect("ascii")
    }
    fn j(f: f64) -> String {
        let mut v = Vec::new();
        format_float_json(f, &mut v);
        String::from_utf8(v).expect("ascii")
    }

    #[test]
    fn go_g_format() {
        assert_eq!(g(3.0), "3");
        assert_eq!(g(1234.56789), "1234.56789");
        assert_eq!(g(1e10), "1e+10");
        assert_eq!(g(0.000001), "1e-06");
        assert_eq!(g(0.0001), "0.0001");
        assert_eq!(g(123456.0), "123456");
        assert_eq!(g(1234567.0), "1.234567e+06");
        assert_eq!(g(-2.5e-7), "-2.5e-07");
        assert_eq!(g(1e100), "1e+100");
        assert_eq!(g(f64::INFINITY), "+Inf");
    }

    #[test]
    fn go_f_format() {
        assert_eq!(fl(3.0), "3");
        assert_eq!(fl(0.1), "0.1");
        assert_eq!(fl(1e21), "1000000000000000000000");
        assert_eq!(fl(-1.5), "-1.5");
        assert_eq!(fl(f64::NAN), "NaN");
    }

    #[test]
    fn go_json_format() {
        assert_eq!(j(5.0), "5");
        assert_eq!(j(1e21), "1e+21");
        assert_eq!(j(1.5e-7), "1.5e-7");
        assert_eq!(j(1e-10), "1e-10");
        assert_eq!(j(0.000001), "0.000001");
        assert_eq!(j(12345678901234567890.0), "12345678901234567000");
    }

    #[test]
    fn timestamps() {
        assert_eq!(yaml_timestamp("2024-01-01").as_deref(), Some("2024-01-01T00:00:00Z"));
        assert_eq!(
            yaml_timestamp("2024-1-2T3:04:05.500+02:00").as_deref(),
            Some("2024-01-02T03:04:05.5+02:00")
        );
        assert_eq!(
            yaml_timestamp("2001-12-14 21:59:43.10").as_deref(),
            Some("2001-12-14T21:59:43.1Z")
        );
        assert_eq!(yaml_timestamp("2024-02-30"), None);
        assert_eq!(yaml_timestamp("20240101"), None);
        assert_eq!(yaml_timestamp("2024-01-01x"), None);
        assert_eq!(
            rfc3339_seconds("2026-11-23T18:26:41.123Z").as_deref(),
            Some("2026-11-23T18:26:41Z")
        );
        assert_eq!(
            rfc3339_seconds("2026-11-23T18:26:41+02:00").as_deref(),
            Some("2026-11-23T18:26:41+02:00")
        );
        assert_eq!(rfc3339_seconds("yesterday"), None);
    }
}
