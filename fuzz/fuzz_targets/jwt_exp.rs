//! Unverified JWT `exp` extraction.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = tokend::oauth::jwt_expiry(token);
        let _ = tokend::oauth::jwt_claims(token);
    }
});
