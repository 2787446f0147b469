//! Durations (`250ms`, `5s`), sizes (`64KiB`), ratios (`50%`) and lenient text as they are
//! written in the file.
//!
//! These are serde types for the raw file model. They carry their own JSON Schema so editors
//! can check the strings, and their parse errors say which forms are accepted.

use std::borrow::Cow;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserialize, Deserializer};
use serde_json::Value;

/// A duration written with a unit: `250ms`, `5s`, `1m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dur(pub(crate) Duration);

/// A size in bytes: a plain integer, or a number with a unit `B`, `KiB`, `MiB`, `GiB` (powers of
/// 1024) or `KB`, `MB`, `GB` (powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Size(pub(crate) u64);

/// A fraction from 0 to 1, written as a percentage (`"50%"`) or as a number (`0.5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ratio(pub(crate) f64);

/// A scalar read as text, so `value: 1` and `value: "1"` mean the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(pub(crate) String);

/// Parses a duration; a unit is required because a bare `5` is ambiguous (seconds? ms?).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{trimmed}` has no unit; write a duration such as `250ms`, `5s` or `1m`"
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("`{trimmed}` is not a duration ({e}); write e.g. `250ms`, `5s` or `1m`")
    })
}

/// Parses a size: `512`, `512B`, `64KiB`, `32MiB`, `1GiB`, `10KB`, `1MB`, `1GB`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{}` is not a size; write bytes (`512`) or a number with a unit \
             (`64KiB`, `32MiB`, `1GiB`, `10KB`, `1MB`)",
            text.trim()
        )
    };
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    if digits.is_empty() {
        return Err(bad());
    }
    let number: u64 = digits.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim_start() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("`{trimmed}` is too large"))
}

/// Parses a percentage such as `50%` or `2.5%` into a fraction from 0 to 1.
pub(crate) fn parse_percent(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let bad = || format!("`{trimmed}` is not a percentage; write e.g. `50%` or `2.5%`");
    let number = trimmed.strip_suffix('%').ok_or_else(bad)?.trim_end();
    // `f64::from_str` also takes `inf`, `NaN` and exponents: only plain decimals are meant here.
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let percent: f64 = number.parse().map_err(|_| bad())?;
    if percent > 100.0 {
        return Err(format!("`{trimmed}` is above 100%"));
    }
    Ok(percent / 100.0)
}

/// Checks a ratio written as a plain number: 0 to 1, with a hint when a percentage was meant.
pub(crate) fn fraction(number: f64) -> Result<f64, String> {
    if (0.0..=1.0).contains(&number) {
        Ok(number)
    } else if number > 1.0 && number <= 100.0 {
        Err(format!(
            "`{number}` is above 1; write `{number}%` for a percentage, or a fraction from 0 to 1"
        ))
    } else {
        Err(format!(
            "`{number}` is out of range; write a fraction from 0 to 1 or a percentage such as `50%`"
        ))
    }
}

// === impl Dur ===

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => parse_duration(&s).map(Dur).map_err(de::Error::custom),
            Value::Number(n) => Err(de::Error::custom(format!(
                "`{n}` has no unit; write a duration such as `250ms`, `5s` or `1m`"
            ))),
            other => Err(de::Error::custom(format!(
                "expected a duration such as `5s`, found {}",
                describe(&other)
            ))),
        }
    }
}

impl JsonSchema for Dur {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration with a unit, e.g. `250ms`, `5s`, `1m`.",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Zµ]+(\\s*[0-9]+\\s*[a-zA-Zµ]+)*\\s*$"
        })
    }
}

// === impl Size ===

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => parse_size(&s).map(Size).map_err(de::Error::custom),
            Value::Number(n) => n.as_u64().map(Size).ok_or_else(|| {
                de::Error::custom(format!("`{n}` is not a size; sizes are whole bytes >= 0"))
            }),
            other => Err(de::Error::custom(format!(
                "expected a size such as `64KiB`, found {}",
                describe(&other)
            ))),
        }
    }
}

impl JsonSchema for Size {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Bytes: an integer, or a number with a unit `B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`.",
            "oneOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*(B|KiB|MiB|GiB|KB|MB|GB)?\\s*$" }
            ]
        })
    }
}

// === impl Ratio ===

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => parse_percent(&s).map(Ratio).map_err(de::Error::custom),
            Value::Number(n) => match n.as_f64() {
                Some(f) => fraction(f).map(Ratio).map_err(de::Error::custom),
                None => Err(de::Error::custom(format!("`{n}` is not a number"))),
            },
            other => Err(de::Error::custom(format!(
                "expected a percentage such as `50%` or a fraction such as `0.5`, found {}",
                describe(&other)
            ))),
        }
    }
}

impl JsonSchema for Ratio {
    fn schema_name() -> Cow<'static, str> {
        "Ratio".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A percentage (`\"50%\"`) or a fraction from 0 to 1 (`0.5`).",
            "oneOf": [
                { "type": "number", "minimum": 0, "maximum": 1 },
                { "type": "string", "pattern": "^\\s*[0-9]+(\\.[0-9]*)?\\s*%\\s*$" }
            ]
        })
    }
}

// === impl Text ===

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) => Ok(Text(s)),
            Value::Number(n) => Ok(Text(n.to_string())),
            Value::Bool(b) => Ok(Text(b.to_string())),
            other => Err(de::Error::custom(format!(
                "expected text, found {}",
                describe(&other)
            ))),
        }
    }
}

impl JsonSchema for Text {
    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// Names a JSON value's kind for error messages.
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        let err = parse_duration("5").unwrap_err();
        assert!(err.contains("has no unit"), "{err}");
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_accept_binary_and_decimal_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("32MiB"), Ok(32 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10KB"), Ok(10_000));
        assert_eq!(parse_size("1MB"), Ok(1_000_000));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
    }

    #[test]
    fn sizes_reject_unknown_units_negatives_and_overflow() {
        assert!(parse_size("64kib").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1.5MiB").is_err());
        let err = parse_size("99999999999999999GiB").unwrap_err();
        assert!(err.contains("too large"), "{err}");
    }

    #[test]
    fn ratios_are_percentages_or_fractions_and_numbers_above_one_suggest_a_percent() {
        let ratio = |v: Value| serde_json::from_value::<Ratio>(v).map_err(|e| e.to_string());
        assert_eq!(ratio(serde_json::json!("50%")), Ok(Ratio(0.5)));
        assert_eq!(ratio(serde_json::json!(" 2.5 % ")), Ok(Ratio(0.025)));
        assert_eq!(ratio(serde_json::json!("100%")), Ok(Ratio(1.0)));
        assert_eq!(ratio(serde_json::json!(0.2)), Ok(Ratio(0.2)));
        assert_eq!(ratio(serde_json::json!(1)), Ok(Ratio(1.0)));
        assert_eq!(ratio(serde_json::json!(0)), Ok(Ratio(0.0)));
        let err = ratio(serde_json::json!(50)).unwrap_err();
        assert!(err.contains("write `50%`"), "{err}");
        assert!(ratio(serde_json::json!(-0.1)).is_err());
        assert!(ratio(serde_json::json!(1000)).is_err());
        assert!(
            ratio(serde_json::json!("101%"))
                .unwrap_err()
                .contains("above 100%")
        );
        assert!(ratio(serde_json::json!("50")).is_err());
        assert!(ratio(serde_json::json!("-5%")).is_err());
        assert!(ratio(serde_json::json!("inf%")).is_err());
        assert!(ratio(serde_json::json!(true)).is_err());
    }

    #[test]
    fn size_and_duration_deserialize_from_yaml_scalars() {
        let size: Size = serde_json::from_value(serde_json::json!(2048)).unwrap();
        assert_eq!(size, Size(2048));
        let dur: Result<Dur, _> = serde_json::from_value(serde_json::json!(5));
        assert!(dur.unwrap_err().to_string().contains("has no unit"));
        let text: Text = serde_json::from_value(serde_json::json!(1)).unwrap();
        assert_eq!(text, Text("1".into()));
    }
}
