//! The access log: one JSON object per request on stdout.
//!
//! Lines are handed to a writer thread through a bounded channel, so a slow stdout never
//! blocks the data path; when the channel is full the line is dropped and counted in
//! `bridgehead_access_log_dropped_total`. Only the fields below are written: no headers, no
//! query string (it can carry credentials), no bodies.

use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// One request's log record.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub time: String,
    pub request_id: &'a str,
    pub client: String,
    pub protocol: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    /// The authenticated consumer id (never a credential).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<&'a str>,
    pub status: u16,
    pub duration_ms: f64,
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
    /// Kept in memory; tests read it.
    Memory(Arc<Mutex<Vec<String>>>),
    Off,
}

/// The access log writer.
pub struct AccessLog {
    tx: Option<SyncSender<Vec<u8>>>,
    memory: Option<Arc<Mutex<Vec<String>>>>,
}

impl AccessLog {
    pub fn new(sink: Sink) -> Self {
        match sink {
            Sink::Stdout => {
                let (tx, rx) = sync_channel(16 * 1024);
                std::thread::Builder::new()
                    .name("access-log".into())
                    .spawn(move || writer(rx))
                    .expect("spawn access log thread");
                Self { tx: Some(tx), memory: None }
            }
            Sink::Memory(m) => Self { tx: None, memory: Some(m) },
            Sink::Off => Self { tx: None, memory: None },
        }
    }

    /// Writes a record; returns false if it had to be dropped.
    pub fn write(&self, record: &Record<'_>) -> bool {
        if let Some(m) = &self.memory {
            if let Ok(line) = serde_json::to_string(record) {
                m.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(line);
            }
            return true;
        }
        let Some(tx) = &self.tx else { return true };
        let mut line = Vec::with_capacity(320);
        if serde_json::to_writer(&mut line, record).is_err() {
            return true;
        }
        line.push(b'\n');
        !matches!(tx.try_send(line), Err(TrySendError::Full(_)))
    }
}

fn writer(rx: Receiver<Vec<u8>>) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    while let Ok(line) = rx.recv() {
        let _ = out.write_all(&line);
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(&more);
        }
        let _ = out.flush();
    }
}
