//! `tokenctl login`'s callback listener, from the request head on: any bytes
//! through the bounded head's request line to the callback check. A code
//! may come out only for a GET-style request line whose target is the
//! redirect path carrying this login's state.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend::http_head::request_line;

fuzz_target!(|head: &[u8]| {
    let redirect = reqwest::Url::parse("http://127.0.0.1:9090/oauth/callback").unwrap();
    let Some((_, target)) = request_line(head) else {
        return;
    };
    let Ok(url) = redirect.join(target) else {
        return;
    };
    if tokend::login::parse_callback(&url, &redirect, "fuzz-state").is_ok() {
        assert_eq!(url.path(), "/oauth/callback");
        assert!(url.query_pairs().any(|(k, v)| k == "state" && v == "fuzz-state"));
    }
});
