//! A `nats-server` of the test's own on a free loopback port with a
//! temporary JetStream store, stopped (and its store removed) when dropped;
//! variants (without JetStream, with a user and password, with a token), an
//! HTTP monitoring port to list a job's streams, `stop` and `restart`.
//! Used by tests/nats.rs, tests/nats_trial.rs and benches/distributed.rs.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a server is started.
#[derive(Clone, Debug)]
pub struct Options {
    /// With JetStream (`-js`).
    pub jetstream: bool,
    /// Further arguments (`--user u --pass p`, `--auth token`).
    pub args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jetstream: true,
            args: Vec::new(),
        }
    }
}

pub struct Server {
    program: PathBuf,
    child: Option<Child>,
    port: u16,
    monitor: u16,
    store: PathBuf,
    options: Options,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[allow(dead_code, reason = "not every test or bench uses every part")]
impl Server {
    /// A running server with JetStream, or `None` (with a note on stderr)
    /// where `nats-server` is not installed. With `PARAPIPE_REQUIRE_NATS=1`
    /// (as in CI) a missing server is a failure instead.
    pub fn start() -> Option<Server> {
        Server::start_with(Options::default())
    }

    /// [`Server::start`] with `options`.
    pub fn start_with(options: Options) -> Option<Server> {
        // `$PARAPIPE_NATS_SERVER`, else the PATH, else where Debian puts it
        // (`/usr/sbin`, not on every user's PATH).
        let program = std::env::var_os("PARAPIPE_NATS_SERVER")
            .map(PathBuf::from)
            .into_iter()
            .chain([
                PathBuf::from("nats-server"),
                PathBuf::from("/usr/sbin/nats-server"),
            ])
            .find(|p| Command::new(p).arg("--version").output().is_ok());
        let Some(program) = program else {
            if std::env::var_os("PARAPIPE_REQUIRE_NATS").is_some() {
                panic!("nats-server is not installed, and PARAPIPE_REQUIRE_NATS is set");
            }
            eprintln!(
                "SKIPPED: nats-server is not installed (Debian: apt-get install nats-server)"
            );
            return None;
        };
        let port = free_port();
        let mut monitor = free_port();
        while monitor == port {
            monitor = free_port();
        }
        // On tmpfs where there is one: a store on a busy disk made the
        // broker answer slower than the client's patience under load.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        let store = base.join(format!("parapipe-nats-trial-{}-{port}", std::process::id()));
        let mut server = Server {
            program,
            child: None,
            port,
            monitor,
            store,
            options,
        };
        server.launch();
        Some(server)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let mut command = Command::new(&self.program);
        command.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-m",
            &self.monitor.to_string(),
        ]);
        if self.options.jetstream {
            command.arg("-js").arg("-sd").arg(&self.store);
        }
        command.args(&self.options.args).stdout(Stdio::null());
        // Where a crash would say why.
        match std::env::var_os("PARAPIPE_NATS_STDERR") {
            Some(dir) => {
                let path = Path::new(&dir).join(format!("nats-{}.stderr", self.port));
                command.stderr(std::fs::File::create(path).expect("a stderr file"));
            }
            None => {
                command.stderr(Stdio::null());
            }
        }
        // The server's log, to read after a failure.
        if let Some(log) = std::env::var_os("PARAPIPE_NATS_LOG") {
            command.arg("-D").arg("-l").arg(log);
        }
        let child = command.spawn().expect("nats-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || TcpStream::connect(("127.0.0.1", self.monitor)).is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start listening within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGKILL), keeping its store.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGKILL), waits `down`, and starts it again on the
    /// same port and store.
    pub fn restart(&mut self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.launch();
    }

    /// A GET on the monitoring port: the body.
    pub fn monitor_get(&self, path: &str) -> String {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.monitor)).expect("the monitoring port answers");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{head}"
        );
        body.to_owned()
    }

    /// The names of job `job`'s streams (`PARAPIPE_<job>_...`), sorted, as
    /// the server's monitoring (`/jsz?streams=true`) lists them.
    pub fn job_streams(&self, job: &str) -> Vec<String> {
        let body = self.monitor_get("/jsz?accounts=true&streams=true");
        let prefix = format!("PARAPIPE_{job}_");
        let mut names: Vec<String> = body
            .match_indices(&prefix)
            .map(|(at, _)| {
                let rest = &body[at..];
                let end = rest.find('"').unwrap_or(rest.len());
                rest[..end].to_owned()
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
