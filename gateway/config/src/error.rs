//! Config errors: each names the file, line, column and key path of one problem.
//!
//! Loading collects every problem it can find in one run, so users fix a file in one pass
//! instead of one error at a time.

use std::fmt;
use std::path::PathBuf;

/// One problem in a config file.
///
/// Displays as `FILE:LINE:COLUMN: KEY: MESSAGE` (the `KEY: ` part is left out when the
/// problem concerns the whole file, such as a YAML syntax error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The config file, as given to [`crate::load`].
    pub file: PathBuf,
    /// Line, 1-based.
    pub line: usize,
    /// Column, 1-based, in characters.
    pub column: usize,
    /// Key path of the offending value, e.g. `routes[1].match.path_prefix`; empty for the
    /// whole file.
    pub key: String,
    /// What is wrong, and when useful how to fix it.
    pub message: String,
}

/// Every problem found in one config file, sorted by position. Never empty when returned by
/// [`crate::load`].
///
/// Displays one [`Error`] per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Errors(pub Vec<Error>);

// === impl Error ===

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

// === impl Errors ===

impl Errors {
    /// Finds the first error whose key is `key`.
    pub fn find(&self, key: &str) -> Option<&Error> {
        self.0.iter().find(|e| e.key == key)
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_one_error_per_line_with_file_line_column_and_key() {
        let e = |line, key: &str, message: &str| Error {
            file: PathBuf::from("levee.yaml"),
            line,
            column: 3,
            key: key.into(),
            message: message.into(),
        };
        let errors = Errors(vec![
            e(4, "routes[0].cluster", "no cluster `x`"),
            e(9, "", "bad"),
        ]);
        assert_eq!(
            errors.to_string(),
            "levee.yaml:4:3: routes[0].cluster: no cluster `x`\nlevee.yaml:9:3: bad"
        );
    }
}
