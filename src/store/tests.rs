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
