//! Calendar arithmetic on Unix times, in UTC (the times vault shows): dates from seconds and
//! back, ISO weeks, and adding years, months and days the way calendars do.

/// A UTC calendar date and hour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    /// 1 to 12.
    pub month: u32,
    /// 1 to 31.
    pub day: u32,
    /// 0 to 23.
    pub hour: u32,
}

/// Days since 1970-01-01 of a date (Howard Hinnant's days-from-civil); months and days outside
/// their ranges roll over into the next ones (month 13 is January of the next year, day 0 the
/// last of the month before).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    clamp(wide_days(year.into(), month.into(), day.into()))
}

/// [`days_from_civil`] in 128 bits: no year, month or day an `i64` holds overflows it.
fn wide_days(year: i128, month: i128, day: i128) -> i128 {
    // Months first, so that any month number works.
    let year = year + (month - 1).div_euclid(12);
    let month = (month - 1).rem_euclid(12) + 1;
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 + (day - 1)
}

fn clamp(v: i128) -> i64 {
    v.clamp(i64::MIN.into(), i64::MAX.into()) as i64
}

/// The date of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

/// The UTC date and hour of a Unix time.
pub fn civil(secs: i64) -> Civil {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    Civil {
        year,
        month,
        day,
        hour: (secs.rem_euclid(86_400) / 3600) as u32,
    }
}

/// The ISO 8601 week of a Unix time: (ISO year, week 1 to 53). Weeks start on Monday; week 1 is
/// the one holding the year's first Thursday.
pub fn iso_week(secs: i64) -> (i64, u32) {
    let days = secs.div_euclid(86_400);
    // 1970-01-01 was a Thursday: Monday is 0.
    let weekday = (days + 3).rem_euclid(7);
    let thursday = days - weekday + 3;
    let (year, _, _) = civil_from_days(thursday);
    let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
    (year, week as u32)
}

/// `secs` moved by years, months, days and hours as calendars do (Go's `AddDate`): the date is
/// normalised after the move, so 31 March less one month is 3 March (31 February rolls over).
/// Saturates instead of overflowing.
pub fn add(secs: i64, years: i64, months: i64, days: i64, hours: i64) -> i64 {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let day = wide_days(
        i128::from(y) + i128::from(years),
        i128::from(m) + i128::from(months),
        i128::from(d) + i128::from(days),
    );
    clamp(day * 86_400 + i128::from(secs.rem_euclid(86_400)) + i128::from(hours) * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i64, m: i64, d: i64, h: i64) -> i64 {
        days_from_civil(y, m, d) * 86_400 + h * 3600
    }

    #[test]
    fn dates_round_trip() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m.into(), d.into()), days);
        }
        assert_eq!(
            civil(0),
            Civil {
                year: 1970,
                month: 1,
                day: 1,
                hour: 0
            }
        );
        assert_eq!(
            civil(at(2024, 2, 29, 23)),
            Civil {
                year: 2024,
                month: 2,
                day: 29,
                hour: 23
            }
        );
        assert_eq!(civil(-1).day, 31);
    }

    #[test]
    fn iso_weeks_at_year_ends() {
        assert_eq!(iso_week(at(2024, 12, 29, 12)), (2024, 52)); // a Sunday
        assert_eq!(iso_week(at(2024, 12, 30, 0)), (2025, 1)); // the Monday after
        assert_eq!(iso_week(at(2021, 1, 3, 0)), (2020, 53));
        assert_eq!(iso_week(at(2021, 1, 4, 0)), (2021, 1));
        assert_eq!(iso_week(at(2026, 12, 7, 0)), (2026, 50));
        assert_eq!(iso_week(at(1970, 1, 1, 0)), (1970, 1));
    }

    #[test]
    fn adding_months_rolls_over_like_calendars() {
        assert_eq!(add(at(2024, 3, 31, 5), 0, -1, 0, 0), at(2024, 3, 2, 5));
        assert_eq!(add(at(2023, 3, 31, 5), 0, -1, 0, 0), at(2023, 3, 3, 5));
        assert_eq!(add(at(2024, 2, 29, 0), -1, 0, 0, 0), at(2023, 3, 1, 0));
        assert_eq!(add(at(2024, 1, 10, 0), 0, 0, -10, -1), at(2023, 12, 30, 23));
        assert_eq!(add(at(2024, 1, 10, 0), 0, -13, 0, 0), at(2022, 12, 10, 0));
        assert_eq!(add(0, i64::MIN, 0, 0, 0), i64::MIN);
        assert_eq!(add(i64::MAX, 0, 0, 0, i64::MAX), i64::MAX);
    }
}
