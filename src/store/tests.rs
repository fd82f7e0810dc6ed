use super::*;

fn record() -> Record {
    Record {
        refresh_token: Some(Zeroizing::new("rt-CANARY".into())),
        access_token: Some(Zeroizing::new("at-CANARY".into())),
        access_expires_at: Some(1_900_000_000),
        ..Record::default()
    }
}

#[test]
fn records_round_trip_and_are_not_plaintext_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/store.redb");
    let key = StoreKey::from_bytes([7; 32]);
    let store = Store::open(&path, &key).unwrap();
    store.put("a", &record()).unwrap();
    assert_eq!(store.get("a").unwrap(), Some(record()));
    assert_eq!(store.get("b").unwrap(), None);
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    assert!(!bytes.windows(6).any(|w| w == b"CANARY"));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    assert!(!format!("{:?}", record()).contains("CANARY"));
    // Reopens with the same key.
    let store = Store::open(&path, &key).unwrap();
    assert_eq!(store.get("a").unwrap(), Some(record()));
    store.remove("a").unwrap();
    assert_eq!(store.get("a").unwrap(), None);
}

#[test]
fn a_wrong_key_is_refused_and_the_store_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = Store::open(&path, &StoreKey::from_bytes([1; 32])).unwrap();
    store.put("a", &record()).unwrap();
    drop(store);
    let hash = |p: &Path| {
        use sha2::Digest as _;
        sha2::Sha256::digest(std::fs::read(p).unwrap())
    };
    let before = hash(&path);
    let err = Store::open(&path, &StoreKey::from_bytes([2; 32])).unwrap_err();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
    assert!(err.to_string().contains("left it untouched"), "{err}");
    assert!(
        hash(&path) == before,
        "a store opened with the wrong key was modified"
    );
}

#[test]
fn records_are_bound_to_their_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s"), &StoreKey::from_bytes([3; 32])).unwrap();
    let sealed = store.seal("a", b"{}");
    assert!(open_sealed(&store.cipher, "a", &sealed).is_some());
    assert!(open_sealed(&store.cipher, "b", &sealed).is_none());
    let mut tampered = sealed;
    *tampered.last_mut().unwrap() ^= 1;
    assert!(open_sealed(&store.cipher, "a", &tampered).is_none());
}

#[test]
fn key_files_must_be_private_and_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, [9u8; 32]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = StoreKey::load(&path).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(*StoreKey::load(&path).unwrap().key, [9u8; 32]);
    std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
    assert_eq!(*StoreKey::load(&path).unwrap().key, [0xab; 32]);
    std::fs::write(&path, "short").unwrap();
    assert!(matches!(
        StoreKey::load(&path),
        Err(StoreError::BadKey { .. })
    ));
}

#[test]
fn an_open_store_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(Store::open(&path, &StoreKey::from_bytes([1; 32])).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = Store::open(&path, &StoreKey::from_bytes([1; 32])).unwrap_err();
    assert!(matches!(err, StoreError::TooOpen { .. }), "{err}");
}

// Damaged, foreign, crashed and tampered stores.

const RIGHT: [u8; 32] = [1; 32];
const WRONG: [u8; 32] = [2; 32];
/// Credential names stored in the fixtures: redb keeps keys in the clear,
/// which is how the tests find the pages that hold them.
const ALPHA: &str = "alpha-record";
const BETA: &str = "beta-record";

/// `Store::open`, turning a panic into a test failure that says so.
fn open(path: &Path, key: [u8; 32]) -> Result<Store, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Store::open(path, &StoreKey::from_bytes(key))
    }))
    .unwrap_or_else(|_| panic!("Store::open panicked on {}", path.display()))
}

fn is_damaged(e: &StoreError) -> bool {
    matches!(e, StoreError::Damaged { .. })
}

fn is_wrong_key(e: &StoreError) -> bool {
    matches!(e, StoreError::WrongKey { .. })
}

/// What a write to a file would change: its content's hash, its length and
/// its mtime.
#[derive(Debug, PartialEq, Eq)]
struct FileState {
    sha256: String,
    len: u64,
    mtime: std::time::SystemTime,
}

fn file_state(path: &Path) -> FileState {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).unwrap();
    FileState {
        sha256: format!("{:x}", sha2::Sha256::digest(&bytes)),
        len: bytes.len() as u64,
        mtime: std::fs::metadata(path).unwrap().modified().unwrap(),
    }
}

/// Sets `path`'s mtime far in the past, so that any write shows in it
/// whatever the file system's timestamp granularity, and returns its state.
fn pin(path: &Path) -> FileState {
    let past = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(past)
        .unwrap();
    file_state(path)
}

fn fill(store: &Store) {
    store.put(ALPHA, &record()).unwrap();
    store.put(BETA, &record()).unwrap();
    store
        .update_alerts(&[("an-alert".into(), Some(b"summary".to_vec()))])
        .unwrap();
}

/// A store closed cleanly, holding two records and an alert.
fn healthy(dir: &Path) -> Vec<u8> {
    let path = dir.join("healthy.redb");
    let store = open(&path, RIGHT).unwrap();
    fill(&store);
    drop(store);
    std::fs::read(&path).unwrap()
}

/// The file a process killed (SIGKILL, power loss) with the store open
/// leaves: its bytes after the last durable commit, copied while it is still
/// open, so redb has not closed it cleanly.
fn crashed(dir: &Path) -> Vec<u8> {
    let path = dir.join("live.redb");
    let store = open(&path, RIGHT).unwrap();
    fill(&store);
    let bytes = std::fs::read(&path).unwrap();
    drop(store);
    // It really needs redb's recovery: a read-only open refuses it.
    let copy = dir.join("crashed-check.redb");
    std::fs::write(&copy, &bytes).unwrap();
    assert!(
        matches!(
            redb::ReadOnlyDatabase::open(&copy),
            Err(redb::DatabaseError::RepairAborted)
        ),
        "the simulated crash left a store that needs no recovery"
    );
    bytes
}

/// Writes `bytes` as a private store file at `dir/name`.
fn place(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

const PAGE: usize = 4096;

/// The start of every page holding `needle`.
fn pages_with(bytes: &[u8], needle: &str) -> Vec<usize> {
    let mut pages: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_bytes())
        .map(|(i, _)| i / PAGE * PAGE)
        .collect();
    pages.dedup();
    assert!(!pages.is_empty(), "no page holds {needle}");
    pages
}

/// Every offset where `needle` starts.
fn offsets_of(bytes: &[u8], needle: &str) -> Vec<usize> {
    bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle.as_bytes())
        .map(|(i, _)| i)
        .collect()
}

type Corruption = (&'static str, fn(&mut Vec<u8>));

/// Corruptions after which the store cannot be opened with any key.
const FATAL: &[Corruption] = &[
    ("the magic number zeroed", |b| b[..9].fill(0)),
    ("the header and both commit slots flipped", |b| {
        b[9..320].iter_mut().for_each(|x| *x ^= 0xff)
    }),
    ("a byte flipped in the records' page", |b| {
        for at in offsets_of(b, ALPHA) {
            b[at + ALPHA.len() + 8] ^= 0x01;
        }
    }),
    ("the records' page zeroed", |b| {
        for page in pages_with(b, ALPHA) {
            b[page..page + PAGE].fill(0);
        }
    }),
    ("the key check's page zeroed", |b| {
        for page in pages_with(b, "key_check") {
            b[page..page + PAGE].fill(0);
        }
    }),
    ("truncated to half", |b| b.truncate(b.len() / 2)),
    ("truncated inside the header", |b| b.truncate(100)),
];

/// What any corruption must respect: the wrong key is refused and changes
/// nothing; the right key either opens the store with its records readable
/// (and then the wrong key was rightly called wrong) or is refused as
/// damage, changing nothing, and the wrong key was refused as damage too.
/// Returns whether the right key opened it.
fn check_corruption(dir: &Path, what: &str, bytes: &[u8]) -> bool {
    let path = place(dir, "corrupted.redb", bytes);
    let before = pin(&path);
    let wrong = open(&path, WRONG).expect_err(what);
    assert_eq!(
        file_state(&path),
        before,
        "{what}: the wrong key changed it"
    );
    match open(&path, RIGHT) {
        Ok(store) => {
            assert!(is_wrong_key(&wrong), "{what}: wrong key said: {wrong}");
            for name in [ALPHA, BETA] {
                store.get(name).unwrap_or_else(|e| panic!("{what}: {e}"));
            }
            true
        }
        Err(e) => {
            assert!(is_damaged(&e), "{what}: the right key said: {e}");
            assert!(is_damaged(&wrong), "{what}: the wrong key said: {wrong}");
            assert_eq!(
                file_state(&path),
                before,
                "{what}: the right key changed it"
            );
            false
        }
    }
}

#[test]
fn corrupted_stores_are_refused_as_damaged_never_as_a_wrong_key_and_never_changed() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, bytes) in [
        ("healthy", healthy(dir.path())),
        ("crashed", crashed(dir.path())),
    ] {
        for (what, corrupt) in FATAL {
            let mut b = bytes.clone();
            corrupt(&mut b);
            let what = format!("{fixture} store, {what}");
            assert!(
                !check_corruption(dir.path(), &what, &b),
                "{what}: it opened"
            );
        }
        // Damage that redb may recover from: whatever happens, the rules hold.
        let mut b = bytes.clone();
        let mid = b.len() / 2;
        b[mid..mid + 64].iter_mut().for_each(|x| *x ^= 0x55);
        check_corruption(dir.path(), &format!("{fixture} store, middle flipped"), &b);
        // And the untouched fixture opens with the right key, records intact.
        let path = place(dir.path(), "intact.redb", &bytes);
        let store = open(&path, RIGHT).unwrap();
        assert_eq!(store.get(ALPHA).unwrap(), Some(record()), "{fixture}");
        assert_eq!(store.get(BETA).unwrap(), Some(record()), "{fixture}");
        assert_eq!(store.alerts().unwrap().len(), 1, "{fixture}");
    }
}

/// A flipped byte anywhere in the header, and at a few places in every page:
/// never a panic, never a wrong key for damage, never a changed file.
#[test]
fn no_flipped_byte_panics_or_is_blamed_on_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, bytes) in [
        ("healthy", healthy(dir.path())),
        ("crashed", crashed(dir.path())),
    ] {
        // Every byte of the header proper, every third of the commit slots.
        let mut offsets: Vec<usize> = (0..64).chain((64..448).step_by(3)).collect();
        for page in (PAGE..bytes.len()).step_by(PAGE) {
            offsets.extend([0, 1, 8, 17, 64, 100, 700, 2000, 4095].map(|k| page + k));
        }
        let mut opened = 0;
        for at in offsets {
            let mut b = bytes.clone();
            b[at] ^= 0xff;
            opened += usize::from(check_corruption(
                dir.path(),
                &format!("{fixture} store, byte {at} flipped"),
                &b,
            ));
        }
        // Flips in unused space or in a commit slot redb falls back from
        // are survived: the test did exercise both outcomes.
        assert!(opened > 0, "{fixture}: no flip was survived");
    }
}

#[test]
fn a_wrong_key_leaves_a_crashed_store_unchanged_and_the_right_key_recovers_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = place(dir.path(), "store.redb", &crashed(dir.path()));
    let before = pin(&path);
    let err = open(&path, WRONG).unwrap_err();
    assert!(is_wrong_key(&err), "{err}");
    assert!(err.to_string().contains("left it untouched"), "{err}");
    assert_eq!(
        file_state(&path),
        before,
        "the wrong key changed a crashed store"
    );
    // redb still finds it in need of recovery: nothing was repaired.
    assert!(matches!(
        redb::ReadOnlyDatabase::open(&path),
        Err(redb::DatabaseError::RepairAborted)
    ));
    let store = open(&path, RIGHT).unwrap();
    assert_eq!(store.get(ALPHA).unwrap(), Some(record()));
    assert_eq!(store.get(BETA).unwrap(), Some(record()));
    drop(store);
    // Recovered and closed cleanly: still refused to the wrong key.
    let before = pin(&path);
    assert!(is_wrong_key(&open(&path, WRONG).unwrap_err()));
    assert_eq!(file_state(&path), before);
}

#[test]
fn a_wrong_key_leaves_a_healthy_store_unchanged_to_the_byte_and_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = place(dir.path(), "store.redb", &healthy(dir.path()));
    let before = pin(&path);
    let err = open(&path, WRONG).unwrap_err();
    assert!(is_wrong_key(&err), "{err}");
    assert_eq!(file_state(&path), before);
}

/// A redb database of another program.
fn foreign_redb(path: &Path) {
    let db = redb::Database::create(path).unwrap();
    let tx = db.begin_write().unwrap();
    {
        let mut t = tx
            .open_table(TableDefinition::<&str, u64>::new("accounts"))
            .unwrap();
        t.insert("alice", 42).unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn foreign_files_are_refused_untouched_and_never_blamed_on_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut random = vec![0u8; 64 * 1024];
    fill_random(&mut random);
    let foreign = dir.path().join("foreign.redb");
    foreign_redb(&foreign);
    let foreign = std::fs::read(&foreign).unwrap();
    for (what, bytes) in [
        ("random bytes", random),
        ("a text file", b"[store]\npath = \"x\"\n".to_vec()),
        ("another program's redb database", foreign),
    ] {
        let path = place(dir.path(), "store.redb", &bytes);
        let before = pin(&path);
        for key in [RIGHT, WRONG] {
            let err = open(&path, key).expect_err(what);
            assert!(is_damaged(&err), "{what}: {err}");
            assert!(
                err.to_string().contains("not a tokend store"),
                "{what}: {err}"
            );
            assert_eq!(file_state(&path), before, "{what}: changed");
        }
    }
}

/// Removes the key-check record, as in a store written before it existed.
fn without_key_check(path: &Path) {
    let store = open(path, RIGHT).unwrap();
    store
        .write(META, |t| t.remove("key_check").map(drop))
        .unwrap();
}

fn has_key_check(path: &Path) -> bool {
    let db = redb::ReadOnlyDatabase::open(path).unwrap();
    let read = db.begin_read().unwrap();
    let meta = read.open_table(META).unwrap();
    meta.get("key_check").unwrap().is_some()
}

#[test]
fn a_store_without_a_key_check_is_judged_by_its_records_and_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = place(dir.path(), "store.redb", &healthy(dir.path()));
    without_key_check(&path);
    assert!(!has_key_check(&path));
    let before = pin(&path);
    let err = open(&path, WRONG).unwrap_err();
    assert!(is_wrong_key(&err), "{err}");
    assert_eq!(file_state(&path), before, "the wrong key changed it");
    let store = open(&path, RIGHT).unwrap();
    assert_eq!(store.get(ALPHA).unwrap(), Some(record()));
    drop(store);
    assert!(
        has_key_check(&path),
        "the right key did not add the key check"
    );
    assert!(is_wrong_key(&open(&path, WRONG).unwrap_err()));
}

#[test]
fn an_empty_redb_database_becomes_a_store_with_a_key_check() {
    // What a start killed between redb's create and the key check leaves.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(redb::Database::create(&path).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    drop(open(&path, RIGHT).unwrap());
    assert!(has_key_check(&path));
    assert!(is_wrong_key(&open(&path, WRONG).unwrap_err()));
}

/// Replaces what the raw `table` holds under `key`, bypassing the store.
fn raw_put(path: &Path, table: TableDefinition<&str, &[u8]>, key: &str, value: &[u8]) {
    let store = open(path, RIGHT).unwrap();
    store
        .write(table, |t| t.insert(key, value).map(drop))
        .unwrap();
}

fn raw_get(path: &Path, table: TableDefinition<&str, &[u8]>, key: &str) -> Vec<u8> {
    let db = redb::ReadOnlyDatabase::open(path).unwrap();
    let read = db.begin_read().unwrap();
    let t = read.open_table(table).unwrap();
    t.get(key).unwrap().unwrap().value().to_vec()
}

/// A way of changing a store from outside, given a store sealed under
/// another key to take values from.
type Tamper = (&'static str, fn(&Path, &Store));

#[test]
fn tampered_records_and_key_checks_are_damage_not_a_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = healthy(dir.path());
    let key_file = dir.path().join("store.key");
    std::fs::write(&key_file, RIGHT).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let right = StoreKey::load(&key_file).unwrap();
    let other = Store::open(
        &dir.path().join("other.redb"),
        &StoreKey::from_bytes([9; 32]),
    )
    .unwrap();
    let cases: [Tamper; 3] = [
        ("a record moved to another name", |p, _| {
            let alpha = raw_get(p, RECORDS, ALPHA);
            raw_put(p, RECORDS, BETA, &alpha);
        }),
        ("a key check sealed under another key", |p, other| {
            raw_put(p, META, "key_check", &other.seal("\0key_check", KEY_CHECK));
        }),
        ("a malformed key check", |p, _| {
            raw_put(p, META, "key_check", b"\0garbage")
        }),
    ];
    for (what, tamper) in cases {
        let path = place(dir.path(), "store.redb", &healthy);
        tamper(&path, &other);
        let before = pin(&path);
        let err = Store::open(&path, &right).unwrap_err();
        assert!(is_damaged(&err), "{what}: {err}");
        let text = err.to_string();
        assert_eq!(file_state(&path), before, "{what}: changed");
        if what.starts_with("a record") {
            assert!(text.contains(&format!("`{BETA}`")), "{what}: {text}");
            // The key opens the key check: the message says the key is right.
            assert!(
                text.contains(&key_file.display().to_string()),
                "{what}: {text}"
            );
        }
    }
}

#[test]
fn the_damage_message_names_the_file_and_says_what_to_do_without_deleting_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = healthy(dir.path());
    bytes[..9].fill(0);
    let path = place(dir.path(), "store.redb", &bytes);
    let text = open(&path, RIGHT).unwrap_err().to_string();
    for needed in [
        path.display().to_string().as_str(),
        "left it untouched",
        "Do not delete it",
        "backup",
        "[store] path",
    ] {
        assert!(text.contains(needed), "no {needed:?} in: {text}");
    }
    assert!(!text.contains("another key"), "{text}");
    assert!(!text.contains("rm "), "{text}");
}

#[test]
fn a_store_in_use_is_reported_as_in_use_not_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let _held = open(&path, RIGHT).unwrap();
    let err = open(&path, RIGHT).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("in use"), "{err}");
}
