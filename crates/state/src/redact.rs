//! Keeping passwords in `state.url` out of messages.
//!
//! `state.url` and the Redis URL may carry a password as URL userinfo
//! (`postgres://user:PASSWORD@host/db`, `redis://:PASSWORD@host`) or as a `password=` /
//! `sslpassword=` / `pass=` parameter. [`redact_url`] hides both before a URL is printed, and
//! [`Secrets`] scrubs them from driver messages we did not write ourselves, in case one echoes
//! them. Redaction errs on the side of hiding: a malformed URL may lose more than its password,
//! never less.

/// What a redacted secret is replaced with.
const MASK: &str = "***";

/// Returns `url` with every password replaced by `***`, fit for logs and error messages.
///
/// The userinfo password is everything between the first `:` after `://` and the last `@`, so an
/// unescaped `@`, `/` or `?` inside the password is still hidden. Values of `password=` (any case,
/// also `sslpassword=`) are hidden up to the next `&`, `;` or whitespace, or the closing quote of
/// a `'quoted'` value; so are values of `pass=` (Redis unix-socket URLs).
///
/// ```
/// use bridgehead_state::redact_url;
/// assert_eq!(redact_url("postgres://app:s3cret@db:5432/gw"), "postgres://app:***@db:5432/gw");
/// assert_eq!(redact_url("sqlite://bridgehead.db"), "sqlite://bridgehead.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    if let Some((start, end)) = userinfo_password(url) {
        out.push_str(&url[..start]);
        out.push_str(MASK);
        rest = &url[end..];
    }
    let mut pos = 0;
    for (start, end) in param_passwords(rest) {
        out.push_str(&rest[pos..start]);
        out.push_str(MASK);
        pos = end;
    }
    out.push_str(&rest[pos..]);
    out
}

/// The passwords found in one URL (as written and percent-decoded), to scrub from messages.
#[derive(Debug, Default)]
pub(crate) struct Secrets(Vec<String>);

impl Secrets {
    pub(crate) fn of(url: &str) -> Secrets {
        let mut found = Vec::new();
        let mut add = |raw: &str| {
            for s in [raw.to_owned(), percent_decode(raw)] {
                if !s.is_empty() && !found.contains(&s) {
                    found.push(s);
                }
            }
        };
        if let Some((start, end)) = userinfo_password(url) {
            add(&url[start..end]);
        }
        for (start, end) in param_passwords(url) {
            add(url[start..end].trim_matches('\''));
        }
        // Longest first, so a secret that contains another is replaced whole.
        found.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Secrets(found)
    }

    /// `text` with every occurrence of a secret replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.0.iter().fold(text.to_owned(), |acc, secret| acc.replace(secret.as_str(), MASK))
    }
}

/// Byte range of the userinfo password (`user:HERE@host`), if the URL has a non-empty one.
fn userinfo_password(url: &str) -> Option<(usize, usize)> {
    let authority = url.find("://")? + 3;
    let at = authority + url[authority..].rfind('@')?;
    let colon = authority + url[authority..at].find(':')?;
    (colon + 1 < at).then_some((colon + 1, at))
}

/// Byte ranges of the values of `password=` parameters (any case, any prefix such as `ssl`) and of
/// `pass=` parameters (Redis unix-socket URLs).
fn param_passwords(text: &str) -> Vec<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    let mut ranges = Vec::new();
    let mut from = 0;
    while let Some(found) = lower[from..].find("pass") {
        let after = from + found + "pass".len();
        let key_end = ["word=", "="].iter().find(|rest| lower[after..].starts_with(**rest));
        let Some(rest) = key_end else {
            from = after;
            continue;
        };
        let start = after + rest.len();
        let value = &text[start..];
        let len = match value.strip_prefix('\'') {
            // A libpq-style quoted value runs to the closing quote (`\'` escapes one).
            Some(quoted) => {
                let mut escaped = false;
                let close = quoted.char_indices().find(|&(_, c)| {
                    let done = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    done
                });
                close.map_or(value.len(), |(i, _)| i + 2)
            }
            None => value.find(|c: char| c == '&' || c == ';' || c.is_whitespace()).unwrap_or(value.len()),
        };
        if len > 0 {
            ranges.push((start, start + len));
        }
        from = start + len;
    }
    ranges
}

/// Decodes `%XX` escapes; anything malformed is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_table() {
        let cases = [
            // (input, expected)
            ("sqlite://bridgehead.db", "sqlite://bridgehead.db"),
            ("sqlite:///var/lib/bridgehead/state.db", "sqlite:///var/lib/bridgehead/state.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            ("postgres://db.internal/gw", "postgres://db.internal/gw"),
            ("postgres://app@db.internal:5432/gw", "postgres://app@db.internal:5432/gw"),
            ("postgres://app:s3cret@db:5432/gw", "postgres://app:***@db:5432/gw"),
            ("postgresql://app:s3cret@db/gw", "postgresql://app:***@db/gw"),
            ("postgres://u:s3cret@127.0.0.1:1/db", "postgres://u:***@127.0.0.1:1/db"),
            // Empty password: nothing to hide.
            ("postgres://app:@db/gw", "postgres://app:@db/gw"),
            // Percent-encoded and unencoded specials inside the password.
            ("postgres://app:p%40ss%2Fw@db/gw", "postgres://app:***@db/gw"),
            ("postgres://app:p@ss/w?rd@db/gw", "postgres://app:***@db/gw"),
            // Password as a parameter, alone or next to others, any case.
            (
                "postgres://app@db/gw?password=s3cret&sslmode=require",
                "postgres://app@db/gw?password=***&sslmode=require",
            ),
            (
                "postgres://app@db/gw?sslmode=require&PassWord=s3cret",
                "postgres://app@db/gw?sslmode=require&PassWord=***",
            ),
            ("postgres://app:a@db/gw?sslpassword=b", "postgres://app:***@db/gw?sslpassword=***"),
            // libpq key/value strings are not accepted, but must not leak when echoed.
            ("host=db password=s3cret user=app", "host=db password=*** user=app"),
            ("host=db password='s3 cr\\'et' user=app", "host=db password=*** user=app"),
            ("ftp://u:s3cret@host/x", "ftp://u:***@host/x"),
            // Redis: userinfo with or without a user, and `pass=` of unix-socket URLs.
            ("redis://127.0.0.1:6379/2", "redis://127.0.0.1:6379/2"),
            ("redis://:s3cret@redis:6379/0", "redis://:***@redis:6379/0"),
            ("redis://gw:s3cret@redis", "redis://gw:***@redis"),
            ("redis+unix:///run/redis.sock?db=1&pass=s3cret", "redis+unix:///run/redis.sock?db=1&pass=***"),
            // "pass" not followed by `=` or `word=` is left alone.
            ("postgres://passer@db/passage", "postgres://passer@db/passage"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(redact_url(input), expected, "redact_url({input:?})");
        }
    }

    #[test]
    fn secrets_are_scrubbed_as_written_and_decoded() {
        let secrets = Secrets::of("postgres://app:p%40ss@db/gw?sslpassword=k3y");
        let scrubbed = secrets.scrub("auth failed for p%40ss / p@ss, key k3y");
        assert_eq!(scrubbed, "auth failed for *** / ***, key ***");
        assert_eq!(Secrets::of("sqlite://x.db").scrub("sqlite://x.db"), "sqlite://x.db");
    }
}
