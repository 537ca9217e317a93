//! Which snapshots a retention policy keeps (`vault forget`): restic's rules, as a pure function
//! of the snapshots' times and tags, with the reason each one is kept.
//!
//! Hours, days, weeks (ISO 8601), months and years are counted in UTC, as vault shows times.

use std::fmt;

use crate::civil;
use crate::error::{Error, Result};

/// How many snapshots of one kind to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Count {
    #[default]
    None,
    Last(u32),
    /// `-1` on the command line: one in every period, however many.
    All,
}

impl Count {
    /// From the command line: `N`, or `-1` for all.
    pub fn parse(s: &str) -> Result<Count> {
        match s.trim() {
            "-1" | "all" => Ok(Count::All),
            "0" => Ok(Count::None),
            n => n.parse::<u32>().map(Count::Last).map_err(|_| {
                Error::Invalid(format!("{s:?} is not a count (a number, or -1 for all)"))
            }),
        }
    }

    fn active(self) -> bool {
        self != Count::None
    }
}

/// A span of calendar time: `1y2m3d4h` (years, months, days, hours; any of them left out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub years: i64,
    pub months: i64,
    pub days: i64,
    pub hours: i64,
}

impl Span {
    pub fn parse(s: &str) -> Result<Span> {
        let bad = || {
            Error::Invalid(format!(
                "{s:?} is not a duration: use numbers with y, m, d and h, such as 7d, 36h or 1y6m"
            ))
        };
        let mut span = Span::default();
        let mut num = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i64 = num.parse().map_err(|_| bad())?;
            if n > 1_000_000 {
                return Err(bad());
            }
            num.clear();
            let slot = match c {
                'y' => &mut span.years,
                'm' => &mut span.months,
                'd' => &mut span.days,
                'h' => &mut span.hours,
                _ => return Err(bad()),
            };
            *slot += n;
            any = true;
        }
        if !num.is_empty() || !any {
            return Err(bad());
        }
        Ok(span)
    }

    fn zero(&self) -> bool {
        *self == Span::default()
    }

    /// `t` less this span.
    fn before(&self, t: i64) -> i64 {
        civil::add(t, -self.years, -self.months, -self.days, -self.hours)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

/// A retention policy. Empty (nothing set), it keeps everything: the caller refuses to run one.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub last: Count,
    pub hourly: Count,
    pub daily: Count,
    pub weekly: Count,
    pub monthly: Count,
    pub yearly: Count,
    /// Every snapshot within this span of the newest one.
    pub within: Span,
    pub within_hourly: Span,
    pub within_daily: Span,
    pub within_weekly: Span,
    pub within_monthly: Span,
    pub within_yearly: Span,
    /// Every snapshot holding all the tags of one of these lists; an empty list keeps the
    /// snapshots without tags (restic's `--keep-tag ''`).
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
            && [
                self.last,
                self.hourly,
                self.daily,
                self.weekly,
                self.monthly,
                self.yearly,
            ]
            .iter()
            .all(|c| !c.active())
            && [
                self.within,
                self.within_hourly,
                self.within_daily,
                self.within_weekly,
                self.within_monthly,
                self.within_yearly,
            ]
            .iter()
            .all(Span::zero)
    }
}

/// One snapshot as the policy sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Unix time.
    pub time: i64,
    pub tags: Vec<String>,
}

/// What the policy decided for one snapshot: kept for these reasons, or (none) removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub reasons: Vec<String>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// The period a snapshot falls in, for one kind of bucket.
#[derive(Clone, Copy)]
enum Period {
    /// Every snapshot its own (keep-last).
    Each,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    fn of(self, time: i64, nr: usize) -> i64 {
        let c = civil::civil(time);
        let (y, m, d, h) = (
            c.year,
            i64::from(c.month),
            i64::from(c.day),
            i64::from(c.hour),
        );
        match self {
            Period::Each => nr as i64,
            Period::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
            Period::Day => (y * 100 + m) * 100 + d,
            Period::Week => {
                let (wy, w) = civil::iso_week(time);
                wy * 100 + i64::from(w)
            }
            Period::Month => y * 100 + m,
            Period::Year => y,
        }
    }
}

/// Decide for every snapshot of one group (same host and paths, say). `snaps` may come in any
/// order; decisions come back in the same order. `now` (Unix time): snapshots dated after it do
/// not count as the newest for the `within` rules. Semantics are restic's: newest first, each
/// count keeps the newest snapshot of each period until it runs out, and the oldest snapshot is
/// kept too while a count has some left.
pub fn apply(policy: &Policy, snaps: &[Candidate], now: i64) -> Vec<Decision> {
    let mut out = vec![Decision::default(); snaps.len()];
    if policy.is_empty() {
        for d in &mut out {
            d.reasons.push("policy is empty".into());
        }
        return out;
    }
    // Newest first; equal times keep their given order.
    let mut order: Vec<usize> = (0..snaps.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(snaps[*i].time));
    let latest = snaps
        .iter()
        .map(|s| s.time)
        .filter(|t| *t < now)
        .max()
        .unwrap_or(i64::MIN);

    let mut counts: Vec<(Count, Period, &str, Option<i64>)> = vec![
        (policy.last, Period::Each, "last snapshot", None),
        (policy.hourly, Period::Hour, "hourly snapshot", None),
        (policy.daily, Period::Day, "daily snapshot", None),
        (policy.weekly, Period::Week, "weekly snapshot", None),
        (policy.monthly, Period::Month, "monthly snapshot", None),
        (policy.yearly, Period::Year, "yearly snapshot", None),
    ];
    let mut within: Vec<(Span, Period, &str, Option<i64>)> = vec![
        (policy.within_hourly, Period::Hour, "hourly within", None),
        (policy.within_daily, Period::Day, "daily within", None),
        (policy.within_weekly, Period::Week, "weekly within", None),
        (policy.within_monthly, Period::Month, "monthly within", None),
        (policy.within_yearly, Period::Year, "yearly within", None),
    ];
    let oldest = order.len().saturating_sub(1);
    for (nr, &i) in order.iter().enumerate() {
        let cur = &snaps[i];
        let reasons = &mut out[i].reasons;
        for list in &policy.tags {
            if list.is_empty() && cur.tags.is_empty() {
                reasons.push("has no tags".into());
            } else if !list.is_empty() && list.iter().all(|t| cur.tags.contains(t)) {
                reasons.push(format!("has tags {}", list.join(",")));
            }
        }
        if !policy.within.zero() && cur.time > policy.within.before(latest) {
            reasons.push(format!("within {} of the newest", policy.within));
        }
        for (count, period, why, last) in counts.iter_mut() {
            if !count.active() {
                continue;
            }
            let p = period.of(cur.time, nr);
            if Some(p) != *last || nr == oldest {
                *last = Some(p);
                if let Count::Last(n) = count {
                    *n -= 1;
                    if *n == 0 {
                        *count = Count::None;
                    }
                }
                reasons.push((*why).to_string());
            }
        }
        for (span, period, why, last) in within.iter_mut() {
            if span.zero() || cur.time <= span.before(latest) {
                continue;
            }
            let p = period.of(cur.time, nr);
            if Some(p) != *last {
                *last = Some(p);
                reasons.push(format!("{why} {span}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::civil::days_from_civil;

    /// `YYYY-MM-DD HH:MM` in UTC.
    fn t(s: &str) -> i64 {
        let n: Vec<i64> = s
            .split(['-', ' ', ':'])
            .map(|p| p.parse().unwrap())
            .collect();
        days_from_civil(n[0], n[1], n[2]) * 86_400 + n[3] * 3600 + n[4] * 60
    }

    fn snaps(times: &[&str]) -> Vec<Candidate> {
        times
            .iter()
            .map(|s| Candidate {
                time: t(s),
                tags: vec![],
            })
            .collect()
    }

    /// The times kept, newest first.
    fn kept(p: &Policy, s: &[Candidate], now: &str) -> Vec<String> {
        let d = apply(p, s, t(now));
        let mut k: Vec<(i64, String)> = s
            .iter()
            .zip(&d)
            .filter(|(_, d)| d.keep())
            .map(|(c, _)| {
                let d = civil::civil(c.time);
                let min = c.time.rem_euclid(3600) / 60;
                let shown = format!(
                    "{:04}-{:02}-{:02} {:02}:{min:02}",
                    d.year, d.month, d.day, d.hour
                );
                (c.time, shown)
            })
            .collect();
        k.sort_by_key(|e| std::cmp::Reverse(e.0));
        k.into_iter().map(|(_, s)| s).collect()
    }

    const DAYS: &[&str] = &[
        "2024-05-01 10:00",
        "2024-05-01 12:00",
        "2024-05-02 09:00",
        "2024-05-03 08:00",
        "2024-05-03 20:00",
    ];
    const NOW: &str = "2024-06-01 00:00";

    #[test]
    fn the_documented_rules() {
        struct Case {
            what: &'static str,
            policy: Policy,
            times: &'static [&'static str],
            kept: &'static [&'static str],
        }
        let cases = [
            Case {
                what: "keep-last 3: the newest three",
                policy: Policy {
                    last: Count::Last(3),
                    ..Default::default()
                },
                times: DAYS,
                kept: &["2024-05-03 20:00", "2024-05-03 08:00", "2024-05-02 09:00"],
            },
            Case {
                what: "keep-daily 2: the newest of each of the two newest days",
                policy: Policy {
                    daily: Count::Last(2),
                    ..Default::default()
                },
                times: DAYS,
                kept: &["2024-05-03 20:00", "2024-05-02 09:00"],
            },
            Case {
                what: "keep-daily 5 with 3 days: one a day, and the oldest while counts are left",
                policy: Policy {
                    daily: Count::Last(5),
                    ..Default::default()
                },
                times: DAYS,
                kept: &[
                    "2024-05-03 20:00",
                    "2024-05-02 09:00",
                    "2024-05-01 12:00",
                    "2024-05-01 10:00",
                ],
            },
            Case {
                what: "keep-daily -1: one a day, however many days, and the oldest",
                policy: Policy {
                    daily: Count::All,
                    ..Default::default()
                },
                times: DAYS,
                kept: &[
                    "2024-05-03 20:00",
                    "2024-05-02 09:00",
                    "2024-05-01 12:00",
                    "2024-05-01 10:00",
                ],
            },
            Case {
                what: "keep-hourly 2 and keep-last 1 overlap",
                policy: Policy {
                    hourly: Count::Last(2),
                    last: Count::Last(1),
                    ..Default::default()
                },
                times: &["2024-05-01 10:05", "2024-05-01 10:40", "2024-05-01 11:10"],
                kept: &["2024-05-01 11:10", "2024-05-01 10:40"],
            },
            Case {
                what: "keep-within 2d: everything after the newest less two days",
                policy: Policy {
                    within: Span::parse("2d").unwrap(),
                    ..Default::default()
                },
                times: DAYS,
                kept: &["2024-05-03 20:00", "2024-05-03 08:00", "2024-05-02 09:00"],
            },
            Case {
                what: "keep-within counts from the newest snapshot not in the future",
                policy: Policy {
                    within: Span::parse("1d").unwrap(),
                    ..Default::default()
                },
                times: &["2024-05-02 07:00", "2024-05-03 08:00", "2024-07-01 00:00"],
                kept: &["2024-07-01 00:00", "2024-05-03 08:00"],
            },
            Case {
                what: "keep-weekly 2 across a year end: ISO weeks",
                policy: Policy {
                    weekly: Count::Last(2),
                    ..Default::default()
                },
                // Sunday 2024-12-29 is in 2024-W52, Monday 2024-12-30 in 2025-W01.
                times: &["2024-12-28 10:00", "2024-12-29 10:00", "2024-12-30 10:00"],
                kept: &["2024-12-30 10:00", "2024-12-29 10:00"],
            },
            Case {
                what: "keep-monthly 2 and keep-yearly 3",
                policy: Policy {
                    monthly: Count::Last(2),
                    yearly: Count::Last(3),
                    ..Default::default()
                },
                times: &[
                    "2022-06-01 00:00",
                    "2023-11-30 00:00",
                    "2023-12-01 00:00",
                    "2023-12-31 00:00",
                    "2024-01-15 00:00",
                ],
                kept: &["2024-01-15 00:00", "2023-12-31 00:00", "2022-06-01 00:00"],
            },
            Case {
                what: "keep-within-daily 2d: one a day within two days of the newest",
                policy: Policy {
                    within_daily: Span::parse("2d").unwrap(),
                    ..Default::default()
                },
                times: DAYS,
                kept: &["2024-05-03 20:00", "2024-05-02 09:00"],
            },
        ];
        for c in cases {
            let got = kept(&c.policy, &snaps(c.times), NOW);
            assert_eq!(got, c.kept, "{}", c.what);
        }
    }

    #[test]
    fn tags_keep_whole_lists_and_reasons_are_given() {
        let mut s = snaps(DAYS);
        s[0].tags = vec!["album".into(), "raw".into()];
        s[1].tags = vec!["album".into()];
        let p = Policy {
            last: Count::Last(1),
            tags: vec![vec!["album".into(), "raw".into()]],
            ..Default::default()
        };
        let d = apply(&p, &s, t(NOW));
        assert_eq!(d[0].reasons, ["has tags album,raw"]);
        assert!(!d[1].keep(), "one tag of the list is not enough");
        assert_eq!(d[4].reasons, ["last snapshot"]);
        assert!(!d[2].keep() && !d[3].keep());
        // `--keep-tag ''`: the snapshots without tags.
        let p = Policy {
            tags: vec![vec![]],
            ..Default::default()
        };
        let d = apply(&p, &s, t(NOW));
        let untagged: Vec<bool> = d.iter().map(Decision::keep).collect();
        assert_eq!(untagged, [false, false, true, true, true]);
        assert_eq!(d[2].reasons, ["has no tags"]);
    }

    #[test]
    fn an_empty_policy_keeps_everything_and_says_so() {
        let p = Policy::default();
        assert!(p.is_empty());
        let d = apply(&p, &snaps(DAYS), t(NOW));
        assert!(d.iter().all(|d| d.reasons == ["policy is empty"]));
        assert!(apply(&p, &[], 0).is_empty());
    }

    #[test]
    fn counts_and_spans_parse() {
        assert_eq!(Count::parse("3").unwrap(), Count::Last(3));
        assert_eq!(Count::parse("-1").unwrap(), Count::All);
        assert_eq!(Count::parse("0").unwrap(), Count::None);
        assert!(Count::parse("-2").is_err());
        assert!(Count::parse("x").is_err());
        let s = Span::parse("1y2m3d4h").unwrap();
        assert_eq!((s.years, s.months, s.days, s.hours), (1, 2, 3, 4));
        assert_eq!(s.to_string(), "1y2m3d4h");
        assert_eq!(Span::parse("36h").unwrap().hours, 36);
        for bad in ["", "d", "7", "7x", "1y2", "-1d", "99999999999d"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let s = vec![
            Candidate {
                time: i64::MIN,
                tags: vec![],
            },
            Candidate {
                time: i64::MAX,
                tags: vec![],
            },
            Candidate {
                time: 0,
                tags: vec![],
            },
        ];
        let p = Policy {
            hourly: Count::All,
            weekly: Count::Last(1),
            within: Span::parse("1000000y").unwrap(),
            within_yearly: Span::parse("1000000y").unwrap(),
            ..Default::default()
        };
        assert_eq!(apply(&p, &s, 10).len(), 3);
    }
}
