//! RFC 5322 §3.3 dates for the Received header, from the system clock,
//! without a time-zone database: smtpbox writes UTC (`+0000`).

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time as `Sat, 28 Nov 2026 20:14:17 +0000`.
pub fn now_rfc5322() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_rfc5322(secs)
}

/// Formats seconds since the Unix epoch as an RFC 5322 date in UTC.
pub fn format_rfc5322(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{}, {} {} {} {:02}:{:02}:{:02} +0000",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month 1–12, day 1–31), after Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch() {
        assert_eq!(format_rfc5322(0), "Thu, 1 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn known_dates() {
        // date -u -d @1795896857
        assert_eq!(
            format_rfc5322(1_795_896_857),
            "Sat, 28 Nov 2026 20:14:17 +0000"
        );
        // Leap day.
        assert_eq!(
            format_rfc5322(951_782_400),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
    }
}
