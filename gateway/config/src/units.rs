//! Durations (`250ms`, `5s`), sizes (`64KiB`) and lenient text as they are written in the file.
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
    fn size_and_duration_deserialize_from_yaml_scalars() {
        let size: Size = serde_json::from_value(serde_json::json!(2048)).unwrap();
        assert_eq!(size, Size(2048));
        let dur: Result<Dur, _> = serde_json::from_value(serde_json::json!(5));
        assert!(dur.unwrap_err().to_string().contains("has no unit"));
        let text: Text = serde_json::from_value(serde_json::json!(1)).unwrap();
        assert_eq!(text, Text("1".into()));
    }
}
