//! Time as a value. The core never reads a clock: callers pass `now` in.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Milliseconds since the Unix epoch (UTC).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    pub fn plus_ms(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

/// `10:42:03.250` (UTC), for reasons and timelines.
impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 % 1000;
        let s = self.0 / 1000;
        let (h, m, s) = ((s / 3600) % 24, (s / 60) % 60, s % 60);
        write!(f, "{h:02}:{m:02}:{s:02}.{ms:03}")
    }
}

/// `1.250 s`, `350 ms`
pub fn format_ms(ms: u64) -> String {
    if ms >= 1000 {
        format!("{:.3} s", ms as f64 / 1000.0)
    } else {
        format!("{ms} ms")
    }
}

/// `48 MiB`, `1.5 KiB`, `12 B`
pub fn format_bytes(b: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, m) in UNITS {
        if b >= m {
            let v = b as f64 / m as f64;
            return if v.fract() == 0.0 {
                format!("{v:.0} {name}")
            } else {
                format!("{v:.1} {name}")
            };
        }
    }
    format!("{b} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_wall_clock_of_day() {
        assert_eq!(Millis(1_700_000_523_250).to_string(), "22:22:03.250");
        assert_eq!(format_ms(1250), "1.250 s");
        assert_eq!(format_bytes(48 << 20), "48 MiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
    }
}
