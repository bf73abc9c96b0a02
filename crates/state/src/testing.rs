//! Test support (feature `testing`): [`TestPostgres`], a throwaway PostgreSQL server per test,
//! and [`TestRedis`], a throwaway `redis-server` per test.
//!
//! Each PostgreSQL server is a fresh cluster (`initdb`) in its own temporary directory under `/tmp`, with
//! trust authentication, listening on `127.0.0.1` at a free port and on a unix socket in that same
//! directory, tuned for speed over durability (`fsync=off`). Dropping the [`TestPostgres`] stops
//! the server (`pg_ctl stop -m immediate`) and deletes the directory. A test process killed before
//! its drops run leaves the server running; `pg_ctl -D /tmp/bridgehead-pg-*/data stop` ends it.
//!
//! Each Redis server runs in the foreground as a child process in its own temporary directory
//! (`bridgehead-redis-*`, its working directory and log), on `127.0.0.1` at a free port, without
//! persistence. A test can [`TestRedis::kill`] it to simulate Redis dying and
//! [`TestRedis::restart`] it on the same port; dropping the [`TestRedis`] kills it.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to skip the PostgreSQL tests on a machine without PostgreSQL.
pub const SKIP_ENV: &str = "BRIDGEHEAD_SKIP_POSTGRES";

/// Set to a directory holding `initdb` and `pg_ctl` to use PostgreSQL from somewhere other than
/// Debian's `/usr/lib/postgresql/*/bin`.
pub const BIN_ENV: &str = "BRIDGEHEAD_PG_BIN";

/// Set to `1` to skip the Redis tests on a machine without `redis-server`.
pub const REDIS_SKIP_ENV: &str = "BRIDGEHEAD_SKIP_REDIS";

/// How long [`TestRedis`] waits for a started `redis-server` to answer `PING`.
const REDIS_READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The superuser `initdb` creates; the URL connects as this role.
const SUPERUSER: &str = "bridgehead";

/// The OS user the server runs as when the tests run as root (PostgreSQL refuses root).
const OS_USER: &str = "postgres";

/// How often a start is tried on a new port when another process took the one picked.
const PORT_ATTEMPTS: u32 = 5;

/// A running throwaway PostgreSQL server; see the module docs.
pub struct TestPostgres {
    /// The temporary directory: `data/` (the cluster), `server.log` and the unix socket.
    dir: tempfile::TempDir,
    pg_ctl: PathBuf,
    port: u16,
    /// `Some("postgres")` when we are root and run PostgreSQL's tools through `runuser`.
    run_as: Option<&'static str>,
}

impl TestPostgres {
    /// Starts a throwaway PostgreSQL from the Debian package (the highest version under
    /// `/usr/lib/postgresql/*/bin`, or the directory in `BRIDGEHEAD_PG_BIN`) and returns once it
    /// accepts connections (`pg_ctl start -w` polls for that).
    ///
    /// Returns `Ok(None)` only when `BRIDGEHEAD_SKIP_POSTGRES=1`; when PostgreSQL is missing
    /// otherwise, an `Err` says to install it or set that variable, so tests never skip silently.
    ///
    /// The port is picked by binding `127.0.0.1:0` and releasing it; another process can take it
    /// before PostgreSQL binds it, in which case the start is retried on a new port.
    ///
    /// When the effective user is root, `initdb` and `pg_ctl` run as the `postgres` user through
    /// `runuser`, and the temporary directory (mode 0700) is handed to that user.
    ///
    /// This blocks for the second or two that `initdb` takes.
    pub fn start() -> Result<Option<TestPostgres>, String> {
        if std::env::var(SKIP_ENV).is_ok_and(|v| v == "1") {
            return Ok(None);
        }
        let bin = find_bin_dir()?;
        let run_as = is_root().then_some(OS_USER);

        let dir = tempfile::Builder::new()
            .prefix("bridgehead-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a temporary directory in /tmp: {e}"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot chmod {}: {e}", dir.path().display()))?;
        if let Some(user) = run_as {
            let (uid, gid) = (user_id(user, "-u")?, user_id(user, "-g")?);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| format!("cannot hand {} to user {user}: {e}", dir.path().display()))?;
        }

        let mut server = TestPostgres { pg_ctl: bin.join("pg_ctl"), port: 0, run_as, dir };
        let data = server.data_dir();
        server.run(
            &bin.join("initdb"),
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--auth=trust".as_ref(),
                "--no-locale".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--no-sync".as_ref(),
                "--no-instructions".as_ref(),
            ],
        )?;

        let log = server.dir.path().join("server.log");
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port()?;
            let options = format!(
                "-p {port} -h 127.0.0.1 -k {socket_dir} -c fsync=off -c synchronous_commit=off \
                 -c full_page_writes=off -c shared_buffers=16MB",
                port = server.port,
                socket_dir = server.dir.path().display(),
            );
            let started = server.run(
                &server.pg_ctl,
                &[
                    "start".as_ref(),
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "-o".as_ref(),
                    options.as_ref(),
                ],
            );
            match started {
                Ok(()) => return Ok(Some(server)),
                Err(e)
                    if attempt < PORT_ATTEMPTS
                        && (e.contains("Address already in use")
                            || e.contains("could not create any TCP/IP sockets")) => {}
                // Dropping `server` stops whatever may have started and removes the directory.
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// `postgres://bridgehead@127.0.0.1:PORT/postgres` (trust authentication, no password).
    pub fn url(&self) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port the server listens on at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Runs one of PostgreSQL's tools (as `postgres` when we are root) in the temporary directory,
    /// which that user can enter. On failure, the error has the command's output and the tail of
    /// the server log.
    fn run(&self, program: &Path, args: &[&std::ffi::OsStr]) -> Result<(), String> {
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(args).current_dir(self.dir.path()).stdin(Stdio::null());
        let output = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        let mut message = format!(
            "{cmd:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        if let Ok(log) = std::fs::read_to_string(self.dir.path().join("server.log")) {
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let _ = writeln!(message, "server.log ends:");
            for line in tail.iter().rev() {
                let _ = writeln!(message, "  {line}");
            }
        }
        Err(message)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if !self.data_dir().join("postmaster.pid").exists() {
            return; // never started
        }
        let data = self.data_dir();
        let stop = [
            "stop".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
            "-m".as_ref(),
            "immediate".as_ref(),
            "-w".as_ref(),
        ];
        if let Err(e) = self.run(&self.pg_ctl, &stop) {
            eprintln!("TestPostgres: could not stop the server in {}: {e}", data.display());
        }
    }
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPostgres").field("url", &self.url()).field("dir", &self.dir.path()).finish()
    }
}

/// The directory with `initdb` and `pg_ctl`: `$BRIDGEHEAD_PG_BIN`, else the highest version under
/// `/usr/lib/postgresql`.
fn find_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
            Ok(dir)
        } else {
            Err(format!("{BIN_ENV}={} has no initdb and pg_ctl", dir.display()))
        };
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .max();
    newest.map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb), and these tests \
             need it: install the `postgresql` package (apt-get install postgresql), point \
             {BIN_ENV} at a directory with initdb and pg_ctl, or set {SKIP_ENV}=1 to skip them"
        )
    })
}

/// `id -u USER` or `id -g USER`.
fn user_id(user: &str, flag: &str) -> Result<u32, String> {
    let output = Command::new("id")
        .args([flag, user])
        .output()
        .map_err(|e| format!("cannot run `id {flag} {user}`: {e}"))?;
    String::from_utf8_lossy(&output.stdout).trim().parse().map_err(|_| {
        format!(
            "running as root, and PostgreSQL refuses to run as root, but there is no `{user}` \
                 user to run it as (`id {flag} {user}`: {}); install the `postgresql` package, \
                 which creates it",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))
}

/// A running throwaway `redis-server`; see the module docs.
pub struct TestRedis {
    /// The temporary directory: the server's working directory and `redis.log`.
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// The server process; `None` after [`TestRedis::kill`].
    child: Option<Child>,
}

impl TestRedis {
    /// Starts `redis-server` (from `PATH`, else `/usr/bin`) on a free port and returns once it
    /// answers `PING`, within 10 s.
    ///
    /// Returns `Ok(None)` only when `BRIDGEHEAD_SKIP_REDIS=1`; when `redis-server` is missing
    /// otherwise, an `Err` says to install it or set that variable, so tests never skip silently.
    /// Another process can take the port picked before Redis binds it, in which case the start is
    /// retried on a new port.
    pub fn start() -> Result<Option<TestRedis>, String> {
        if std::env::var(REDIS_SKIP_ENV).is_ok_and(|v| v == "1") {
            return Ok(None);
        }
        let bin = find_redis_server()?;
        let dir = tempfile::Builder::new()
            .prefix("bridgehead-redis-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a temporary directory in /tmp: {e}"))?;
        let mut server = TestRedis { dir, bin, port: 0, child: None };
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = free_port()?;
            match server.spawn() {
                Ok(()) => return Ok(Some(server)),
                Err(e) if attempt < PORT_ATTEMPTS && e.contains("Address already in use") => {}
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns")
    }

    /// `redis://127.0.0.1:PORT` (no password).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port the server listens on at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (`SIGKILL`, as if it crashed) and waits for it to exit. Does nothing if
    /// it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty (it persists nothing), and returns once it
    /// answers `PING`. Kills it first if it is still running.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        self.spawn()
    }

    /// Starts `redis-server` on `self.port` and waits until it answers `PING`. On failure, the
    /// error has the tail of the server log.
    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let port = self.port.to_string();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
        let child = self.child.insert(child);
        let deadline = Instant::now() + REDIS_READY_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Err(format!("{cmd:?} exited ({status}){}", log_tail(&log)));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("cannot wait for {cmd:?}: {e}")),
            }
            if answers_ping(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "{cmd:?} did not answer PING within {}s{}",
                    REDIS_READY_TIMEOUT.as_secs(),
                    log_tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for TestRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRedis")
            .field("url", &self.url())
            .field("dir", &self.dir.path())
            .field("running", &self.child.is_some())
            .finish()
    }
}

/// `redis-server` on `PATH`, else `/usr/bin/redis-server`.
fn find_redis_server() -> Result<PathBuf, String> {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("redis-server"))
        .find(|bin| bin.is_file());
    let fallback = Path::new("/usr/bin/redis-server");
    on_path.or_else(|| fallback.is_file().then(|| fallback.to_path_buf())).ok_or_else(|| {
        format!(
            "redis-server is not installed (not on PATH, no /usr/bin/redis-server), and these \
             tests need it: install redis-server (apt-get install redis-server) or set \
             {REDIS_SKIP_ENV}=1 to skip them"
        )
    })
}

/// Whether something on `127.0.0.1:port` answers `PING` with `+PONG`.
fn answers_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// The last lines of a server log, for an error message; empty if there is none.
fn log_tail(log: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(log) else { return String::new() };
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    let mut message = format!("\n{} ends:", log.display());
    for line in tail.iter().rev() {
        let _ = write!(message, "\n  {line}");
    }
    message
}

/// Whether this process runs as root (PostgreSQL refuses to; the server then runs as `postgres`).
#[allow(unsafe_code)] // The one unsafe call of the workspace: geteuid has no preconditions and cannot fail.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
