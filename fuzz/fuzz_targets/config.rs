//! Config parsing and validation: any text yields a config or problems
//! with positions, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(tokend::config::ConfigError::Invalid { problems }) =
            tokend::config::parse(std::path::Path::new("/nonexistent/tokend.toml"), text)
        {
            for p in problems {
                assert!(p.line >= 1 && p.column >= 1);
                let _ = p.to_string();
            }
        }
    }
});
