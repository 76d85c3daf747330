//! A `nats-server` of the test's own: a free loopback port, a temporary
//! JetStream store, stopped (and its store removed) when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    program: PathBuf,
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

#[allow(dead_code, reason = "the benches use part of it")]
impl Server {
    /// A running server, or `None` (with a note on stderr) where
    /// `nats-server` is not installed. With `PARAPIPE_REQUIRE_NATS=1` (as in
    /// CI) a missing server is a failure instead.
    pub fn start() -> Option<Server> {
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
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // On tmpfs where there is one: a store on a busy disk made the
        // broker answer slower than the client's patience under load.
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_owned()
        } else {
            std::env::temp_dir()
        };
        let store = base.join(format!("parapipe-nats-{}-{port}", std::process::id()));
        let mut server = Server {
            program,
            child: None,
            port,
            store,
        };
        server.launch();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let mut command = Command::new(&self.program);
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null());
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
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start listening within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server (SIGKILL), waits `down`, and starts it again on the
    /// same port and store.
    pub fn restart(&mut self, down: Duration) {
        self.kill();
        std::thread::sleep(down);
        self.launch();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
