//! The metrics listener's request routing: any request head. Only a GET of
//! exactly /metrics (with any query) on an HTTP/1.x request line may be
//! served the page.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokend::daemon::metrics_http::{Route, route};

fuzz_target!(|head: &[u8]| {
    if route(head) == Route::Metrics {
        let line = head.split(|&b| b == b'\n').next().unwrap();
        let line = std::str::from_utf8(line).unwrap();
        assert!(line.starts_with("GET /metrics"), "{line:?}");
        let target = line.split(' ').nth(1).unwrap();
        assert!(target == "/metrics" || target.starts_with("/metrics?"), "{line:?}");
    }
});
