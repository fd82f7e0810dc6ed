//! Fleet soak: three nodes sharing one grant through a real etcd, the
//! leader SIGKILLed at random points of its cycle over and over. Prints the
//! kills, the answer→commit window cases (each diagnosed as such, then a
//! new login) and the failover times; fails on any grant lost otherwise or
//! any replay outside the window.
//!
//! Not part of `cargo test` (its target has `test = false`). Run:
//! `cargo test --release --test fleet_soak -- 100` (the argument is the
//! number of kills; default 100). As root, like the other tests.

mod common;

use std::time::Duration;

use common::fixtures::OAuth;
use common::fleet::TestFleet;
use common::oidc::POST_CLIENT;

fn main() {
    let kills: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100);
    common::require_root();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut fleet = TestFleet::start(3, 8, true, |s| {
            OAuth::refresh("sso", &s.issuer, POST_CLIENT.0)
                .with(r#"scopes = ["api"]"#)
                .with("shared = true")
                .min_valid("2s")
                .to_string()
        });
        fleet.wait_leader("sso", Duration::from_secs(10)).await;
        fleet.login(0, "sso").await;
        fleet.wait_all_serving("sso", Duration::from_secs(10)).await;
        let report = fleet
            .kill_leaders("sso", kills, Duration::from_millis(2500))
            .await;
        let replays = fleet.replays().await;
        println!(
            "fleet soak: {}; {replays} replays at the server",
            report.summary()
        );
        assert_eq!(
            replays as usize, report.window_cases,
            "a replay outside the window"
        );
    });
}
