//! The fleet: three daemons sharing one grant through a real etcd, against
//! the test authorization server with refresh-token rotation and reuse
//! detection on. The server is the judge: it counts every refresh and every
//! refusal, so a replayed refresh token cannot go unnoticed.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::fixtures::OAuth;
use common::fleet::{LEASE_TTL, TestFleet};
use common::oidc::{OidcServer, POST_CLIENT};

const NAME: &str = "sso";

/// The shared `oauth_refresh` credential (or a per-host one without
/// `shared`).
fn credential(server: &OidcServer, shared: bool) -> String {
    let mut c = OAuth::refresh(NAME, &server.issuer, POST_CLIENT.0)
        .with(r#"scopes = ["api"]"#)
        .min_valid("2s");
    if shared {
        c = c.with("shared = true");
    }
    c.to_string()
}

/// The hazard first: three hosts each refreshing the same grant on their
/// own revoke it within seconds (one rotates it, the next presents the
/// consumed token, and the server revokes the whole grant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fleet_three_hosts_sharing_a_grant_revoke_it() {
    let fleet = TestFleet::start(3, 30, false, |s| credential(s, false));
    let tokens = fleet
        .server
        .login(POST_CLIENT, tokend::oauth::AuthMethod::ClientSecretPost)
        .await;
    use secrecy::ExposeSecret;
    let rt = tokens
        .refresh_token
        .as_ref()
        .unwrap()
        .expose_secret()
        .to_owned();
    // Each host is handed the same refresh token and refreshes at once.
    for i in 0..3 {
        let _ = fleet
            .daemon(i)
            .admin()
            .await
            .put_refresh_token(tokend::proto::PutRefreshTokenRequest {
                credential: NAME.into(),
                refresh_token: rt.clone(),
                ..Default::default()
            })
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.needs_login(NAME).await.is_none() {
        assert!(
            Instant::now() < deadline,
            "the grant survived:\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fleet.replays().await >= 1, "the server saw a replay");
}

/// With `shared = true` the same three hosts keep one grant alive over
/// several token lifetimes: every node serves tokens the authorization
/// server accepts, and it sees exactly one refresh per rotation, no replay
/// and no refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_grant_rotates_once_per_lifetime_for_the_whole_fleet() {
    let fleet = TestFleet::start(3, 6, true, |s| credential(s, true));
    fleet.wait_leader(NAME, Duration::from_secs(10)).await;
    fleet.login(1, NAME).await;
    fleet.wait_all_serving(NAME, Duration::from_secs(10)).await;
    let started = Instant::now();
    let mut seen = HashSet::new();
    while started.elapsed() < Duration::from_secs(20) {
        for i in 0..3 {
            let token = fleet
                .token(i, NAME)
                .await
                .unwrap_or_else(|| panic!("node {i} serves nothing:\n{}", fleet.logs()));
            if seen.insert(token.clone()) {
                let active = fleet.server.introspect(&token).await;
                assert_eq!(active["active"], true, "node {i} served a dead token");
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let refreshes = fleet.refreshes().await;
    assert!(
        refreshes >= 3,
        "several rotations in 20 s of 6 s tokens: {refreshes}"
    );
    // One access token per refresh plus the login's: no node refreshed alone.
    assert!(
        seen.len() as u64 <= refreshes + 1,
        "{} distinct tokens from {refreshes} refreshes",
        seen.len()
    );
    assert_eq!(fleet.replays().await, 0, "no replay");
    assert!(
        fleet.refusals().await.is_empty(),
        "{:?}",
        fleet.refusals().await
    );
    // A caller on a follower reports the token rejected (`Invalidate`, as
    // the client libraries do on a 401): the leader replaces it for all.
    let leader = fleet.wait_leader(NAME, Duration::from_secs(5)).await;
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let mut client = fleet.daemon(follower).client().await;
    let request = tokend::proto::GetHeadersRequest {
        credential: NAME.into(),
        ..Default::default()
    };
    let served = client
        .get_headers(request.clone())
        .await
        .unwrap()
        .into_inner();
    let before = fleet.refreshes().await;
    client
        .invalidate(tokend::proto::InvalidateRequest {
            credential: NAME.into(),
            token_fingerprint: served.token_fingerprint.clone(),
        })
        .await
        .unwrap();
    let replaced = common::fixtures::wait_for_new_token(
        &mut client,
        &request,
        &served.token_fingerprint,
        Duration::from_secs(5),
    )
    .await;
    assert_ne!(replaced, served.token_fingerprint);
    assert_eq!(
        fleet.refreshes().await,
        before + 1,
        "one refresh, by the leader"
    );
    let roles: Vec<String> = futures_roles(&fleet).await;
    assert_eq!(
        roles.iter().filter(|r| *r == "leader").count(),
        1,
        "exactly one leader: {roles:?}"
    );
    println!(
        "fleet: {refreshes} refreshes, {} tokens served, lease {LEASE_TTL:?}",
        seen.len()
    );
}

async fn futures_roles(fleet: &TestFleet) -> Vec<String> {
    let mut roles = Vec::new();
    for i in 0..fleet.nodes.len() {
        let s = fleet.status(i, NAME).await;
        roles.push(s.fleet.map(|f| f.role).unwrap_or_default());
    }
    roles
}

/// A leader that dies between the server's answer and its commit (the
/// test hook aborts it there) loses the rotated token: the node taking over
/// finds its marker, waits out the fence, and reports exactly that window,
/// naming the node, instead of a vague refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_dying_between_answer_and_commit_is_diagnosed_as_that_window() {
    let mut fleet = TestFleet::start_env(
        3,
        6,
        true,
        &[("TOKEND_TEST_CRASH_AFTER_TOKEN_RESPONSE", "1")],
        |s| credential(s, true),
    );
    fleet.wait_leader(NAME, Duration::from_secs(10)).await;
    fleet.login(0, NAME).await;
    fleet.wait_all_serving(NAME, Duration::from_secs(10)).await;
    // The leader refreshes at about 4 s and aborts on the answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let reason = loop {
        if let Some(reason) = fleet.needs_login(NAME).await {
            break reason;
        }
        assert!(Instant::now() < deadline, "no diagnosis:\n{}", fleet.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let crashed = fleet
        .nodes
        .iter()
        .position(|n| {
            n.daemon
                .as_ref()
                .is_some_and(|d| d.logs().contains("test hook: aborting"))
        })
        .expect("a node aborted");
    assert!(
        reason.contains(&format!(
            "lost in a crash or a lost response on node {}",
            fleet.nodes[crashed].name
        )),
        "{reason}"
    );
    assert_eq!(
        fleet.replays().await,
        1,
        "exactly the one presentation of the lost token"
    );
    // Every node says so: the reason is in the shared record.
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in (0..3).filter(|i| *i != crashed) {
        loop {
            let s = fleet.status(i, NAME).await;
            if s.state == tokend::proto::CredentialState::NeedsLogin as i32 {
                assert!(s.last_error.contains("lost in a crash"), "{}", s.last_error);
                break;
            }
            assert!(Instant::now() < deadline, "node {i} does not know: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // And none keeps calling.
    fleet.kill_node(crashed);
    let refreshes = fleet.refreshes().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleet.refreshes().await, refreshes);
}

/// The leader SIGKILLed at random points of its cycle, 20 times: another
/// node leads within a lease TTL (plus the election), and no grant is lost
/// except in the answer→commit window, which is then reported as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_twenty_times_loses_no_grant_outside_the_window() {
    let mut fleet = TestFleet::start(3, 8, true, |s| credential(s, true));
    fleet.wait_leader(NAME, Duration::from_secs(10)).await;
    fleet.login(0, NAME).await;
    fleet.wait_all_serving(NAME, Duration::from_secs(10)).await;
    let report = fleet
        .kill_leaders(NAME, 20, Duration::from_millis(2500))
        .await;
    println!("fleet kills: {}", report.summary());
    assert_eq!(report.kills, 20, "{report:?}");
    assert_eq!(
        fleet.replays().await as usize,
        report.window_cases,
        "a replay outside the window"
    );
    for f in &report.failovers {
        assert!(
            *f < LEASE_TTL * 2 + Duration::from_secs(2),
            "slow failover: {report:?}"
        );
    }
}

/// A leader paused (SIGSTOP) for longer than its lease loses leadership;
/// another node refreshes meanwhile; resumed, the old leader never presents
/// its refresh token again: the server sees no replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_never_presents_a_token_after_losing_leadership() {
    use nix::sys::signal::Signal;
    let fleet = TestFleet::start(3, 4, true, |s| credential(s, true));
    fleet.wait_leader(NAME, Duration::from_secs(10)).await;
    fleet.login(0, NAME).await;
    fleet.wait_all_serving(NAME, Duration::from_secs(10)).await;
    let mut window_cases = 0;
    for round in 0..3 {
        let leader = fleet.wait_leader(NAME, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..2000))).await;
        let before = fleet.refreshes().await;
        fleet.daemon(leader).signal(Signal::SIGSTOP);
        tokio::time::sleep(LEASE_TTL * 3).await;
        let during = fleet.refreshes().await;
        fleet.daemon(leader).signal(Signal::SIGCONT);
        assert!(
            during > before,
            "round {round}: another node refreshed during the pause"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        // A pause that fell between the server's answer and the commit is
        // the documented window: the grant is lost, and every node says it
        // was lost on the paused node. Any other replay is a failure.
        if let Some(reason) = fleet.needs_login(NAME).await {
            let paused = &fleet.nodes[leader].name;
            assert!(
                reason.contains(&format!(
                    "lost in a crash or a lost response on node {paused}"
                )),
                "round {round}: {reason}\n{}",
                fleet.logs()
            );
            window_cases += 1;
            let any = fleet.wait_leader(NAME, Duration::from_secs(10)).await;
            fleet.login(any, NAME).await;
        }
        assert_eq!(
            fleet.replays().await,
            window_cases,
            "round {round}: a replay outside the window:\n{}",
            fleet.logs()
        );
        fleet.wait_all_serving(NAME, Duration::from_secs(10)).await;
    }
    println!("fleet pauses: 3, {window_cases} in the answer→commit window");
}

/// etcd down for longer than a token lifetime: every node serves its token
/// while it has min_valid left, nobody refreshes the shared grant, and the
/// `fleet_unreachable` alert fires; etcd back: one leader refreshes, every
/// node serves again, and the alert resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_down_nodes_serve_until_min_valid_refresh_nothing_and_alert() {
    let mut fleet = TestFleet::start(3, 6, true, |s| credential(s, true));
    fleet.wait_leader(NAME, Duration::from_secs(10)).await;
    fleet.login(0, NAME).await;
    fleet.wait_all_serving(NAME, Duration::from_secs(10)).await;
    let before = fleet.refreshes().await;
    fleet.etcd.stop();
    let stopped = Instant::now();
    for i in 0..3 {
        assert!(
            fleet.token(i, NAME).await.is_some(),
            "node {i} serves at first"
        );
    }
    let mut alerted = false;
    while stopped.elapsed() < Duration::from_secs(9) {
        alerted |= fleet
            .alerts(0)
            .await
            .iter()
            .any(|e| e == "fleet_unreachable");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(alerted, "fleet_unreachable fired:\n{}", fleet.logs());
    assert_eq!(
        fleet.refreshes().await,
        before,
        "nobody refreshed without etcd"
    );
    for i in 0..3 {
        assert!(
            fleet.token(i, NAME).await.is_none(),
            "node {i} stopped serving once the token ran below min_valid"
        );
        let role = fleet.status(i, NAME).await.fleet.unwrap();
        assert_eq!(role.role, "unreachable");
        assert!(role.unreachable_since.is_some());
    }
    fleet.etcd.restart();
    let back = Instant::now();
    fleet.wait_all_serving(NAME, Duration::from_secs(30)).await;
    println!(
        "fleet: serving again {:?} after etcd came back",
        back.elapsed()
    );
    assert!(fleet.refreshes().await > before);
    assert_eq!(fleet.replays().await, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet
        .alerts(0)
        .await
        .iter()
        .any(|e| e == "fleet_unreachable")
    {
        assert!(Instant::now() < deadline, "the alert resolved");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A client-credentials grant shared the same way: one request per token
/// lifetime for the whole fleet instead of one per host, and every node
/// serves the one token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_client_credentials_grant_is_requested_once_per_lifetime() {
    let fleet = TestFleet::start(3, 4, true, |s| {
        OAuth::client_credentials("cc", &s.token_endpoint(), common::oidc::BASIC_CLIENT.0)
            .with(r#"scopes = ["api"]"#)
            .with("shared = true")
            .min_valid("1s")
            .to_string()
    });
    fleet.wait_all_serving("cc", Duration::from_secs(15)).await;
    let started = Instant::now();
    let mut seen = HashSet::new();
    let (mut samples, mut agreed) = (0, 0);
    while started.elapsed() < Duration::from_secs(12) {
        let mut tokens = HashSet::new();
        for i in 0..3 {
            tokens.insert(fleet.token(i, "cc").await.expect("serving"));
        }
        samples += 1;
        agreed += usize::from(tokens.len() == 1);
        seen.extend(tokens);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let requests = fleet.server.stats().await["by_grant_type"]["client_credentials"]
        .as_u64()
        .unwrap();
    // 4 s tokens renewed at half to two thirds of their life: about 6 in
    // 12 s plus the first; a node each would make three times as many.
    assert!(requests <= 9, "{requests} requests for the fleet");
    assert!(seen.len() as u64 <= requests);
    // The nodes serve the one token, but for the moments a new one spreads.
    assert!(
        agreed * 10 >= samples * 8,
        "{agreed} of {samples} samples agreed"
    );
    println!(
        "fleet: {requests} client-credentials requests in {:?} for 3 nodes",
        started.elapsed()
    );
}
