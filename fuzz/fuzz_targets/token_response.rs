//! Token-endpoint bodies: success JSON and error bodies, with any status.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = jiff::Timestamp::from_second(1_900_000_000).unwrap();
    let _ = tokend::oauth::parse_tokens(data, Duration::from_secs(3600), now);
    if let Some((&status, body)) = data.split_first() {
        let status = 200 + u16::from(status) * 2;
        let e = tokend::oauth::classify_error(status, body, None);
        let _ = e.to_string();
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = tokend::oauth::parse_retry_after(text, now);
    }
});
