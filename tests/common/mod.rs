//! Shared helpers: start the real `tokend` binary on a socket in a temp
//! directory, talk to it, and check that no secret ever shows in its output.

#![allow(dead_code)] // each test binary uses a different subset

pub mod etcd;
pub mod fault_proxy;
pub mod fixtures;
pub mod fleet;
pub mod glean_api;
pub mod hostile;
pub mod json_lines;
pub mod node;
pub mod oidc;
pub mod promtool;
pub mod python;
pub mod python_client;
pub mod tools;
pub mod typescript;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokend::proto::admin_client::AdminClient;
use tokend::proto::token_broker_client::TokenBrokerClient;
use tonic::transport::Channel;

/// The token every test credential holds. It must appear only where a caller
/// asked for headers, never in logs or error messages.
pub const CANARY: &str = "glean_CANARY_5c1e9a7d0b3f";

/// Fails the test if `text` carries the canary secret.
#[track_caller]
pub fn assert_no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(CANARY),
        "the secret leaked into {what}:\n{text}"
    );
}

/// A temp directory any user can traverse, holding the config, a private
/// secret file `secret` (the canary), and a copy of `tokenctl` any uid can
/// run (the build tree may sit under a private home directory).
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        set_mode(dir.path(), 0o755);
        write_secret(&dir.path().join("secret"), CANARY);
        copy_binary(
            Path::new(env!("CARGO_BIN_EXE_tokenctl")),
            &dir.path().join("tokenctl"),
        );
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("run/tokend.sock")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path().join("tokend.toml")
    }

    /// Writes a config: a `[daemon]` table pointing at this directory's
    /// socket plus `daemon_extra` lines, then `credentials`.
    pub fn write_config(&self, daemon_extra: &str, credentials: &str) -> PathBuf {
        let text = format!(
            "[daemon]\nsocket = \"{}\"\nshutdown_timeout = \"5s\"\n{daemon_extra}\n\n{credentials}",
            self.socket().display()
        );
        std::fs::write(self.config_path(), text).expect("write config");
        self.config_path()
    }

    /// `tokenctl ARGS` against this directory's socket, as the test's user.
    pub fn tokenctl(&self, args: &[&str]) -> Output {
        self.tokenctl_cmd(args).output().expect("run tokenctl")
    }

    /// A `[store]` table: the store and a fresh private 32-byte key in this
    /// directory.
    pub fn store_section(&self) -> String {
        let key = self.path().join("store.key");
        if !key.exists() {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).unwrap();
            std::fs::write(&key, bytes).unwrap();
            set_mode(&key, 0o600);
        }
        format!(
            "[store]\npath = \"{}\"\nkey_file = \"{}\"\n",
            self.store_path().display(),
            key.display()
        )
    }

    pub fn store_path(&self) -> PathBuf {
        self.path().join("state/store.redb")
    }

    pub fn tokenctl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.path().join("tokenctl"));
        cmd.arg("--socket").arg(self.socket()).args(args);
        cmd.env_remove("TOKEND_SOCKET");
        cmd
    }
}

/// Copies an executable (`tokend`, `tokenctl`) where any uid can run it,
/// and waits out "Text file busy": a child another test thread forked
/// while the copy was open holds a writable descriptor to it until that
/// child execs, and exec refuses a file open for writing. Once one exec
/// succeeds no such descriptor is left.
pub fn copy_binary(from: &Path, binary: &Path) {
    std::fs::copy(from, binary).expect("copy a binary");
    set_mode(binary, 0o755);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match Command::new(binary).arg("--version").output() {
            Ok(_) => return,
            Err(e)
                if e.kind() == std::io::ErrorKind::ExecutableFileBusy
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("cannot run {}: {e}", binary.display()),
        }
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn write_secret(path: &Path, value: &str) {
    std::fs::write(path, format!("{value}\n")).expect("write secret");
    set_mode(path, 0o600);
}

/// A running `tokend`. Killed on drop if still running; its output is checked
/// for the canary either way.
pub struct Daemon {
    pub child: Option<Child>,
    log: PathBuf,
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts `tokend` on `work`'s config and waits until its socket accepts
    /// connections.
    pub fn start(work: &Workdir) -> Self {
        Self::start_env(work, &[])
    }

    /// Like [`Daemon::start`], with extra environment variables.
    pub fn start_env(work: &Workdir, env: &[(&str, &str)]) -> Self {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let log = work.path().join(format!("tokend-{n}.log"));
        let child = spawn_tokend(&work.config_path(), &log, env);
        let mut daemon = Self {
            child: Some(child),
            log,
            socket: work.socket(),
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "tokend exited with {status} before listening:\n{}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tokend did not listen within 20s:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Everything the daemon wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("kill");
    }

    /// Waits (bounded) for the daemon to exit; returns its exit status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_with_timeout(&mut child, Duration::from_secs(20))
    }

    /// Sends SIGTERM and waits for exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait()
    }

    /// Waits (bounded) until the daemon's log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in logs:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub async fn client(&self) -> TokenBrokerClient<Channel> {
        connect(&self.socket).await
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(
            tokend_client::channel(&self.socket)
                .await
                .expect("connect to tokend"),
        )
    }

    /// The typed client on this daemon's socket.
    pub async fn typed(&self) -> tokend_client::Client {
        tokend_client::Client::connect(&self.socket)
            .await
            .expect("connect to tokend")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            assert_no_secret("tokend's output", &self.logs());
        }
    }
}

/// Starts `tokend --config CONFIG` with all output to `log`, logging at the
/// most verbose level tokend has, so the canary check covers every log line.
pub fn spawn_tokend(config: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_tokend"))
        .arg("--config")
        .arg(config)
        .env_remove("TOKEND_SOCKET")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env("TOKEND_LOG", "trace")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out)
        .spawn()
        .expect("start tokend")
}

pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A raw `TokenBroker` client on `socket`, through the client crate's
/// connector.
pub async fn connect(socket: &Path) -> TokenBrokerClient<Channel> {
    TokenBrokerClient::new(
        tokend_client::channel(socket)
            .await
            .expect("connect to tokend"),
    )
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `program` as `uid`/`gid` with exactly the supplementary `groups`, through
/// util-linux's `setpriv` (std cannot set groups on stable).
pub fn setpriv(uid: u32, gid: u32, groups: &[u32], program: &Path) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"));
    if groups.is_empty() {
        cmd.arg("--clear-groups");
    } else {
        let groups: Vec<String> = groups.iter().map(u32::to_string).collect();
        cmd.arg(format!("--groups={}", groups.join(",")));
    }
    cmd.arg("--").arg(program);
    cmd
}

/// Fails with instructions unless the tests run as root, which they need to
/// start clients under other uids for real.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches the client to other uids and must run as root \
         (e.g. `sudo -E cargo test`)"
    );
}

/// The headers of a `GetHeaders` call as a stock gRPC client sends them,
/// for tests that drive HTTP/2 frames themselves (`h2::client`).
pub fn raw_get_headers_request() -> http::Request<()> {
    http::Request::post("http://tokend/tokend.v1.TokenBroker/GetHeaders")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a valid request")
}
