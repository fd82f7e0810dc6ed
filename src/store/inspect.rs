//! Judging an existing store file before redb may write to it: is it a
//! tokend store, is it intact, and does the key open it?
//!
//! redb writes to a file as it opens it: after a crash its recovery repairs
//! and commits, and its integrity check commits too. A store the key does not
//! open must stay byte for byte as it was, and a damaged one must be reported
//! as damaged, not as a wrong key, and never crash tokend. So the judgement
//! is made on a copy of the file in memory: redb recovers and checks the copy
//! (every page checksum verified), the key-check record and every sealed
//! record are tried on the copy, and any panic redb raises on a damaged file
//! is caught. Only a store the key opens is then opened for real.

use std::cell::Cell;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Once;

use chacha20poly1305::XChaCha20Poly1305;
use redb::{MultimapTableHandle, ReadableDatabase, ReadableTable, StorageBackend, TableHandle};

use super::{ALERTS, FORMAT, KEY_CHECK, META, NONCE_LEN, RECORDS, StoreError, alert_name};

/// What the copy of a store file showed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The key opens the store and every record in it. `key_check`: the
    /// store already holds the key-check record (stores written before it
    /// existed, or left by a start killed before it was written, do not).
    Opens { key_check: bool },
    /// The store is intact and the key opens none of it.
    WrongKey,
    /// The file is not an intact tokend store; `key_fits` when something in
    /// it authenticates under the key nonetheless (the key is not the
    /// problem).
    Damaged { detail: String, key_fits: bool },
}

/// Reads the whole store file under a shared lock, which a process with the
/// store open for writing (another tokend) holds exclusively.
pub(super) fn read_store(path: &Path) -> Result<Vec<u8>, StoreError> {
    let io = |source| StoreError::Io {
        what: "cannot read store",
        path: path.to_owned(),
        source,
    };
    // Read-only: nothing done through this handle can change the file.
    let mut file = File::open(path).map_err(io)?;
    match file.try_lock_shared() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(StoreError::InUse {
                path: path.to_owned(),
            });
        }
        // A file system without whole-file locks: redb's own open still
        // refuses a second writer.
        Err(std::fs::TryLockError::Error(_)) => {}
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok(bytes)
}

/// Judges a store from `bytes`, a copy of its non-empty file. Never writes
/// to the file, never panics.
pub(super) fn judge(bytes: &[u8], cipher: &XChaCha20Poly1305) -> Verdict {
    match caught(|| judge_intact(bytes, cipher)) {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(detail)) | Err(detail) => Verdict::Damaged {
            key_fits: key_check_opens(bytes, cipher),
            detail,
        },
    }
}

thread_local! {
    /// Set while this thread runs redb under [`caught`].
    static CATCHING: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into its message. The panic is not printed as
/// one (an operator reading "panicked" would think tokend crashed): it is
/// logged at debug level, and the message ends up in the error.
pub(super) fn caught<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        // Other threads, and this one outside `caught`, keep the hook they had.
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CATCHING.with(Cell::get) {
                tracing::debug!(panic = %info, "redb panicked on the store file; caught");
            } else {
                previous(info);
            }
        }));
    });
    let outer = CATCHING.replace(true);
    // Whatever `f` built is dropped when it panics, and the caller treats a
    // panic as a failure: no state half-changed by the panic is used again.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CATCHING.set(outer);
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        format!("redb panicked reading it ({message})")
    })
}

/// The copy of the store in memory, opened by redb: recovered if a crash
/// left it needing recovery, and with `check` every page checksum verified.
fn in_memory(bytes: &[u8], check: bool) -> Result<redb::Database, String> {
    let backend = redb::backends::InMemoryBackend::new();
    backend
        .set_len(bytes.len() as u64)
        .and_then(|()| backend.write(0, bytes))
        .map_err(|e| format!("cannot copy it into memory: {e}"))?;
    redb::Builder::new()
        .set_check_integrity_on_open(check)
        .create_with_backend(backend)
        .map_err(|e| format!("redb cannot read it ({e})"))
}

fn judge_intact(bytes: &[u8], cipher: &XChaCha20Poly1305) -> Result<Verdict, String> {
    let db = in_memory(bytes, true)?;
    let unreadable = |e: &dyn std::fmt::Display| format!("redb cannot read it ({e})");
    let read = db.begin_read().map_err(|e| unreadable(&e))?;

    let ours = [RECORDS.name(), META.name(), ALERTS.name()];
    let foreign = read
        .list_tables()
        .map_err(|e| unreadable(&e))?
        .map(|t| t.name().to_owned())
        .chain(
            read.list_multimap_tables()
                .map_err(|e| unreadable(&e))?
                .map(|t| t.name().to_owned()),
        )
        .find(|name| !ours.contains(&name.as_str()));
    if let Some(name) = foreign {
        return Ok(Verdict::Damaged {
            detail: format!("it holds a table `{name}`, which tokend never writes"),
            key_fits: false,
        });
    }

    let key_check = match read.open_table(META) {
        Ok(t) => t
            .get("key_check")
            .map_err(|e| unreadable(&e))?
            .map(|v| v.value().to_vec()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(unreadable(&e)),
    };

    // Every sealed entry, tried with the key: how many open, which do not.
    let mut opened = 0usize;
    let mut failed = Vec::new();
    for (table, what) in [(RECORDS, "record"), (ALERTS, "alert")] {
        let t = match read.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => continue,
            Err(e) => return Err(unreadable(&e)),
        };
        for entry in t.iter().map_err(|e| unreadable(&e))? {
            let (k, v) = entry.map_err(|e| unreadable(&e))?;
            let name = if what == "alert" {
                alert_name(k.value())
            } else {
                k.value().to_owned()
            };
            if super::open_sealed(cipher, &name, v.value()).is_some() {
                opened += 1;
            } else {
                failed.push(format!("{what} `{}`", k.value()));
            }
        }
    }
    let failed_list = || {
        let shown = failed
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        match failed.len() {
            0..=5 => shown,
            n => format!("{shown} and {} more", n - 5),
        }
    };

    Ok(match key_check {
        Some(sealed) if !well_formed(&sealed) => Verdict::Damaged {
            detail: "its key-check record is malformed".into(),
            key_fits: opened > 0,
        },
        Some(sealed) => match super::open_sealed(cipher, "\0key_check", &sealed) {
            Some(plain) if plain.as_slice() == KEY_CHECK => {
                if failed.is_empty() {
                    Verdict::Opens { key_check: true }
                } else {
                    Verdict::Damaged {
                        detail: format!(
                            "{} fail authentication although the key opens its key-check \
                             record: altered outside tokend",
                            failed_list()
                        ),
                        key_fits: true,
                    }
                }
            }
            Some(_) => Verdict::Damaged {
                detail: "its key-check record holds something else".into(),
                key_fits: true,
            },
            None if opened > 0 => Verdict::Damaged {
                detail: format!(
                    "the key opens {opened} of its records but not its key-check record"
                ),
                key_fits: true,
            },
            None => Verdict::WrongKey,
        },
        // No key-check record: the records decide.
        None if failed.is_empty() => Verdict::Opens { key_check: false },
        None if opened == 0 => Verdict::WrongKey,
        None => Verdict::Damaged {
            detail: format!(
                "the key opens {opened} of its records but not {}",
                failed_list()
            ),
            key_fits: true,
        },
    })
}

/// Whether a sealed value has the shape `seal` gives it: format byte, nonce,
/// and at least the authentication tag. A wrong key cannot change the shape.
fn well_formed(sealed: &[u8]) -> bool {
    sealed.len() >= 1 + NONCE_LEN + 16 && sealed[0] == FORMAT
}

/// For a store that is not intact: whether its key-check record can still be
/// read, without the integrity check, and opens with the key. Authentication
/// makes a yes certain whatever the damage; a no proves nothing.
fn key_check_opens(bytes: &[u8], cipher: &XChaCha20Poly1305) -> bool {
    caught(|| -> Option<bool> {
        let db = in_memory(bytes, false).ok()?;
        let read = db.begin_read().ok()?;
        let meta = read.open_table(META).ok()?;
        let sealed = meta.get("key_check").ok()??;
        let plain = super::open_sealed(cipher, "\0key_check", sealed.value())?;
        Some(plain.as_slice() == KEY_CHECK)
    })
    .ok()
    .flatten()
    .unwrap_or(false)
}
