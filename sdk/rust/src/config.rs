//! Reading a plugin's config: the route's `config` value, passed to [`crate::Policy::init`] as
//! JSON text (`null` when the route gives none).
//!
//! Errors are strings because that is what `init` returns to the host, which shows them in the
//! failed reload's message. They carry serde's line and column.

use serde::de::DeserializeOwned;

/// Parses `config` as JSON into `T`. A missing config arrives as `null`, which only types like
/// `Option<T>` or `()` accept; use [`parse_or_default`] when every field has a default.
pub fn parse<T: DeserializeOwned>(config: &[u8]) -> Result<T, String> {
    serde_json::from_slice(config).map_err(|e| format!("invalid plugin config: {e}"))
}

/// Like [`parse`], but `null` (no config) or an empty blob gives `T::default()`.
pub fn parse_or_default<T: DeserializeOwned + Default>(config: &[u8]) -> Result<T, String> {
    if is_absent(config) {
        Ok(T::default())
    } else {
        parse(config)
    }
}

/// Whether `config` is empty, only whitespace, or the JSON `null`.
pub fn is_absent(config: &[u8]) -> bool {
    let trimmed = config.trim_ascii();
    trimmed.is_empty() || trimmed == b"null"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        n: u32,
    }

    #[test]
    fn null_and_empty_give_the_default() {
        assert_eq!(parse_or_default::<Cfg>(b"null"), Ok(Cfg::default()));
        assert_eq!(parse_or_default::<Cfg>(b"  "), Ok(Cfg::default()));
        assert_eq!(parse_or_default::<Cfg>(br#"{"n": 3}"#), Ok(Cfg { n: 3 }));
    }

    #[test]
    fn errors_name_the_problem() {
        let err = parse_or_default::<Cfg>(br#"{"m": 3}"#).unwrap_err();
        assert!(err.contains("unknown field `m`"), "{err}");
        assert!(parse::<Cfg>(b"null").is_err());
    }
}
