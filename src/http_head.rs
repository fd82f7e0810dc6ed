//! Reading an HTTP/1 request head from whoever connects, within bounds: at
//! most [`MAX_HEAD`] bytes, within [`HEAD_TIMEOUT`]. The metrics listener
//! and `tokenctl login`'s callback listener both face strangers on a port
//! anyone on the machine can reach.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no request head was read.
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// Over [`MAX_HEAD`] without the blank line that ends a head.
    TooLarge,
    /// Not all of it within [`HEAD_TIMEOUT`].
    TimedOut,
    /// The connection ended or failed first.
    Closed,
}

/// Reads up to the blank line ending the head (which is not returned),
/// within the limits.
pub async fn read_head<R: AsyncRead + Unpin>(read: &mut R) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(512);
    let reading = async {
        let mut buf = [0u8; 1024];
        loop {
            let n = read.read(&mut buf).await.map_err(|_| HeadError::Closed)?;
            if n == 0 {
                return Err(HeadError::Closed);
            }
            head.extend_from_slice(&buf[..n]);
            if let Some(end) = find_end(&head) {
                head.truncate(end);
                return Ok(());
            }
            if head.len() > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
        }
    };
    match tokio::time::timeout(HEAD_TIMEOUT, reading).await {
        Ok(Ok(())) => Ok(head),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(HeadError::TimedOut),
    }
}

fn find_end(head: &[u8]) -> Option<usize> {
    let crlf = head.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = head.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

/// The method and target of a head's request line, if it is an HTTP/1.x
/// one.
pub fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(method), Some(target), Some(version), None) if version.starts_with("HTTP/1.") => {
            Some((method, target))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn request_lines() {
        assert_eq!(
            request_line(b"GET /x?a=1 HTTP/1.1\r\nHost: h"),
            Some(("GET", "/x?a=1"))
        );
        assert_eq!(request_line(b"GET /x HTTP/1.0"), Some(("GET", "/x")));
        for bad in [
            &b"GET /x"[..],
            b"GET /x HTTP/2",
            b"\xff /x HTTP/1.1",
            b"GET /x y HTTP/1.1",
        ] {
            assert_eq!(request_line(bad), None, "{bad:?}");
        }
    }

    /// A 1 MiB request line without a newline: refused after 8 KiB, not
    /// buffered whole.
    #[tokio::test]
    async fn an_endless_head_is_cut_off() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            let chunk = vec![b'A'; 4096];
            let mut sent = 0;
            while sent < 1 << 20 && client.write_all(&chunk).await.is_ok() {
                sent += chunk.len();
            }
            sent
        });
        assert_eq!(read_head(&mut server).await, Err(HeadError::TooLarge));
        drop(server);
        assert!(
            writer.await.unwrap() < 1 << 20,
            "reading stopped at the limit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_client_times_out() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let started = tokio::time::Instant::now();
        assert_eq!(read_head(&mut server).await, Err(HeadError::TimedOut));
        assert_eq!(started.elapsed(), HEAD_TIMEOUT);
    }
}
