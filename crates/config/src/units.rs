//! Value types written as strings in the config: durations, byte sizes, secrets.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as `250ms`, `5s`, `2h` or `1h 30m`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s)
            .map(Self)
            .map_err(|e| format!("invalid duration `{s}` ({e}); write it like 250ms, 5s, 2m or 1h"))
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string like 250ms, 5s or 2h")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit: write `{n}s` or `{n}ms`")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<HumanDuration, E> {
                Err(E::custom(format!("a duration needs a unit: write `{n}s` or `{n}ms`")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: a number and a unit (ms, s, m, h, d), e.g. `250ms`, `5s`, `2h`.",
            "pattern": "^([0-9]+ *(ns|us|ms|s|m|h|d|sec|min|hour|hours|days) *)+$"
        })
    }
}

/// A size in bytes, written as a number or with a unit: `512`, `64KiB`, `10MiB`, `1GB`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        Self(n * 1024)
    }
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    pub fn get(self) -> u64 {
        self.0
    }
}

const SIZE_UNITS: [(&str, u64); 9] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("kB", 1_000),
    ("B", 1),
    ("", 1),
];

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = (&t[..split], t[split..].trim());
        let bad = || format!("invalid size `{s}`; write it like 512, 64KiB, 10MiB or 1GiB");
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult = SIZE_UNITS.iter().find(|(u, _)| *u == unit).map(|(_, m)| *m).ok_or_else(bad)?;
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("size `{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, mult) in &SIZE_UNITS[..3] {
            if self.0 >= *mult && self.0.is_multiple_of(*mult) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like 512, 64KiB or 10MiB")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A size in bytes: a number, or a number with a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. `64KiB`.",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^[0-9]+ *(B|KB|kB|MB|GB|KiB|MiB|GiB)?$"}
            ]
        })
    }
}

/// A rate written as `N/s`, `N/m`, `N/h` or `N/d`: `100/s`, `10000/h`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Requests per `per`.
    pub count: u64,
    /// The window: one second, minute, hour or day.
    pub per: Duration,
}

impl Rate {
    pub const fn per_second(count: u64) -> Self {
        Self { count, per: Duration::from_secs(1) }
    }
    /// Time between two requests at this rate, in microseconds (at least 1).
    pub fn interval_us(self) -> u64 {
        (self.per.as_micros() as u64 / self.count.max(1)).max(1)
    }
    /// The window in whole seconds (the `w` of a `RateLimit-Policy`).
    pub fn window_secs(self) -> u64 {
        self.per.as_secs()
    }
}

const RATE_UNITS: [(&str, u64); 4] = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)];

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid rate `{s}`; write it like 100/s, 600/m or 10000/h");
        let (num, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u64 = num.trim().parse().map_err(|_| bad())?;
        let secs = RATE_UNITS.iter().find(|(u, _)| *u == unit.trim()).map(|(_, n)| *n).ok_or_else(bad)?;
        if count == 0 {
            return Err(format!("rate `{s}` admits nothing; the count must be at least 1"));
        }
        if count > 1_000_000_000 {
            return Err(format!("rate `{s}` is too large; at most 1000000000 per unit"));
        }
        Ok(Rate { count, per: Duration::from_secs(secs) })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.per.as_secs();
        let unit = RATE_UNITS.iter().find(|(_, n)| *n == secs).map_or("s", |(u, _)| u);
        write!(f, "{}/{unit}", self.count)
    }
}

impl fmt::Debug for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a rate like 100/s, 600/m or 10000/h")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Rate, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Rate, E> {
                Err(E::custom(format!("a rate needs a unit: write `{n}/s`, `{n}/m` or `{n}/h`")))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Rate, E> {
                Err(E::custom(format!("a rate needs a unit: write `{n}/s`, `{n}/m` or `{n}/h`")))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Rate {
    fn schema_name() -> Cow<'static, str> {
        "Rate".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A rate: a count per second, minute, hour or day, e.g. `100/s`, `10000/h`.",
            "pattern": "^ *[0-9]+ */ *(s|m|h|d) *$"
        })
    }
}

/// A secret string: usually written as `${env:NAME}` or `${file:PATH}`. Its value never appears
/// in `Debug` output, logs or `/admin/config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself. Call sites that use it should compare in constant time.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// What a secret looks like wherever the config is shown.
pub const REDACTED: &str = "<redacted>";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl JsonSchema for Secret {
    fn schema_name() -> Cow<'static, str> {
        "Secret".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A secret; write it as `${env:NAME}` or `${file:PATH}` rather than inline."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, ms) in [("250ms", 250), ("5s", 5000), ("2h", 7_200_000), ("1h 30m", 5_400_000)] {
            assert_eq!(s.parse::<HumanDuration>().unwrap().0, Duration::from_millis(ms), "{s}");
        }
        for s in ["", "5", "five seconds", "5 parsecs", "-1s"] {
            let e = s.parse::<HumanDuration>().unwrap_err();
            assert!(e.contains("invalid duration"), "{s}: {e}");
        }
        let e = serde_json::from_value::<HumanDuration>(serde_json::json!(5)).unwrap_err();
        assert!(e.to_string().contains("needs a unit"));
        assert_eq!(HumanDuration::millis(1500).to_string(), "1s 500ms");
    }

    #[test]
    fn sizes() {
        for (s, n) in
            [("512", 512), ("64KiB", 65536), ("10MiB", 10 << 20), ("1GB", 1_000_000_000), ("3 B", 3)]
        {
            assert_eq!(s.parse::<ByteSize>().unwrap().0, n, "{s}");
        }
        for s in ["", "10 MiBs", "x", "-5", "99999999999999999999GiB"] {
            assert!(s.parse::<ByteSize>().is_err(), "{s}");
        }
        assert_eq!(ByteSize::mib(10).to_string(), "10MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        assert_eq!(serde_json::from_value::<ByteSize>(serde_json::json!(42)).unwrap().0, 42);
    }

    #[test]
    fn rates() {
        let r: Rate = "100/s".parse().unwrap();
        assert_eq!(
            (r.count, r.per, r.interval_us(), r.window_secs()),
            (100, Duration::from_secs(1), 10_000, 1)
        );
        assert_eq!("10000/h".parse::<Rate>().unwrap().to_string(), "10000/h");
        assert_eq!(" 5 / m ".parse::<Rate>().unwrap().per, Duration::from_secs(60));
        for s in ["", "100", "100/x", "0/s", "-1/s", "1/0s", "x/s", "2000000000/s"] {
            assert!(s.parse::<Rate>().is_err(), "{s}");
        }
        let e = serde_json::from_value::<Rate>(serde_json::json!(5)).unwrap_err();
        assert!(e.to_string().contains("needs a unit"), "{e}");
    }

    #[test]
    fn secrets_never_show() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
    }
}
