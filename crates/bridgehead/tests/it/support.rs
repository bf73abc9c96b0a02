//! Test support of the binary's tests: everything from `bridgehead-testkit`, plus what needs the
//! built `bridgehead` binary (only this crate's tests can name it).

use std::net::SocketAddr;

pub use bridgehead_testkit::*;

/// The built `bridgehead` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_bridgehead");

/// Runs a command to its end: whether it succeeded, and its stdout then stderr.
pub fn run(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Runs the binary; returns (exit code, stdout, stderr).
pub fn bridgehead(args: &[&str]) -> (i32, String, String) {
    bridgehead_stdin(args, "")
}

/// Runs the binary with `stdin` as its standard input.
pub fn bridgehead_stdin(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = std::process::Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A `bridgehead serve` process on free ports, with its stderr (JSON logs) still readable.
pub struct Node {
    pub child: Killed,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub stderr: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
}

impl Node {
    /// Starts `bridgehead serve` with `yaml` plus listeners on port 0 and a SQLite state in `dir`.
    pub fn start(dir: &std::path::Path, name: &str, yaml: &str) -> Node {
        Self::start_with(dir, name, "", yaml)
    }

    /// The same, with `server_keys` (indented lines) added under `server:`.
    pub fn start_with(dir: &std::path::Path, name: &str, server_keys: &str, yaml: &str) -> Node {
        use std::io::BufRead;
        let cfg = dir.join(format!("{name}.yaml"));
        let text =
            format!("server:\n  listen: 127.0.0.1:0\n{server_keys}admin:\n  listen: 127.0.0.1:0\n{yaml}");
        std::fs::write(&cfg, text.replace("STATE_DB", &dir.join(format!("{name}.db")).display().to_string()))
            .unwrap();
        let mut child = Killed(
            std::process::Command::new(BIN)
                .args(["serve", "--no-watch", "-c", cfg.to_str().unwrap()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap()).lines();
        let listening = wait_log(&mut stderr, "listening");
        let addr = listening["fields"]["data"].as_str().unwrap().parse().unwrap();
        let admin = listening["fields"]["admin"].as_str().unwrap().parse().unwrap();
        Node { child, addr, admin, stderr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the process and returns the rest of its log.
    pub fn stop(mut self) -> String {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        self.stderr.by_ref().map_while(Result::ok).collect::<Vec<_>>().join("\n")
    }
}

/// Starts the Python test peer `script` (in `tests/it/peers`) with `args`: the process (killed
/// when dropped) and the port it printed (`port N`). `None` only when Python tests are skipped.
pub async fn python_peer(script: &str, args: &[&str]) -> Option<(Killed, u16)> {
    let python = python()?;
    let script = format!("{}/tests/it/peers/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = std::process::Command::new(python)
        .arg(&script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let killed = Killed(child);
    let port = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
        line.trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{script} said {line:?}"))
    })
    .await
    .unwrap();
    Some((killed, port))
}

/// The Python interpreter with the test peers (Authlib, standardwebhooks), from `scripts/test`; `None` only when
/// BRIDGEHEAD_SKIP_PYTHON=1 says to skip. Anything else missing is a failure, never a silent skip.
pub fn python() -> Option<String> {
    if std::env::var("BRIDGEHEAD_SKIP_PYTHON").as_deref() == Ok("1") {
        eprintln!("skipped: BRIDGEHEAD_SKIP_PYTHON=1");
        return None;
    }
    let from_env = std::env::var("BRIDGEHEAD_PYTHON").ok();
    let local = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/pyenv/bin/python");
    let python = from_env.unwrap_or_else(|| local.to_owned());
    assert!(
        std::path::Path::new(&python).exists(),
        "no Python test peers at {python}: run scripts/test (it creates target/pyenv with Authlib), \
         set BRIDGEHEAD_PYTHON, or set BRIDGEHEAD_SKIP_PYTHON=1 to skip these tests"
    );
    Some(python)
}

/// `bridgehead demo` on free ports, and what it printed: the gateway's, admin's and mock's
/// URLs; `lines` goes on with the rest of its output.
pub struct Demo {
    pub child: Killed,
    pub lines: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
    pub gateway: String,
    pub admin: String,
    pub mock: String,
}

impl Demo {
    /// Starts the demo; its outbound webhook endpoint delivers to `listener_port`.
    pub fn start(listener_port: &str) -> Demo {
        use std::io::BufRead;
        let mut child = Killed(
            std::process::Command::new(BIN)
                .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--mock-port", "0"])
                .args(["--grpc-port", "0", "--listener-port", listener_port])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut lines = std::io::BufReader::new(child.0.stderr.take().unwrap()).lines();
        let mut addr = |label: &str| -> String {
            for line in lines.by_ref() {
                let line = line.unwrap();
                if let Some(rest) = line.trim_start().strip_prefix(label) {
                    return rest.split_whitespace().next().unwrap().to_owned();
                }
            }
            panic!("demo printed no {label} line");
        };
        let (gateway, admin, mock) = (addr("gateway"), addr("admin"), addr("mock"));
        Demo { child, lines, gateway, admin, mock }
    }
}
