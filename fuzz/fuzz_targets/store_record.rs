//! Store records: sealed bytes as read from disk, and the JSON inside.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tokend::store::{Record, Store, StoreKey};

fn store() -> &'static Store {
    static STORE: OnceLock<(tempfile::TempDir, Store)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("s.redb"), &StoreKey::from_bytes([7; 32])).unwrap();
            (dir, store)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let store = store();
    // Forged ciphertexts must fail authentication, never panic.
    assert!(store.decode("cred", data).is_err() || data.len() > 25);
    // What the AEAD protects: the record JSON itself.
    if let Ok(record) = serde_json::from_slice::<Record>(data) {
        let sealed = store.encode("cred", &record);
        assert_eq!(store.decode("cred", &sealed).unwrap(), record);
    }
});
