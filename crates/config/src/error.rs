//! Config errors: every one says where (`file:line:col`), which key (`routes[0].upstream`)
//! and what is wrong.

use std::fmt;

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// One problem with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as named by the user.
    pub file: String,
    pub pos: Option<Pos>,
    /// Key path such as `routes[0].match.path_prefix`; empty for file-level problems.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}: ", self.file, p.line, p.col)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// All problems found in a config file; loading fails when there is at least one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A config that passed validation but could not be turned into running parts: a file that
/// cannot be read or holds nothing usable, key material that does not parse, a store that
/// cannot be reached. Carries the key path apart from the reason, so callers can place it
/// (`under`) without splicing strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct BuildError {
    /// Key path such as `upstreams.billing.tls.ca`.
    pub key: String,
    /// What went wrong, for a person.
    pub reason: String,
}

impl BuildError {
    pub fn new(key: impl Into<String>, reason: impl fmt::Display) -> Self {
        Self { key: key.into(), reason: reason.to_string() }
    }

    /// The same error with its key placed under `prefix` (`ca` under `authenticators.a.jwt`).
    #[must_use]
    pub fn under(mut self, prefix: &str) -> Self {
        self.key = if self.key.is_empty() { prefix.to_owned() } else { format!("{prefix}.{}", self.key) };
        self
    }
}
