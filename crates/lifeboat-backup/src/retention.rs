//! Which snapshots a retention policy keeps. Pure: snapshot times in, a verdict with reasons
//! per snapshot out.

use lifeboat_config::Retention;
use time::OffsetDateTime;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub keep: bool,
    /// The rules that keep it (`last`, `daily 2026-11-22`, …); empty when it goes.
    pub reasons: Vec<String>,
}

/// `times` in any order; the verdicts are in the same order. A policy that keeps nothing keeps
/// everything (callers refuse it before; this is the safe fallback).
pub fn apply(times: &[OffsetDateTime], policy: &Retention) -> Vec<Verdict> {
    let mut verdicts = vec![
        Verdict {
            keep: false,
            reasons: Vec::new()
        };
        times.len()
    ];
    if policy.keeps_nothing() {
        for v in &mut verdicts {
            v.keep = true;
            v.reasons.push("no retention rule".into());
        }
        return verdicts;
    }
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by(|a, b| times[*b].cmp(&times[*a]).then(b.cmp(a)));
    type Bucket = fn(OffsetDateTime) -> String;
    let rules: [(&str, u32, Bucket); 6] = [
        ("last", policy.last, |t| {
            t.unix_timestamp_nanos().to_string()
        }),
        ("hourly", policy.hourly, |t| {
            format!("{} {:02}h", t.date(), t.hour())
        }),
        ("daily", policy.daily, |t| t.date().to_string()),
        ("weekly", policy.weekly, |t| {
            let (y, w, _) = t.to_iso_week_date();
            format!("{y}-W{w:02}")
        }),
        ("monthly", policy.monthly, |t| {
            format!("{}-{:02}", t.year(), t.month() as u8)
        }),
        ("yearly", policy.yearly, |t| t.year().to_string()),
    ];
    for (name, count, bucket) in rules {
        let mut seen: Option<String> = None;
        let mut left = count;
        for &i in &order {
            if left == 0 {
                break;
            }
            let b = bucket(times[i]);
            if seen.as_ref() == Some(&b) {
                continue;
            }
            let v = &mut verdicts[i];
            v.keep = true;
            v.reasons.push(if name == "last" {
                "last".into()
            } else {
                format!("{name} {b}")
            });
            seen = Some(b);
            left -= 1;
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    fn render(times: &[OffsetDateTime], p: &Retention) -> String {
        apply(times, p)
            .iter()
            .zip(times)
            .map(|(v, t)| {
                format!(
                    "{t} {} {}\n",
                    if v.keep { "keep" } else { "drop" },
                    v.reasons.join(", ")
                )
            })
            .collect()
    }

    #[test]
    fn keeps_the_newest_of_each_bucket() {
        let times = [
            datetime!(2026-11-20 10:00 UTC),
            datetime!(2026-11-21 09:00 UTC),
            datetime!(2026-11-21 18:00 UTC),
            datetime!(2026-11-22 08:00 UTC),
            datetime!(2026-11-22 08:30 UTC),
        ];
        let p = Retention {
            last: 1,
            daily: 2,
            ..Default::default()
        };
        assert_eq!(
            render(&times, &p),
            "2026-11-20 10:00:00.0 +00:00:00 drop \n\
             2026-11-21 9:00:00.0 +00:00:00 drop \n\
             2026-11-21 18:00:00.0 +00:00:00 keep daily 2026-11-21\n\
             2026-11-22 8:00:00.0 +00:00:00 drop \n\
             2026-11-22 8:30:00.0 +00:00:00 keep last, daily 2026-11-22\n"
        );
    }

    proptest! {
        #[test]
        fn never_deletes_the_newest_snapshot(
            secs in proptest::collection::vec(0i64..400_000_000, 1..40),
            last in 0u32..3, hourly in 0u32..3, daily in 0u32..3,
            weekly in 0u32..3, monthly in 0u32..3, yearly in 0u32..3,
        ) {
            let times: Vec<OffsetDateTime> = secs
                .iter()
                .map(|s| OffsetDateTime::from_unix_timestamp(1_500_000_000 + s).unwrap())
                .collect();
            let p = Retention { last, hourly, daily, weekly, monthly, yearly };
            let v = apply(&times, &p);
            let newest = (0..times.len()).max_by_key(|i| (times[*i], *i)).unwrap();
            prop_assert!(v[newest].keep);
            let kept = v.iter().filter(|v| v.keep).count() as u32;
            let bound = if p.keeps_nothing() { times.len() as u32 } else { last + hourly + daily + weekly + monthly + yearly };
            prop_assert!(kept <= bound);
            // Applying the policy to what it kept keeps all of it.
            let kept_times: Vec<_> = times.iter().zip(&v).filter(|(_, v)| v.keep).map(|(t, _)| *t).collect();
            prop_assert!(apply(&kept_times, &p).iter().all(|v| v.keep));
        }
    }
}
