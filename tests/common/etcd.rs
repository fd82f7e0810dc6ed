//! A throwaway single-member etcd on loopback ports, its data in a test's
//! directory: the real coordination store the fleet tests run against.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A running etcd; killed on drop.
pub struct Etcd {
    child: Option<Child>,
    pub client_port: u16,
    peer_port: u16,
    dir: PathBuf,
}

/// The etcd binary: `$TOKEND_TEST_ETCD`, else `etcd` on PATH, else
/// Debian's `/usr/bin/etcd`.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TOKEND_TEST_ETCD") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("etcd"))
            .find(|p| p.is_file())
    });
    let found = on_path.unwrap_or_else(|| PathBuf::from("/usr/bin/etcd"));
    assert!(
        found.is_file(),
        "the fleet tests need etcd v3: install Debian's etcd-server (apt-get install etcd-server; \
         .ci/run does) or point TOKEND_TEST_ETCD at an etcd binary"
    );
    found
}

impl Etcd {
    /// Starts etcd with its data under `dir` and waits until it is healthy.
    pub fn start(dir: &Path) -> Self {
        let mut etcd = Self {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            dir: dir.join("etcd"),
        };
        etcd.run();
        etcd
    }

    /// The client URL, for `[fleet] endpoints`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn run(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("etcd dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let client = self.url();
        let child = Command::new(binary())
            .args(["--name", "t", "--log-level", "error"])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.healthy() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("etcd exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "etcd was not healthy within 20s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\nHost: etcd\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.contains(r#""health":"true""#)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Stops etcd (SIGKILL: an outage, not a shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
