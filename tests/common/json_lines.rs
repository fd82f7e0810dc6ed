//! A child process that prints one JSON value per line (the watch scripts
//! of the interop and client-package tests, an MCP server over stdio), read
//! line by line with a time limit each; on any failure its stderr is shown.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub struct JsonLines {
    child: Child,
    lines: mpsc::Receiver<String>,
    per_line: Duration,
}

impl JsonLines {
    /// Starts `cmd` (stdin closed, stdout and stderr piped); each line must
    /// arrive within `per_line`.
    pub fn spawn(cmd: Command, per_line: Duration) -> Self {
        Self::start(cmd, Stdio::null(), per_line)
    }

    /// Like [`JsonLines::spawn`], with stdin open for [`JsonLines::send`].
    pub fn spawn_talking(cmd: Command, per_line: Duration) -> Self {
        Self::start(cmd, Stdio::piped(), per_line)
    }

    fn start(mut cmd: Command, stdin: Stdio, per_line: Duration) -> Self {
        let mut child = cmd
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            per_line,
        }
    }

    /// Writes `message` as one line to its stdin.
    pub fn send(&mut self, message: &Value) {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .expect("started with spawn_talking");
        writeln!(stdin, "{message}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("write to the child: {e}"));
    }

    /// The next line as JSON; `what` names it in a failure.
    pub fn next(&mut self, what: &str) -> Value {
        match self.lines.recv_timeout(self.per_line) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|e| {
                panic!(
                    "{what}: not JSON ({e}): {line}\n--- stderr\n{}",
                    self.stderr()
                )
            }),
            Err(e) => {
                let per_line = self.per_line;
                panic!(
                    "{what}: nothing within {per_line:?} ({e})\n--- stderr\n{}",
                    self.stderr()
                )
            }
        }
    }

    /// Waits (at most `within`) for the process to exit successfully, and
    /// returns its stderr.
    pub fn finish(mut self, within: Duration) -> String {
        let status = super::wait_with_timeout(&mut self.child, within);
        let stderr = self.stderr();
        assert!(status.success(), "{status}\n{stderr}");
        stderr
    }

    /// Stops the process (if still running) and reads its stderr.
    fn stderr(&mut self) -> String {
        let _ = self.child.kill();
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        err
    }
}

impl Drop for JsonLines {
    /// A test that fails or ends early leaves no child behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
