//! The README's "OAuth quick start", run block by block as a new user would
//! type it: the setup block in a shell, the authorization server and the
//! daemon as long-running "terminals", then login (with this test as the
//! person's browser) and headers. The blocks are read from README.md, so
//! the documented steps cannot drift from working ones.
//!
//! Three things differ from a person's run, all mechanical: the commands
//! run in a scratch directory holding a link to `tests/oidc` (not in the
//! checkout), the authorization server's port 8444 becomes a free one, and
//! `npm ci --prefix tests/oidc` is done once for all tests by the shared
//! installer (a second `npm ci` would delete packages other tests use).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The ```sh blocks of the README section `heading`, in order.
fn blocks(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README.md has no {heading:?} section"));
    let section = &readme[start + heading.len()..];
    let end = section.find("\n## ").or_else(|| section.find("\n### "));
    let section = &section[..end.unwrap_or(section.len())];
    section
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("\n```").next().unwrap().to_owned())
        .collect()
}

/// A "terminal": `bash -c BLOCK` in its own process group, killed (whole
/// group) on drop.
struct Terminal(Child);

impl Terminal {
    fn start(dir: &Path, path: &str, block: &str, log: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("bash")
            .arg("-euc")
            .arg(block)
            .current_dir(dir)
            .env("PATH", path)
            .env_remove("TOKEND_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("run bash");
        Self(child)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, log: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} not ready within 30s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_oauth_quick_start_works_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let issuer_port = common::free_port();
    let steps: Vec<String> = blocks(&readme, "### OAuth quick start")
        .into_iter()
        .map(|b| b.replace("8444", &issuer_port.to_string()))
        .collect();
    let [setup, server, daemon, login] = &steps[..] else {
        panic!("the quick start should have 4 blocks (files, server, daemon, login): {steps:#?}");
    };
    // The config names no redirect_uri, so tokenctl listens on the default
    // 127.0.0.1:9090, as it will for the reader; this test binary holds
    // only this test, so nothing else here competes for the port.

    common::oidc::ensure_installed();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    std::fs::create_dir(dir.join("tests")).unwrap();
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc"),
        dir.join("tests/oidc"),
    )
    .unwrap();
    // `target/debug` in the scratch directory holds this build's binaries.
    let bin = dir.join("target/debug");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, exe) in [
        ("tokend", env!("CARGO_BIN_EXE_tokend")),
        ("tokenctl", env!("CARGO_BIN_EXE_tokenctl")),
    ] {
        std::os::unix::fs::symlink(exe, bin.join(name)).unwrap();
    }
    let path = std::env::var("PATH").unwrap_or_default();

    // Block 1: the files. `npm ci` is the shared installer's (see above).
    let setup = setup
        .lines()
        .filter(|l| !l.starts_with("npm ci --prefix tests/oidc"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        steps[0].contains("npm ci --prefix tests/oidc"),
        "the quick start no longer installs the server's packages"
    );
    let out = Command::new("bash")
        .arg("-euc")
        .arg(&setup)
        .current_dir(dir)
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the setup block failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Blocks 2 and 3: the authorization server and the daemon.
    let server_log = dir.join("server.log");
    let _server = Terminal::start(dir, &path, server, &server_log);
    wait_until("the authorization server", &server_log, || {
        std::net::TcpStream::connect(("127.0.0.1", issuer_port)).is_ok()
    });
    let daemon_log = dir.join("daemon.log");
    let _daemon = Terminal::start(dir, &path, daemon, &daemon_log);
    wait_until("tokend", &daemon_log, || {
        std::os::unix::net::UnixStream::connect(dir.join("demo/tokend.sock")).is_ok()
    });

    // Block 4, "back in the first" terminal (so with block 1's exports):
    // login, with this test as the browser, then headers.
    let exports: Vec<&str> = steps[0]
        .lines()
        .filter(|l| l.starts_with("export "))
        .collect();
    let mut shell = Command::new("bash")
        .arg("-euc")
        .arg(format!("{}\n{login}", exports.join("\n")))
        .current_dir(dir)
        .env("PATH", &path)
        .env_remove("TOKEND_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(shell.stderr.take().unwrap());
    let mut said = String::new();
    let url = loop {
        let mut line = String::new();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "tokenctl login printed no authorization URL:\n{said}"
        );
        said.push_str(&line);
        if let Some(at) = line.find(&format!("http://127.0.0.1:{issuer_port}/auth?")) {
            break line[at..].trim().to_owned();
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let page = browser
        .get(&url)
        .send()
        .await
        .expect("the login in a browser");
    assert!(page.status().is_success(), "{page:?}");
    let out = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        (shell.wait_with_output().unwrap(), rest)
    })
    .await
    .unwrap();
    let (out, rest) = out;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{rest}");
    assert!(stdout.contains("demo: logged in"), "{stdout}");
    let auth = stdout
        .lines()
        .find(|l| l.starts_with("Authorization: Bearer "))
        .unwrap_or_else(|| panic!("no Authorization header printed:\n{stdout}"));
    assert!(auth.len() > "Authorization: Bearer ".len() + 20, "{auth}");
}
