//! Levee config: YAML in, a validated [`Config`] out, or errors that name the file, line,
//! column and key path of every problem found.
//!
//! This crate opens no files itself and knows nothing of tokio, hyper or wasmtime: the caller
//! hands it the text and a [`FileSystem`] to check that referenced files exist (and to read the
//! few, such as a fallback's `body_file`, whose content becomes part of the config). Loading goes text ->
//! `tree` (a JSON value plus key positions) -> `raw` serde types, one section and one list item
//! at a time -> `validate` -> [`Config`], so one run reports every problem, and never panics.

mod error;
mod model;
mod raw;
mod tree;
mod units;
mod validate;

use std::path::Path;

pub use error::{Error, Errors};
pub use model::*;

/// Largest config file accepted, in bytes: 4 MiB. Real configs are a few KiB; the bound keeps
/// a wrong or hostile file from being read whole. Callers that read the file should read at
/// most one byte more than this, so the check here sees it is too large.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// A config file's text and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The file's path: used in error messages, and its directory anchors relative paths in
    /// the file (`cert`, `key`, `ca_file`, `token_file`, `body_file`, plugin `path`).
    pub path: &'a Path,
    /// The file's contents.
    pub text: &'a str,
}

/// What the loader may ask about the disk: whether a referenced file exists, and the content of
/// the few files that become part of the config (a fallback's `body_file`).
pub trait FileSystem {
    /// Whether `path` names an existing regular file (following symlinks).
    fn is_file(&self, path: &Path) -> bool;

    /// The content of the file at `path`.
    ///
    /// By default this fails with [`std::io::ErrorKind::Unsupported`], so a file system that
    /// only answers [`is_file`](Self::is_file) keeps working for every config that does not
    /// name a `body_file`.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let _ = path;
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

/// The real file system, through `std::fs::metadata`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFileSystem;

impl FileSystem for StdFileSystem {
    fn is_file(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.is_file())
    }

    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// Parses and validates a config file.
///
/// Relative paths in the file are resolved against the directory of `source.path` (made
/// absolute against the current directory when it is relative) and stored absolute. Files
/// whose content is part of the config (`fallback.response.body_file`) are read through `fs`
/// now, so a reload picks up their changes.
///
/// # Errors
///
/// Every problem found, sorted by position: YAML syntax (which stops parsing), unknown or
/// ill-typed keys, and semantic problems (unknown cluster or plugin, duplicate names, bad
/// addresses, missing or unreadable files, out-of-range values, contradicting timeouts, ...).
pub fn load(source: &Source<'_>, fs: &dyn FileSystem) -> Result<Config, Errors> {
    let file = source.path.to_path_buf();
    // `absolute` only consults the current directory, never the disk.
    let absolute = std::path::absolute(source.path).unwrap_or_else(|_| file.clone());
    let base_dir = absolute.parent().unwrap_or(Path::new("")).to_path_buf();

    let parsed = if source.text.len() > MAX_FILE_BYTES {
        Err(tree::Issue {
            key: String::new(),
            at: Some((1, 1)),
            message: format!(
                "the file is larger than {} MiB; a config is far smaller",
                MAX_FILE_BYTES >> 20
            ),
        })
    } else {
        tree::parse(source.text)
    };
    let (issues, locations, config) = match parsed {
        Err(issue) => (vec![issue], tree::Locations::default(), None),
        Ok(tree) => {
            let (config, mut issues) = validate::check(tree.root, &base_dir, fs);
            issues.splice(0..0, tree.issues);
            (issues, tree.locations, config)
        }
    };

    if issues.is_empty()
        && let Some(config) = config
    {
        return Ok(config);
    }
    let mut errors: Vec<Error> = issues
        .into_iter()
        .map(|issue| {
            let (line, column) = issue.at.unwrap_or_else(|| locations.find(&issue.key));
            Error {
                file: file.clone(),
                line,
                column,
                key: issue.key,
                message: issue.message,
            }
        })
        .collect();
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup();
    if errors.is_empty() {
        // Unreachable by construction (no issues means a config); kept so a bug shows as an
        // error, not a panic.
        errors.push(Error {
            file,
            line: 1,
            column: 1,
            key: String::new(),
            message: "the config could not be built".into(),
        });
    }
    Err(Errors(errors))
}

/// The JSON Schema of the config file format, for editors (`levee schema`).
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(raw::RawConfig).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, Errors> {
        let source = Source {
            path: Path::new("/etc/levee/levee.yaml"),
            text,
        };
        load(&source, &StdFileSystem)
    }

    #[test]
    fn rejects_a_file_larger_than_the_bound_naming_it() {
        let mut text = String::from("# padding\n");
        text.push_str(&"#".repeat(MAX_FILE_BYTES));
        let errors = load_text(&text).unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        let shown = errors.to_string();
        assert!(
            shown.starts_with("/etc/levee/levee.yaml:1:1: the file is larger than 4 MiB"),
            "{shown}"
        );
    }

    #[test]
    fn rejects_aliases_that_expand_past_the_bound_with_file_and_line() {
        // Issue 14: 146 KB of YAML that expanded to a gigabyte.
        let big = "x".repeat(64 << 10);
        let aliases = ["*big"; 16_000].join(", ");
        let text = format!("junk0: &big \"{big}\"\njunk: [{aliases}]\n");
        let errors = load_text(&text).unwrap_err();
        let shown = errors.to_string();
        assert!(
            shown.starts_with("/etc/levee/levee.yaml:2:"),
            "names the file and line: {shown}"
        );
        assert!(shown.contains("expands to more than 16 MiB"), "{shown}");
    }
}
