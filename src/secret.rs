//! Where a secret comes from, and reading it safely.
//!
//! Secrets are never written inline in the config. A file must be private to
//! the daemon's user (ssh's rule for keys), because a token readable by others
//! is a token already leaked; the check runs on the opened file, so a swap
//! between check and read cannot slip a different file in.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use zeroize::Zeroizing;

/// Larger files are not tokens; refusing them bounds memory on a typo'd path.
const MAX_SECRET_LEN: u64 = 64 * 1024;

/// Where to read a secret from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file private to the daemon's user.
    File(PathBuf),
    /// An environment variable of the daemon's process.
    Env(String),
    /// A systemd credential (`LoadCredential=`), read from
    /// `$CREDENTIALS_DIRECTORY/<name>`.
    Credential(String),
}

/// Why a secret could not be read. Messages name the source, never its content.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The file could not be opened or read.
    #[error("cannot read secret file {path}: {source}")]
    Io {
        /// The secret file's path.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file is not a regular file.
    #[error("secret file {path} is not a regular file")]
    NotAFile {
        /// The secret file's path.
        path: PathBuf,
    },
    /// The file grants access beyond its owner.
    #[error(
        "secret file {path} is accessible by group or others (mode {mode:04o}); \
         run `chmod 600 {path}`"
    )]
    TooOpen {
        /// The secret file's path.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// The file belongs to someone other than the daemon's user or root.
    #[error(
        "secret file {path} is owned by uid {owner}, but tokend runs as uid {me}; \
         run `chown {me} {path}`"
    )]
    WrongOwner {
        /// The secret file's path.
        path: PathBuf,
        /// The uid that owns the file.
        owner: u32,
        /// The uid tokend runs as.
        me: u32,
    },
    /// The file is implausibly large for a token.
    #[error(
        "secret file {path} is larger than {MAX_SECRET_LEN} bytes; it must hold the token alone"
    )]
    TooLarge {
        /// The secret file's path.
        path: PathBuf,
    },
    /// The environment variable is not set.
    #[error("environment variable {var} is not set (or not valid UTF-8)")]
    EnvUnset {
        /// The variable's name.
        var: String,
    },
    /// A systemd credential was named outside systemd.
    #[error(
        "systemd credential `{name}` needs $CREDENTIALS_DIRECTORY, which systemd sets for units \
         with LoadCredential=; outside systemd use secret = {{ file = \"…\" }}"
    )]
    NoCredentialsDirectory {
        /// The systemd credential's name.
        name: String,
    },
    /// The secret is empty, or could not be sent in an HTTP header.
    #[error(
        "{origin} is empty or holds characters that cannot go in an HTTP header \
         (spaces, control characters or non-ASCII inside the token); it must hold the token alone"
    )]
    Malformed {
        /// Where the secret came from, e.g. `secret file <path>`; never its
        /// content.
        origin: String,
    },
}

impl SecretSource {
    /// Reads the secret: surrounding whitespace (a trailing newline from
    /// `echo` or an editor) is dropped; what remains must be printable ASCII
    /// so it can go into a header as it is.
    pub fn load(&self) -> Result<SecretString, SecretError> {
        let (raw, origin) = match self {
            Self::File(path) => (
                read_private_file(path)?,
                format!("secret file {}", path.display()),
            ),
            Self::Env(var) => (
                Zeroizing::new(
                    std::env::var(var).map_err(|_| SecretError::EnvUnset { var: var.clone() })?,
                ),
                format!("environment variable {var}"),
            ),
            Self::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory { name: name.clone() })?;
                let path = Path::new(&dir).join(name);
                let raw = read_private_file(&path)?;
                (raw, format!("systemd credential {}", path.display()))
            }
        };
        let secret = SecretString::from(raw.trim());
        let valid = {
            use secrecy::ExposeSecret;
            let s = secret.expose_secret();
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
        };
        if valid {
            Ok(secret)
        } else {
            Err(SecretError::Malformed { origin })
        }
    }
}

/// A file private to the daemon's user (mode, owner, type and size
/// checked), whole: the untrimmed copy is wiped when dropped. For secrets
/// that are not header values, such as a TLS private key.
pub(crate) fn read_private_file(path: &Path) -> Result<Zeroizing<String>, SecretError> {
    let io = |source| SecretError::Io {
        path: path.to_owned(),
        source,
    };
    // Non-blocking: opening a FIFO for reading would otherwise wait for a
    // writer and hang `--check` and reloads; the type check below refuses
    // it. Symlinks are followed (Kubernetes mounts secrets through them);
    // the checks are on the opened file, so a link to a FIFO is refused too.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(SecretError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Err(SecretError::WrongOwner {
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.len() > MAX_SECRET_LEN {
        return Err(SecretError::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut raw = Zeroizing::new(String::with_capacity(meta.len() as usize + 1));
    file.take(MAX_SECRET_LEN + 1)
        .read_to_string(&mut raw)
        .map_err(io)?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use secrecy::ExposeSecret;

    use super::*;

    fn write(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn private_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "t", "glean_abc123\n", 0o600);
        let s = SecretSource::File(path).load().unwrap();
        assert_eq!(s.expose_secret(), "glean_abc123");
    }

    #[test]
    fn open_file_is_refused_without_leaking_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "t", "CANARY-open-file", 0o644);
        let err = SecretSource::File(path.clone()).load().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("mode 0644"), "{msg}");
        assert!(
            msg.contains(&format!("chmod 600 {}", path.display())),
            "{msg}"
        );
        assert!(!msg.contains("CANARY"), "{msg}");
    }

    #[test]
    fn malformed_secret_names_origin_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "t", "CANARY with space", 0o600);
        let msg = SecretSource::File(path).load().unwrap_err().to_string();
        assert!(msg.contains("cannot go in an HTTP header"), "{msg}");
        assert!(!msg.contains("CANARY"), "{msg}");
        let path = write(dir.path(), "empty", "\n", 0o600);
        assert!(matches!(
            SecretSource::File(path).load(),
            Err(SecretError::Malformed { .. })
        ));
    }

    /// A FIFO (or a link to one) used to block the open until a writer came,
    /// hanging `--check` and wedging reloads.
    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&fifo, &link).unwrap();
        for path in [fifo, link] {
            let (tx, rx) = std::sync::mpsc::channel();
            let p = path.clone();
            std::thread::spawn(move || tx.send(read_private_file(&p).map(drop)));
            let result = rx
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("reading a FIFO must not block");
            assert!(
                matches!(result, Err(SecretError::NotAFile { .. })),
                "{path:?}: {result:?}"
            );
        }
    }

    #[test]
    fn missing_file_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = SecretSource::File(dir.path().join("nope"))
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
        let err = SecretSource::File(dir.path().to_owned())
            .load()
            .unwrap_err();
        assert!(matches!(
            err,
            SecretError::NotAFile { .. } | SecretError::TooOpen { .. }
        ));
    }
}
