//! `tokenctl headers NAME` as a whole process, fork to exit, the way a shell
//! script pays for it, against the real release daemon with one Glean token
//! credential; next to `/bin/true` (the floor: fork, exec and exit of a
//! process that does nothing) and `python3 -c pass` (the bar: starting an
//! interpreter).
//!
//! Each command runs in blocks of `BLOCK` runs in a row, as a script's loop
//! runs it, and the blocks take turns, so a change in the machine's load (it
//! is shared) hits every row alike. A block begins with an untimed run: the
//! run right after another command pays for the caches that command filled
//! (after one `python3 -c pass`, some 0.5 ms more for `tokenctl headers`, and
//! 60 µs more for `/bin/true`), which is the other command's cost, not its
//! own.
//!
//! Run: `cargo bench --bench tokenctl [-- RUNS]` (300 runs of each by
//! default); with `TOKENCTL_BASELINE=PATH`, another tokenctl binary is timed
//! too, in the same run. Prints a table; asserts only that every run
//! succeeds.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;

use common::{pct, start};

/// Runs of each command unless the command line says otherwise.
const RUNS: usize = 300;
/// Timed runs of one command in a row.
const BLOCK: usize = 30;

fn main() {
    let runs = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(RUNS);
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut daemon, socket) = start(dir.path(), 1);
    let python = python();
    let headers_of = |tokenctl: &OsStr| -> Vec<OsString> {
        let args: [&OsStr; 4] = [
            "--socket".as_ref(),
            socket.as_os_str(),
            "headers".as_ref(),
            "cred-0000".as_ref(),
        ];
        std::iter::once(tokenctl)
            .chain(args)
            .map(OsString::from)
            .collect()
    };
    let mut rows: Vec<(&str, Vec<OsString>)> = vec![
        ("/bin/true", vec!["/bin/true".into()]),
        (
            "python3 -c pass",
            vec![python.into(), "-c".into(), "pass".into()],
        ),
        (
            "tokenctl headers",
            headers_of(installed(dir.path(), env!("CARGO_BIN_EXE_tokenctl")).as_ref()),
        ),
    ];
    // Another build of tokenctl (say, main's) against the same daemon in the
    // same run, to tell a change's effect from the machine's mood.
    let baseline = std::env::var_os("TOKENCTL_BASELINE");
    if let Some(other) = &baseline {
        let other = installed(&dir.path().join("baseline"), other);
        rows.push(("TOKENCTL_BASELINE headers", headers_of(other.as_ref())));
    }

    let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(runs); rows.len()];
    for block in (0..runs).step_by(BLOCK) {
        for ((_, argv), t) in rows.iter().zip(&mut times) {
            time(argv);
            for _ in block..(block + BLOCK).min(runs) {
                t.push(time(argv));
            }
        }
    }
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    let _ = daemon.kill();
    let _ = daemon.wait();

    println!(
        "machine: {} cores, shared by the daemon, the commands and whatever else runs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("python3: {}", Path::new(&rows[1].1[0]).display());
    println!("\nwhole process, fork to exit, {runs} runs each in blocks of {BLOCK}");
    println!("{:>26}  {:>9}  {:>9}", "", "p50 µs", "p99 µs");
    for ((what, _), t) in rows.iter().zip(&times) {
        println!("{what:>26}  {:>9.0}  {:>9.0}", pct(t, 0.5), pct(t, 0.99));
    }
    let (floor, bar, headers) = (&times[0], &times[1], &times[2]);
    let ratio = |a: &[f64], b: &[f64], p| pct(a, p) / pct(b, p);
    println!(
        "\ntokenctl headers / python3 -c pass: p50 {:.2}x, p99 {:.2}x",
        ratio(headers, bar, 0.5),
        ratio(headers, bar, 0.99)
    );
    println!(
        "tokenctl headers / /bin/true:       p50 {:.2}x, p99 {:.2}x",
        ratio(headers, floor, 0.5),
        ratio(headers, floor, 0.99)
    );
    if baseline.is_some() {
        println!(
            "tokenctl headers / baseline:        p50 {:.2}x, p99 {:.2}x",
            ratio(headers, &times[3], 0.5),
            ratio(headers, &times[3], 0.99)
        );
    }
}

/// A copy of the program at `from` in `dir`, to be timed in its place. The
/// linker writes its output through a memory map, which leaves the file in
/// the page cache in 4 KiB pieces, and exec maps those some 0.15 ms slower
/// than a file written the usual way, as a package's files are (or read back
/// from disk): a cost of having just been built, not of the program.
fn installed(dir: &Path, from: impl AsRef<Path>) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create dir");
    let to = dir.join("tokenctl");
    std::fs::copy(from, &to).expect("copy tokenctl");
    to
}

/// The interpreter `python3` starts. On PATH, `python3` may be a version
/// manager's shim (pyenv's is a bash script that runs more processes), and
/// timing that would measure the shim, not an interpreter start.
fn python() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 on PATH");
    assert!(out.status.success(), "python3 failed");
    PathBuf::from(String::from_utf8(out.stdout).expect("a UTF-8 path").trim())
}

/// One run of `argv`, from before the fork to after the wait, in µs;
/// stdout to /dev/null. Without the `LD_LIBRARY_PATH` cargo gives this
/// bench: a script's commands do not have it, and with it the loader looks
/// for every library in cargo's directories first (dozens of failed opens,
/// 0.1 ms for `/bin/true`).
fn time(argv: &[OsString]) -> f64 {
    let t = Instant::now();
    let status = Command::new(&argv[0])
        .args(&argv[1..])
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("spawn");
    let elapsed = t.elapsed().as_secs_f64() * 1e6;
    assert!(status.success(), "{argv:?}: {status}");
    elapsed
}
