//! The durable, encrypted store: refresh tokens, cached access tokens and
//! imported secrets, one record per credential.
//!
//! redb gives ACID commits with an fsync per commit, so a rotated refresh
//! token is on disk before anyone is told about the new access token. Each
//! record is sealed with XChaCha20-Poly1305 under a 32-byte key that lives
//! outside the store (systemd credential or a private key file), with the
//! credential's name as associated data so records cannot be swapped. A store
//! that does not open with the key is refused, never rewritten: losing the
//! key must not silently destroy refresh tokens someone could still recover.
//! Nor is a damaged or foreign file: it is judged on a copy in memory first
//! (see `inspect`), reported as damage rather than as a wrong key, and left
//! as it was.

mod inspect;

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use inspect::Verdict;

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Open alerts by dedup key (sealed like records: summaries name credentials).
const ALERTS: TableDefinition<&str, &[u8]> = TableDefinition::new("alerts");
/// A known plaintext sealed at creation: opening it (on a copy of the file,
/// see `inspect`) proves the key is right before redb may write to the file.
/// A store without it gets it on the first open whose key opens every record.
const KEY_CHECK: &[u8] = b"tokend store v1";
const FORMAT: u8 = 1;
const NONCE_LEN: usize = 24;

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key file or store file could not be read or created.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What failed, e.g. "cannot read store key".
        what: &'static str,
        /// The file it failed on.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The key or store file grants access beyond the daemon's user.
    #[error(
        "{what} {} is accessible by group or others (mode {mode:04o}); run `chmod 600 {}`",
        path.display(), path.display()
    )]
    TooOpen {
        /// Which file it is, e.g. "store key".
        what: &'static str,
        /// The file's path.
        path: PathBuf,
        /// The file's permission bits.
        mode: u32,
    },
    /// The key or store file belongs to another user.
    #[error(
        "{what} {} is owned by uid {owner}, but tokend runs as uid {me}; run `chown {me} {}`",
        path.display(), path.display()
    )]
    WrongOwner {
        /// Which file it is, e.g. "store key".
        what: &'static str,
        /// The file's path.
        path: PathBuf,
        /// The uid that owns the file.
        owner: u32,
        /// The uid tokend runs as.
        me: u32,
    },
    /// The key file does not hold a key.
    #[error(
        "store key {} must hold 32 random bytes (or 64 hex digits); create one with \
         `head -c 32 /dev/urandom > {}` and `chmod 600` it", path.display(), path.display()
    )]
    BadKey {
        /// The key file's path.
        path: PathBuf,
    },
    /// The store was sealed with another key. Nothing was changed.
    #[error(
        "store {} cannot be decrypted with key {}: it was written with another key. \
         tokend left it untouched; restore the original key, or move the store aside to \
         start empty (every oauth_refresh credential will then need `tokenctl login`)",
        path.display(), key.display()
    )]
    WrongKey {
        /// The store file's path.
        path: PathBuf,
        /// The key file's path.
        key: PathBuf,
    },
    /// The store file is damaged, altered outside tokend, or not a tokend
    /// store at all. It is left as it was (unless `untouched` is false).
    #[error(
        "store {} is damaged or is not a tokend store: {detail}. {}Do not delete it: the \
         refresh tokens in it may still be recoverable. Keep a copy of it, and restore {} from a \
         backup made with the same key; to start tokend without it meanwhile, point [store] path \
         in the config at another file (every oauth_refresh credential will then need \
         `tokenctl login`)",
        path.display(), damage_notes(*untouched, key.as_deref()), path.display(),
    )]
    Damaged {
        /// The store file's path.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
        /// The key file, when something in the store authenticates under the
        /// key: the key is right, the file is not.
        key: Option<PathBuf>,
        /// Whether tokend left the file exactly as it found it. It does,
        /// unless redb failed after the key was found to open the store.
        untouched: bool,
    },
    /// Another process has the store open for writing. Nothing was changed.
    #[error(
        "store {} is in use by another process (is another tokend running with it?); tokend \
         left it untouched. Stop the other process, or give each tokend its own [store] path",
        path.display()
    )]
    InUse {
        /// The store file's path.
        path: PathBuf,
    },
    /// redb failed.
    #[error("store {}: {message}", path.display())]
    Database {
        /// The store file's path.
        path: PathBuf,
        /// What redb reported, or which record is unreadable.
        message: String,
    },
}

/// What the damage message says about the file's state and the key.
fn damage_notes(untouched: bool, key: Option<&Path>) -> String {
    let mut notes = String::from(if untouched {
        "tokend left it untouched. "
    } else {
        "tokend had checked the key and begun opening it, so redb may have written to it. "
    });
    if let Some(key) = key {
        notes += &format!("The key {} is the right one for it. ", key.display());
    }
    notes
}

/// The 32-byte store key, wiped from memory when dropped.
pub struct StoreKey {
    key: Zeroizing<[u8; 32]>,
    path: PathBuf,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreKey({}, [redacted])", self.path.display())
    }
}

impl StoreKey {
    /// Reads a key file: private to the daemon's user, holding 32 raw bytes
    /// or 64 hex digits.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let mut file =
            OpenOptions::new()
                .read(true)
                .open(path)
                .map_err(|source| StoreError::Io {
                    what: "cannot read store key",
                    path: path.to_owned(),
                    source,
                })?;
        check_private(&file, "store key", path)?;
        let mut raw = Zeroizing::new(Vec::with_capacity(80));
        (&mut file)
            .take(200)
            .read_to_end(&mut raw)
            .map_err(|source| StoreError::Io {
                what: "cannot read store key",
                path: path.to_owned(),
                source,
            })?;
        let mut key = Zeroizing::new([0u8; 32]);
        let trimmed = raw.trim_ascii();
        if raw.len() == 32 {
            key.copy_from_slice(&raw);
        } else if trimmed.len() == 64 && trimmed.iter().all(u8::is_ascii_hexdigit) {
            for (i, pair) in trimmed.chunks(2).enumerate() {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                key[i] = hex(pair[0]) << 4 | hex(pair[1]);
            }
        } else {
            return Err(StoreError::BadKey {
                path: path.to_owned(),
            });
        }
        Ok(Self {
            key,
            path: path.to_owned(),
        })
    }

    /// A key from bytes, for tests and tools.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            key: Zeroizing::new(bytes),
            path: PathBuf::from("(in memory)"),
        }
    }
}

/// Refuses a file others may read or that another user owns.
fn check_private(file: &std::fs::File, what: &'static str, path: &Path) -> Result<(), StoreError> {
    let meta = file.metadata().map_err(|source| StoreError::Io {
        what: "cannot inspect",
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StoreError::TooOpen {
            what,
            path: path.to_owned(),
            mode,
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(StoreError::WrongOwner {
            what,
            path: path.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

/// A secret string in a record, wiped from memory when dropped.
pub type Secret = Zeroizing<String>;

/// How hard a write insists on reaching the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync'd before the write returns.
    Immediate,
    /// Committed without fsync: readable at once, but a crash before the
    /// next durable commit rolls it back (redb recovers to the last durable
    /// commit).
    Cached,
}

/// What is kept for one credential. Fields a kind does not use stay `None`.
/// Secrets are wiped from memory on drop and never shown by `Debug`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// The current OAuth refresh token.
    pub refresh_token: Option<Secret>,
    /// The refresh token before the last rotation, kept until the new one
    /// has worked once: a server with a reuse grace period still accepts it
    /// if the new one was lost.
    pub previous_refresh_token: Option<Secret>,
    /// The last access token, cached so a restart need not request one.
    pub access_token: Option<Secret>,
    /// When the access token expires, Unix seconds.
    pub access_expires_at: Option<i64>,
    /// When tokend obtained the access token, Unix seconds.
    pub access_issued_at: Option<i64>,
    /// The scopes the server granted with the access token, space-separated;
    /// `None` when the server did not say.
    pub scope: Option<String>,
    /// Set (Unix seconds) while a refresh is in flight. Found set at startup,
    /// it means the daemon died between sending a refresh and storing its
    /// answer, and the server may have rotated the refresh token.
    pub refreshing_since: Option<i64>,
    /// An imported Glean secret.
    pub secret: Option<Secret>,
    /// When the imported secret expires, Unix seconds; `None` if the import
    /// gave no expiry.
    pub secret_expires_at: Option<i64>,
    /// When the refresh token's grant was obtained (login), Unix seconds: the
    /// start of the source's refresh-token lifetime.
    pub logged_in_at: Option<i64>,
    /// Why the refresh token is known dead (`invalid_grant`), kept so a
    /// restart neither presents it again nor loses the precise reason.
    pub needs_login: Option<String>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |o: &Option<Secret>| o.as_ref().map(|_| "[redacted]");
        f.debug_struct("Record")
            .field("refresh_token", &shown(&self.refresh_token))
            .field(
                "previous_refresh_token",
                &shown(&self.previous_refresh_token),
            )
            .field("access_token", &shown(&self.access_token))
            .field("access_expires_at", &self.access_expires_at)
            .field("refreshing_since", &self.refreshing_since)
            .field("secret", &shown(&self.secret))
            .finish_non_exhaustive()
    }
}

/// The open store.
pub struct Store {
    db: redb::Database,
    cipher: XChaCha20Poly1305,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.path.display())
    }
}

impl Store {
    /// Opens the store at `path`, creating it (0600, in a 0700 directory
    /// when that is missing) if absent. Fails without writing anything if the
    /// key does not open it ([`StoreError::WrongKey`]), if the file is
    /// damaged or not a tokend store ([`StoreError::Damaged`]), or if another
    /// process has it open ([`StoreError::InUse`]); never panics on a
    /// damaged file. A store without the key-check record (written before it
    /// existed) opens when the key opens every record, and gets the record.
    pub fn open(path: &Path, key: &StoreKey) -> Result<Self, StoreError> {
        let io = |what| {
            move |source| StoreError::Io {
                what,
                path: path.to_owned(),
                source,
            }
        };
        if let Some(dir) = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.exists())
        {
            std::fs::create_dir_all(dir).map_err(io("cannot create the store's directory for"))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io("cannot set the mode of the store's directory for"))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("cannot open store"))?;
        check_private(&file, "store", path)?;
        drop(file);
        let cipher = XChaCha20Poly1305::new((&*key.key).into());
        // Judge an existing store on a copy before redb opens it for writing:
        // that open writes (its recovery after a crash commits), so it must
        // wait until the key is known to open the store.
        let bytes = inspect::read_store(path)?;
        // Whether the store holds the key-check record; a new one does not.
        let key_check = if bytes.is_empty() {
            false
        } else {
            match inspect::judge(&bytes, &cipher) {
                Verdict::Opens { key_check } => key_check,
                Verdict::WrongKey => {
                    return Err(StoreError::WrongKey {
                        path: path.to_owned(),
                        key: key.path.clone(),
                    });
                }
                Verdict::Damaged { detail, key_fits } => {
                    return Err(StoreError::Damaged {
                        path: path.to_owned(),
                        detail,
                        key: key_fits.then(|| key.path.clone()),
                        untouched: true,
                    });
                }
            }
        };
        drop(bytes);
        // The key opens the store, or there is none yet: redb may write now.
        // Its open on the file should not fail where it succeeded on the copy;
        // if it does (the file changed since, or a redb bug), it is reported,
        // never a panic.
        let damaged = |detail: String| StoreError::Damaged {
            path: path.to_owned(),
            detail,
            key: Some(key.path.clone()),
            untouched: false,
        };
        inspect::caught(|| {
            let db = redb::Database::create(path).map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen
                | redb::DatabaseError::LockProtocolMismatch => StoreError::InUse {
                    path: path.to_owned(),
                },
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail)) => {
                    damaged(format!("redb cannot read it ({detail})"))
                }
                e => db_error(path, e),
            })?;
            let store = Self {
                db,
                cipher,
                path: path.to_owned(),
            };
            if !key_check {
                let sealed = store.seal("\0key_check", KEY_CHECK);
                store.write(META, |t| t.insert("key_check", sealed.as_slice()).map(drop))?;
            }
            Ok(store)
        })
        .unwrap_or_else(|panic| Err(damaged(panic)))
    }

    /// The record for `name`, if any. Blocking (disk): call from
    /// `spawn_blocking` in async code.
    pub fn get(&self, name: &str) -> Result<Option<Record>, StoreError> {
        let read = self.db.begin_read().map_err(|e| db_error(&self.path, e))?;
        let table = match read.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_error(&self.path, e)),
        };
        let Some(sealed) = table.get(name).map_err(|e| db_error(&self.path, e))? else {
            return Ok(None);
        };
        self.decode(name, sealed.value()).map(Some)
    }

    /// Decodes a record of `name` as stored (format byte, nonce, sealed
    /// JSON). Anything malformed, forged or sealed for another name is an
    /// error naming the record, never a panic.
    pub fn decode(&self, name: &str, sealed: &[u8]) -> Result<Record, StoreError> {
        let plain =
            open_sealed(&self.cipher, name, sealed).ok_or_else(|| StoreError::Database {
                path: self.path.clone(),
                message: format!("record `{name}` fails authentication (corrupted or tampered)"),
            })?;
        serde_json::from_slice(&plain).map_err(|e| StoreError::Database {
            path: self.path.clone(),
            message: format!("record `{name}` is unreadable: {e}"),
        })
    }

    /// Seals `record` for `name` as [`Store::put`] stores it.
    pub fn encode(&self, name: &str, record: &Record) -> Vec<u8> {
        // Serialising strings and integers to JSON cannot fail.
        let plain = Zeroizing::new(serde_json::to_vec(record).unwrap_or_default());
        self.seal(name, &plain)
    }

    /// Replaces the record for `name` and waits until it is on disk (redb's
    /// immediate durability: fsync before `commit` returns). Blocking.
    pub fn put(&self, name: &str, record: &Record) -> Result<(), StoreError> {
        self.put_with(name, record, Durability::Immediate)
    }

    /// Replaces the record for `name`. With [`Durability::Cached`] the
    /// commit skips the fsync: for records whose loss in a crash costs only
    /// a token request (a cached client-credentials token), not a login.
    /// The next durable commit makes it durable too. Blocking.
    pub fn put_with(
        &self,
        name: &str,
        record: &Record,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let sealed = self.encode(name, record);
        self.write_with(RECORDS, durability, |t| {
            t.insert(name, sealed.as_slice()).map(drop)
        })
    }

    /// Records open alerts (`Some`) and forgets resolved ones (`None`), in
    /// one durable transaction: a restart must not page again. Blocking.
    pub fn update_alerts(&self, changes: &[(String, Option<Vec<u8>>)]) -> Result<(), StoreError> {
        let sealed: Vec<(&str, Option<Vec<u8>>)> = changes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_ref().map(|v| self.seal(&alert_name(k), v))))
            .collect();
        self.write(ALERTS, |t| {
            for (key, value) in &sealed {
                match value {
                    Some(v) => t.insert(*key, v.as_slice()).map(drop)?,
                    None => t.remove(*key).map(drop)?,
                }
            }
            Ok(())
        })
    }

    /// Every open alert recorded; unreadable entries are skipped.
    pub fn alerts(&self) -> Result<Vec<Zeroizing<Vec<u8>>>, StoreError> {
        let read = self.db.begin_read().map_err(|e| db_error(&self.path, e))?;
        let table = match read.open_table(ALERTS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_error(&self.path, e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| db_error(&self.path, e))? {
            let (k, v) = entry.map_err(|e| db_error(&self.path, e))?;
            if let Some(plain) = open_sealed(&self.cipher, &alert_name(k.value()), v.value()) {
                out.push(plain);
            }
        }
        Ok(out)
    }

    /// Removes the record for `name`. Blocking.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        self.write(RECORDS, |t| t.remove(name).map(drop))
    }

    /// One durable write transaction on `table`.
    fn write(
        &self,
        table: TableDefinition<&str, &[u8]>,
        change: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        self.write_with(table, Durability::Immediate, change)
    }

    fn write_with(
        &self,
        table: TableDefinition<&str, &[u8]>,
        durability: Durability,
        change: impl FnOnce(&mut redb::Table<&str, &[u8]>) -> Result<(), redb::StorageError>,
    ) -> Result<(), StoreError> {
        let err = |e: &dyn std::fmt::Display| db_error(&self.path, e);
        let mut tx = self.db.begin_write().map_err(|e| err(&e))?;
        if durability == Durability::Cached {
            tx.set_durability(redb::Durability::None)
                .map_err(|e| err(&e))?;
        }
        {
            let mut t = tx.open_table(table).map_err(|e| err(&e))?;
            change(&mut t).map_err(|e| err(&e))?;
        }
        tx.commit().map_err(|e| err(&e))
    }

    fn seal(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        seal_in(&self.cipher, STORE_CONTEXT, name, plain)
    }
}

/// The associated-data prefix of the local store's values.
const STORE_CONTEXT: &str = "tokend/v1/";

/// Seals values with a 32-byte key the way the store does (format byte,
/// random 24-byte nonce, XChaCha20-Poly1305), under a context of its own in
/// the associated data: a value sealed for one purpose (the fleet's shared
/// records) never opens as another (a local record), even under one key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    context: &'static str,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({}, [redacted])", self.context)
    }
}

impl Sealer {
    /// A sealer for values of `context` (e.g. `"tokend/fleet/v1/"`).
    pub fn new(key: &StoreKey, context: &'static str) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new((&*key.key).into()),
            context,
        }
    }

    /// `plain` sealed for `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Vec<u8> {
        seal_in(&self.cipher, self.context, name, plain)
    }

    /// The value sealed for `name`; `None` if it is malformed or fails
    /// authentication (another key, another name or context, tampering).
    pub fn open(&self, name: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        open_in(&self.cipher, self.context, name, sealed)
    }
}

fn seal_in(cipher: &XChaCha20Poly1305, context: &str, name: &str, plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let aad = aad(context, name);
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        // XChaCha20-Poly1305 encryption fails only past 256 GiB messages.
        .expect("record too large to encrypt");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
    out.push(FORMAT);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Runs `f` on the store from tokio's blocking pool: every store call
/// from async code goes through here, since a commit may wait for fsync.
pub async fn blocking<T: Send + 'static>(
    store: &std::sync::Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = std::sync::Arc::clone(store);
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| StoreError::Database {
            path: "(store task)".into(),
            message: e.to_string(),
        })?
}

/// Decrypts a value sealed in the store; `None` if it is malformed or fails
/// authentication (wrong key, wrong name, tampering).
fn open_sealed(
    cipher: &XChaCha20Poly1305,
    name: &str,
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    open_in(cipher, STORE_CONTEXT, name, sealed)
}

fn open_in(
    cipher: &XChaCha20Poly1305,
    context: &str,
    name: &str,
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let (&format, rest) = sealed.split_first()?;
    if format != FORMAT || rest.len() < NONCE_LEN {
        return None;
    }
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let aad = aad(context, name);
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: body,
                aad: &aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// Alert entries are sealed under a name no credential can have.
fn alert_name(key: &str) -> String {
    format!("\0alert/{key}")
}

fn aad(context: &str, name: &str) -> Vec<u8> {
    let mut aad = context.as_bytes().to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Fills `buf` from the kernel's CSPRNG.
fn fill_random(buf: &mut [u8]) {
    // getrandom(2) fails only on kernels older than any tokend supports.
    getrandom::fill(buf).expect("the kernel's random source failed");
}

fn db_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
