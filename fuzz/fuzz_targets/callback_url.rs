//! Redirect/callback URLs, as pasted or as requested on the listener.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let redirect = reqwest::Url::parse("http://127.0.0.1:9090/oauth/callback").unwrap();
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(code) = tokend::login::parse_pasted(text, &redirect, "fuzz-state") {
            // Only a callback to the redirect URI carrying this login's
            // state may yield a code.
            let url = reqwest::Url::parse(text.trim()).unwrap();
            assert_eq!(url.origin(), redirect.origin());
            assert_eq!(url.path(), redirect.path());
            assert!(url.query_pairs().any(|(k, v)| k == "state" && v == "fuzz-state"));
            drop(code);
        }
        if let Ok(target) = redirect.join(text) {
            let _ = tokend::login::parse_callback(&target, &redirect, "fuzz-state");
        }
    }
});
