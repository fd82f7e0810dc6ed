//! A hostile token endpoint in the test's process: plain HTTP/1.1 on
//! loopback, answering every token request the way its current [`Mode`]
//! says (huge bodies, answers that rotate the refresh token but are
//! otherwise unusable, tokens that are dead on arrival). Records the refresh
//! tokens presented.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// How the endpoint answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// A valid answer: a fresh access token living `expires_in` seconds, and
    /// a rotated refresh token `rt-N`.
    Valid { expires_in: i64 },
    /// 200 with a JSON body padded to `bytes`.
    HugeBody { bytes: usize },
    /// 200 with a rotated refresh token `rt-N` and an access token that
    /// cannot go in a header.
    RotatedButUnusable,
}

#[derive(Debug, Default)]
struct State {
    presented: Vec<String>,
    issued: usize,
}

/// A running hostile endpoint; its thread ends with the test process.
pub struct Hostile {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    state: Arc<Mutex<State>>,
}

impl Hostile {
    pub fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the hostile endpoint");
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let state = Arc::new(Mutex::new(State::default()));
        let (m, st) = (Arc::clone(&mode), Arc::clone(&state));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (m, st) = (Arc::clone(&m), Arc::clone(&st));
                std::thread::spawn(move || {
                    let _ = serve(stream, &m, &st);
                });
            }
        });
        Self { addr, mode, state }
    }

    pub fn token_endpoint(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The refresh tokens presented so far, in order.
    pub fn presented(&self) -> Vec<String> {
        self.state.lock().unwrap().presented.clone()
    }

    /// How many token requests arrived.
    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().presented.len()
    }
}

fn serve(stream: TcpStream, mode: &Mutex<Mode>, state: &Mutex<State>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut length = 0;
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let form = String::from_utf8_lossy(&body).into_owned();
        let presented = form
            .split('&')
            .find_map(|kv| kv.strip_prefix("refresh_token="))
            .unwrap_or("-")
            .to_owned();
        let n = {
            let mut st = state.lock().unwrap();
            st.presented.push(presented);
            st.issued += 1;
            st.issued
        };
        let mode = mode.lock().unwrap().clone();
        let mut out = &stream;
        match mode {
            Mode::Valid { expires_in } => {
                let body = format!(
                    r#"{{"access_token":"at-{n}","token_type":"Bearer","expires_in":{expires_in},"refresh_token":"rt-{n}"}}"#
                );
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )?;
            }
            Mode::RotatedButUnusable => {
                let body = format!(
                    r#"{{"access_token":"not usable {n}","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-{n}"}}"#
                );
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )?;
            }
            Mode::HugeBody { bytes } => {
                // Chunked, so the client cannot refuse it by its length alone.
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                )?;
                let chunk = vec![b' '; 64 * 1024];
                let mut sent = 0;
                while sent < bytes {
                    write!(out, "{:x}\r\n", chunk.len())?;
                    out.write_all(&chunk)?;
                    out.write_all(b"\r\n")?;
                    sent += chunk.len();
                }
                out.write_all(b"0\r\n\r\n")?;
            }
        }
        out.flush()?;
    }
}
