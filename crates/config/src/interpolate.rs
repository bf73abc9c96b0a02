//! `${env:NAME}` and `${file:PATH}` references inside string values.
//!
//! A reference may be the whole value or part of it (`"Bearer ${env:TOKEN}"`); `$${` writes a
//! literal `${`. File references are read relative to the config file's directory and lose one
//! trailing newline, so `echo secret > f` works. Resolved values are never put into error
//! messages: errors name the reference, not what it resolved to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where references are looked up. The real one reads the process environment and the disk;
/// tests inject a map.
pub trait Resolver {
    fn env(&self, name: &str) -> Option<String>;
    fn file(&self, path: &str) -> Result<String, String>;
}

/// Reads the process environment, and files relative to `base_dir`.
pub struct SystemResolver {
    pub base_dir: PathBuf,
}

impl Resolver for SystemResolver {
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn file(&self, path: &str) -> Result<String, String> {
        let full = if Path::new(path).is_absolute() { PathBuf::from(path) } else { self.base_dir.join(path) };
        std::fs::read_to_string(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))
    }
}

/// An in-memory resolver for tests and for `config check` of embedded examples.
#[derive(Default)]
pub struct MapResolver {
    pub env: HashMap<String, String>,
    pub files: HashMap<String, String>,
}

impl MapResolver {
    pub fn with_env(vars: &[(&str, &str)]) -> Self {
        Self {
            env: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            files: HashMap::new(),
        }
    }
}

impl Resolver for MapResolver {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
    fn file(&self, path: &str) -> Result<String, String> {
        self.files.get(path).cloned().ok_or_else(|| format!("cannot read {path}: not found"))
    }
}

/// Replaces every reference in `s`. The error text names the reference only.
pub fn resolve(s: &str, resolver: &dyn Resolver) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(body) = rest.strip_prefix("${") else {
            out.push('$');
            rest = &rest[1..];
            continue;
        };
        let end =
            body.find('}').ok_or_else(|| "unterminated reference: `${` without a closing `}`".to_string())?;
        let reference = &body[..end];
        let (kind, arg) = reference.split_once(':').ok_or_else(|| {
            format!("reference `${{{reference}}}` must be `${{env:NAME}}` or `${{file:PATH}}`")
        })?;
        match kind {
            "env" => {
                if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(format!(
                        "`${{env:{arg}}}`: an environment variable name is letters, digits and `_`"
                    ));
                }
                let value = resolver.env(arg).ok_or_else(|| {
                    format!("environment variable {arg} is not set (referenced as `${{env:{arg}}}`)")
                })?;
                out.push_str(&value);
            }
            "file" => {
                if arg.is_empty() {
                    return Err("`${file:}` needs a path".into());
                }
                let mut value = resolver.file(arg).map_err(|e| format!("`${{file:{arg}}}`: {e}"))?;
                if value.ends_with('\n') {
                    value.pop();
                    if value.ends_with('\r') {
                        value.pop();
                    }
                }
                out.push_str(&value);
            }
            other => {
                return Err(format!(
                    "unknown reference kind `{other}` in `${{{reference}}}`: use env or file"
                ));
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The paths of the `${file:…}` references in `s`, found exactly as [`resolve`] finds them
/// (for tools that carry a config's files elsewhere).
pub fn file_references(s: &str) -> Vec<String> {
    struct Recorder(std::cell::RefCell<Vec<String>>);
    impl Resolver for Recorder {
        fn env(&self, _: &str) -> Option<String> {
            Some(String::new())
        }
        fn file(&self, path: &str) -> Result<String, String> {
            self.0.borrow_mut().push(path.to_owned());
            Ok(String::new())
        }
    }
    let recorder = Recorder(Default::default());
    let _ = resolve(s, &recorder);
    recorder.0.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> MapResolver {
        let mut r = MapResolver::with_env(&[("A", "alpha"), ("EMPTY", "")]);
        r.files.insert("secret.txt".into(), "hunter2\n".into());
        r
    }

    #[test]
    fn table() {
        let ok = [
            ("plain", "plain"),
            ("${env:A}", "alpha"),
            ("Bearer ${env:A}!", "Bearer alpha!"),
            ("${env:A}${env:A}", "alphaalpha"),
            ("${env:EMPTY}", ""),
            ("${file:secret.txt}", "hunter2"),
            ("cost: $5", "cost: $5"),
            ("$${env:A}", "${env:A}"),
        ];
        for (input, want) in ok {
            assert_eq!(resolve(input, &r()).unwrap(), want, "{input}");
        }
        let bad = [
            ("${env:MISSING}", "MISSING is not set"),
            ("${env:A", "unterminated"),
            ("${A}", "must be"),
            ("${vault:x}", "unknown reference kind `vault`"),
            ("${env:A-B}", "letters, digits"),
            ("${file:nope}", "cannot read nope"),
        ];
        for (input, want) in bad {
            let e = resolve(input, &r()).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
            assert!(!e.contains("hunter2"));
        }
    }
}
