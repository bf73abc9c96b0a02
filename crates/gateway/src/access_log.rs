//! The access log: one JSON object per request, on stdout or appended to a file
//! (`server.access_log.output`) that SIGUSR1 reopens, for logrotate.
//!
//! ## Design constraints
//!
//! - **The data path never waits for stdout and never wakes a thread per line.** A line is
//!   formatted straight into one of a few sharded buffers (the shard is picked per worker
//!   thread, so workers do not contend) by a hand-written JSON writer: the fields are known, and
//!   only strings that need it are escaped. The writer thread takes whole buffers every 100 ms,
//!   or at once when one passes 64 KiB, and writes them out.
//! - **Lines are dropped only when the output cannot keep up**: when a shard holds more than
//!   4 MiB not yet written, the line is dropped and counted in
//!   `bridgehead_access_log_dropped_total`.
//! - **Rotation:** [`AccessLog::reopen`] (on SIGUSR1) makes the writer finish what it holds,
//!   then open the file's path anew (created if missing, appended to otherwise): logrotate
//!   renames the file, signals, and the next lines go to a new file. A path that cannot be
//!   opened then keeps the old file and logs a warning.
//! - **What is written:** only the fields of [`Record`]; no headers, no query string (it can
//!   carry credentials), no bodies.
//! - **Loss on exit:** lines of the last 100 ms are flushed when the log is dropped at shutdown;
//!   a crash loses them.
//!
//! Written by hand rather than with serde: serde_json formats through a generic serializer and
//! the record through owned strings (time, client address), which cost more than the proxying.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bridgehead_http::trace::{SpanId, TraceId};

/// One request's log record.
#[derive(Debug)]
pub struct Record<'a> {
    pub time: SystemTime,
    pub request_id: &'a str,
    /// The trace id and the request's span id, when `telemetry.traces` is on (sampled or not:
    /// the ids travel to the upstream either way).
    pub trace: Option<(TraceId, SpanId)>,
    pub client: IpAddr,
    pub protocol: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    /// The authenticated consumer id (never a credential).
    pub consumer: Option<&'a str>,
    pub status: u16,
    /// From the request's head to the end of its response.
    pub duration: Duration,
    pub upstream: Option<&'a str>,
    pub target: Option<&'a str>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// False when the response body did not finish (client went away, upstream failed mid-body).
    pub completed: bool,
}

/// Where access log lines go.
#[derive(Clone)]
pub enum Sink {
    Stdout,
    /// Appended to this file, reopened on [`AccessLog::reopen`].
    File(PathBuf),
    /// Kept in memory; tests read it.
    Memory(Arc<Mutex<Vec<String>>>),
    Off,
}

const SHARDS: usize = 8;
/// A shard this full wakes the writer at once.
const FLUSH_BYTES: usize = 64 * 1024;
/// A shard this full drops lines: stdout is not keeping up.
const MAX_PENDING: usize = 4 << 20;
/// The writer's period when no shard fills up.
const PERIOD: Duration = Duration::from_millis(100);

/// The buffers between the workers and the writer thread.
struct Buffers {
    shards: [Mutex<Vec<u8>>; SHARDS],
    /// Set when a shard passed `FLUSH_BYTES` (or at shutdown), with the condvar that wakes the
    /// writer.
    wake: Mutex<bool>,
    wakeup: Condvar,
    closing: AtomicBool,
    /// Set by [`AccessLog::reopen`]; the writer reopens the file after writing what it took,
    /// and keeps trying each period while the path cannot be opened.
    reopen: AtomicBool,
    /// Where the writer writes; shared with [`AccessLog::flush`] at shutdown.
    out: Mutex<Output>,
}

/// The writer's output.
enum Output {
    Stdout(std::io::Stdout),
    File {
        path: PathBuf,
        file: std::fs::File,
    },
    #[cfg(test)]
    Memory(Vec<u8>),
}

impl Output {
    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Output::Stdout(out) => out,
            Output::File { file, .. } => file,
            #[cfg(test)]
            Output::Memory(v) => v,
        }
    }

    /// Opens the file again at its path (after logrotate moved it away); false when it could
    /// not be opened (the old file keeps the lines meanwhile).
    fn reopen(&mut self) -> bool {
        if let Output::File { path, file } = self {
            let _ = file.flush();
            match open(path) {
                Ok(f) => *file = f,
                Err(e) => {
                    static FAILED: bridgehead_http::log_budget::LogBudget =
                        bridgehead_http::log_budget::LogBudget::new();
                    if FAILED.admit().is_none() {
                        return false;
                    }
                    tracing::warn!(path = %path.display(), error = %e, "cannot reopen the access log; still writing to the old file, retrying");
                    return false;
                }
            }
        }
        true
    }

    /// Whether lines go to a file.
    fn is_file(&self) -> bool {
        matches!(self, Output::File { .. })
    }
}

/// Appends to `path`, creating it readable by its owner and group only (the lines hold client
/// addresses, paths and consumer ids).
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

/// The access log writer.
pub struct AccessLog {
    buffers: Option<Arc<Buffers>>,
    writer: Option<std::thread::JoinHandle<()>>,
    memory: Option<Arc<Mutex<Vec<String>>>>,
}

impl Buffers {
    fn new(out: Output) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(Vec::with_capacity(FLUSH_BYTES))),
            wake: Mutex::new(false),
            wakeup: Condvar::new(),
            closing: AtomicBool::new(false),
            reopen: AtomicBool::new(false),
            out: Mutex::new(out),
        }
    }

    fn wake(&self) {
        *self.wake.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.wakeup.notify_one();
    }
}

impl AccessLog {
    /// Starts the log. A file is opened (created if missing) now: an error names the path.
    pub fn new(sink: Sink) -> std::io::Result<Self> {
        let out = match sink {
            Sink::Stdout => Output::Stdout(std::io::stdout()),
            Sink::File(path) => {
                let file = open(&path).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot open {} for appending: {e}", path.display()),
                    )
                })?;
                Output::File { path, file }
            }
            Sink::Memory(m) => return Ok(Self { buffers: None, writer: None, memory: Some(m) }),
            Sink::Off => return Ok(Self { buffers: None, writer: None, memory: None }),
        };
        let buffers = Arc::new(Buffers::new(out));
        let b = buffers.clone();
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(&b))
            .expect("spawn access log thread");
        Ok(Self { buffers: Some(buffers), writer: Some(writer), memory: None })
    }

    /// Writes out what is buffered, then reopens the file at its path (SIGUSR1, after
    /// logrotate moved it away). False, and nothing done, when lines go to stdout.
    pub fn reopen(&self) -> bool {
        match &self.buffers {
            Some(b) if b.out.lock().unwrap_or_else(PoisonError::into_inner).is_file() => {
                b.reopen.store(true, Relaxed);
                b.wake();
                true
            }
            _ => false,
        }
    }

    /// Writes a record; returns false if it had to be dropped.
    pub fn write(&self, record: &Record<'_>) -> bool {
        if let Some(m) = &self.memory {
            let mut line = Vec::with_capacity(320);
            encode(record, &mut line);
            m.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(String::from_utf8_lossy(&line).into_owned());
            return true;
        }
        let Some(b) = &self.buffers else { return true };
        let mut shard = b.shards[shard_index()].lock().unwrap_or_else(PoisonError::into_inner);
        if shard.len() > MAX_PENDING {
            return false;
        }
        encode(record, &mut shard);
        shard.push(b'\n');
        let full = shard.len() >= FLUSH_BYTES;
        drop(shard);
        if full {
            b.wake();
        }
        true
    }
}

impl AccessLog {
    /// Writes out what is buffered now, from the calling thread (at shutdown, after the drain).
    pub fn flush(&self) {
        let Some(b) = &self.buffers else { return };
        let mut out = b.out.lock().unwrap_or_else(PoisonError::into_inner);
        let out = out.writer();
        for shard in &b.shards {
            let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = out.write_all(&s);
            s.clear();
        }
        let _ = out.flush();
    }
}

impl Drop for AccessLog {
    /// Flushes what is buffered (the lines of the last period) before the process ends.
    fn drop(&mut self) {
        if let (Some(b), Some(w)) = (&self.buffers, self.writer.take()) {
            b.closing.store(true, Relaxed);
            b.wake();
            let _ = w.join();
        }
    }
}

/// The shard of the calling thread: assigned round robin on a thread's first line.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static INDEX: Cell<usize> = const { Cell::new(usize::MAX) });
    INDEX.with(|i| {
        if i.get() == usize::MAX {
            i.set(NEXT.fetch_add(1, Relaxed) % SHARDS);
        }
        i.get()
    })
}

/// Takes every shard's lines each period (or when woken) and writes them out; reopens the file
/// when asked, after writing what was taken before.
fn writer(b: &Buffers) {
    let mut spare = Vec::with_capacity(FLUSH_BYTES);
    loop {
        {
            let woken = b.wake.lock().unwrap_or_else(PoisonError::into_inner);
            let (mut woken, _) =
                b.wakeup.wait_timeout_while(woken, PERIOD, |w| !*w).unwrap_or_else(PoisonError::into_inner);
            *woken = false;
        }
        let closing = b.closing.load(Relaxed);
        let reopen = b.reopen.swap(false, Relaxed);
        let mut out = b.out.lock().unwrap_or_else(PoisonError::into_inner);
        for shard in &b.shards {
            {
                let mut s = shard.lock().unwrap_or_else(PoisonError::into_inner);
                if s.is_empty() {
                    continue;
                }
                std::mem::swap(&mut *s, &mut spare);
            }
            let _ = out.writer().write_all(&spare);
            spare.clear();
            if spare.capacity() > 4 * FLUSH_BYTES {
                spare.shrink_to(FLUSH_BYTES);
            }
        }
        let _ = out.writer().flush();
        if reopen && !out.reopen() {
            // Try again next period.
            b.reopen.store(true, Relaxed);
        }
        drop(out);
        if closing {
            return;
        }
    }
}

/// The record as one JSON object (no newline), with the keys of earlier versions.
fn encode(r: &Record<'_>, buf: &mut Vec<u8>) {
    buf.extend_from_slice(b"{\"time\":\"");
    time(r.time, buf);
    buf.extend_from_slice(b"\",\"request_id\":");
    string(buf, r.request_id);
    if let Some((trace_id, span_id)) = r.trace {
        let _ = write!(buf, ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"");
    }
    // Writing to a Vec cannot fail.
    let _ = write!(buf, ",\"client\":\"{}\",\"protocol\":", r.client);
    string(buf, r.protocol);
    buf.extend_from_slice(b",\"method\":");
    string(buf, r.method);
    buf.extend_from_slice(b",\"path\":");
    string(buf, r.path);
    buf.extend_from_slice(b",\"route\":");
    optional(buf, r.route);
    if let Some(c) = r.consumer {
        buf.extend_from_slice(b",\"consumer\":");
        string(buf, c);
    }
    let micros = r.duration.as_micros();
    let _ = write!(
        buf,
        ",\"status\":{},\"duration_ms\":{}.{:03},\"upstream\":",
        r.status,
        micros / 1000,
        micros % 1000
    );
    optional(buf, r.upstream);
    buf.extend_from_slice(b",\"target\":");
    optional(buf, r.target);
    let _ = write!(
        buf,
        ",\"bytes_in\":{},\"bytes_out\":{},\"completed\":{}}}",
        r.bytes_in, r.bytes_out, r.completed
    );
}

/// RFC 3339 with milliseconds in UTC; the part up to the seconds is formatted once per second
/// per thread.
fn time(t: SystemTime, buf: &mut Vec<u8>) {
    thread_local!(static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) });
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let whole = UNIX_EPOCH + Duration::from_secs(secs);
            // `2026-12-06T23:45:01Z` without the `Z`.
            let mut s = humantime::format_rfc3339_seconds(whole).to_string();
            s.pop();
            *cached = (secs, s);
        }
        buf.extend_from_slice(cached.1.as_bytes());
    });
    let _ = write!(buf, ".{:03}Z", since.subsec_millis());
}

fn optional(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

/// A JSON string: as it is when nothing in it needs escaping (the common case), else with `"`,
/// `\` and control characters escaped.
fn string(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        buf.extend_from_slice(s.as_bytes());
    } else {
        for c in s.chars() {
            match c {
                '"' => buf.extend_from_slice(b"\\\""),
                '\\' => buf.extend_from_slice(b"\\\\"),
                '\n' => buf.extend_from_slice(b"\\n"),
                '\r' => buf.extend_from_slice(b"\\r"),
                '\t' => buf.extend_from_slice(b"\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(buf, "\\u{:04x}", c as u32);
                }
                c => {
                    let mut utf8 = [0; 4];
                    buf.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
    }
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(consumer: Option<&'static str>, route: Option<&'static str>) -> Record<'static> {
        Record {
            time: UNIX_EPOCH + Duration::from_millis(1_765_064_701_042),
            request_id: "abc-1",
            trace: None,
            client: "2001:db8::1".parse().unwrap(),
            protocol: "HTTP/1.1",
            method: "GET",
            path: "/orders/7",
            route,
            consumer,
            status: 200,
            duration: Duration::from_micros(12_345),
            upstream: Some("orders"),
            target: None,
            bytes_in: 0,
            bytes_out: 31,
            completed: true,
        }
    }

    #[test]
    fn lines_are_the_json_of_earlier_versions() {
        let mut buf = Vec::new();
        encode(&record(Some("acme \"corp\"\n\u{1}é"), Some("orders")), &mut buf);
        let line = String::from_utf8(buf).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2025-12-06T23:45:01.042Z", "request_id": "abc-1", "client": "2001:db8::1",
                "protocol": "HTTP/1.1", "method": "GET", "path": "/orders/7", "route": "orders",
                "consumer": "acme \"corp\"\n\u{1}é", "status": 200, "duration_ms": 12.345,
                "upstream": "orders", "target": null, "bytes_in": 0, "bytes_out": 31, "completed": true
            })
        );
        let mut buf = Vec::new();
        encode(&record(None, None), &mut buf);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert!(v.get("consumer").is_none(), "absent when anonymous: {v}");
        assert_eq!(v["route"], serde_json::Value::Null);
        assert!(v.get("trace_id").is_none(), "absent when traces are off: {v}");
        let traced = Record { trace: Some((TraceId([0xab; 16]), SpanId([0x01; 8]))), ..record(None, None) };
        let mut buf = Vec::new();
        encode(&traced, &mut buf);
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["span_id"], "0101010101010101");
    }

    #[test]
    fn the_writer_takes_whole_buffers_and_flushes_on_close() {
        let b = Buffers::new(Output::Memory(Vec::new()));
        b.closing.store(true, Relaxed);
        b.wake();
        b.shards[3].lock().unwrap().extend_from_slice(b"{\"a\":1}\n");
        b.shards[5].lock().unwrap().extend_from_slice(b"{\"b\":2}\n");
        writer(&b);
        let Output::Memory(out) = &*b.out.lock().unwrap() else { unreachable!() };
        assert_eq!(out, b"{\"a\":1}\n{\"b\":2}\n");
        assert!(b.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }

    #[test]
    fn a_file_is_appended_to_and_reopened_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        std::fs::write(&path, "earlier\n").unwrap();
        let log = AccessLog::new(Sink::File(path.clone())).unwrap();
        assert!(log.write(&record(None, Some("one"))));
        log.flush();
        // logrotate: move the file away, then signal.
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        assert!(log.write(&record(None, Some("two"))));
        log.reopen();
        // The line buffered before the reopen goes to the old file; the writer then makes a new one.
        wait_for_file(&path, "the log was not reopened");
        assert!(log.write(&record(None, Some("three"))));
        drop(log);
        let old = std::fs::read_to_string(&rotated).unwrap();
        assert!(old.starts_with("earlier\n"), "{old}");
        assert!(old.contains("\"route\":\"one\"") && old.contains("\"route\":\"two\""), "{old}");
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(new.contains("\"route\":\"three\"") && !new.contains("\"one\""), "{new}");
    }

    #[test]
    fn a_reopen_that_fails_is_retried_until_the_path_can_be_opened() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        let path = logs.join("access.log");
        let log = AccessLog::new(Sink::File(path.clone())).unwrap();
        // The directory goes away (moved with the file in it): the reopen fails, the old file
        // keeps the lines.
        let moved = dir.path().join("logs.old");
        std::fs::rename(&logs, &moved).unwrap();
        assert!(log.reopen());
        assert!(log.write(&record(None, Some("one"))));
        std::fs::create_dir(&logs).unwrap();
        wait_for_file(&path, "the reopen was not retried");
        assert!(log.write(&record(None, Some("two"))));
        drop(log);
        let old = std::fs::read_to_string(moved.join("access.log")).unwrap();
        assert!(old.contains("\"route\":\"one\""), "{old}");
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(new.contains("\"route\":\"two\""), "{new}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640 & !umask());
    }

    /// Polls (the writer is a thread) until `path` exists, failing with `what` after 10 s.
    fn wait_for_file(path: &Path, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !path.exists() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The umask this process passes on, as a shell started from it reports it.
    fn umask() -> u32 {
        let m = std::process::Command::new("sh").args(["-c", "umask"]).output().unwrap();
        u32::from_str_radix(String::from_utf8_lossy(&m.stdout).trim(), 8).unwrap()
    }

    #[test]
    fn stdout_ignores_reopen() {
        let log = AccessLog::new(Sink::Stdout).unwrap();
        assert!(!log.reopen());
    }

    #[test]
    fn a_file_that_cannot_be_opened_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/access.log");
        let Err(e) = AccessLog::new(Sink::File(path.clone())) else { panic!("opened") };
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
}
