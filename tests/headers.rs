//! Header sets and errors for each kind of Glean token, through the real
//! daemon over its socket, with gRPC and with tokenctl.

mod common;

use common::{CANARY, Daemon, Workdir, assert_no_secret};
use tokend::proto::{self, GetHeadersRequest, ListCredentialsRequest};
use tonic::Code;

const CREDENTIALS: &str = r#"
[[credential]]
name = "user"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH", "DOCUMENTS"]
expires_at = "2099-01-01T00:00:00Z"
owner = "search-team@corp.example"
secret = { file = "secret" }
allow = { uids = [0] }

[[credential]]
name = "global"
kind = "glean_token"
permission = "global"
scopes = ["SEARCH", "CHAT"]
secret = { file = "secret" }
allow = { uids = [0], act_as = ["*@corp.example"] }

[[credential]]
name = "anon"
kind = "glean_token"
permission = "anonymous"
scopes = ["SEARCH"]
secret = { file = "secret" }
allow = { uids = [0] }

[[credential]]
name = "expired"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
expires_at = "2024-05-01T12:00:00Z"
owner = "owner@corp.example"
secret = { file = "secret" }
allow = { uids = [0] }

[[credential]]
name = "forbidden"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { file = "secret" }
allow = { uids = [4242] }
"#;

fn start() -> (Workdir, Daemon) {
    common::require_root();
    let work = Workdir::new();
    work.write_config("", CREDENTIALS);
    let daemon = Daemon::start(&work);
    (work, daemon)
}

fn request(name: &str, act_as: &str, scopes: &[&str]) -> GetHeadersRequest {
    GetHeadersRequest {
        credential: name.into(),
        act_as: act_as.into(),
        required_scopes: scopes.iter().map(|s| s.to_string()).collect(),
        min_valid: None,
    }
}

fn pairs(resp: &proto::GetHeadersResponse) -> Vec<(&str, &str)> {
    resp.headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect()
}

#[tokio::test]
async fn each_permission_yields_exactly_its_headers() {
    let (_work, daemon) = start();
    let mut c = daemon.client().await;
    let bearer = format!("Bearer {CANARY}");

    let user = c
        .get_headers(request("user", "", &["SEARCH"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pairs(&user), [("Authorization", bearer.as_str())]);
    let exp = user.expires_at.expect("user token has an expiry");
    assert_eq!(
        exp.seconds,
        "2099-01-01T00:00:00Z"
            .parse::<jiff::Timestamp>()
            .unwrap()
            .as_second()
    );

    let global = c
        .get_headers(request("global", "alice@corp.example", &["CHAT"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pairs(&global),
        [
            ("Authorization", bearer.as_str()),
            ("X-Glean-ActAs", "alice@corp.example")
        ]
    );
    assert_eq!(
        global.expires_at, None,
        "no expiry configured, none reported"
    );

    let anon = c
        .get_headers(request("anon", "", &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pairs(&anon), [("Authorization", bearer.as_str())]);
}

#[tokio::test]
async fn every_error_has_its_code_and_a_message_naming_credential_and_fix() {
    let (_work, daemon) = start();
    let mut c = daemon.client().await;
    // (request, code, fragments the message must contain)
    let cases: Vec<(GetHeadersRequest, Code, &[&str])> = vec![
        (
            request("user", "alice@corp.example", &[]),
            Code::InvalidArgument,
            &["`user`", "user Glean token", "drop act_as"],
        ),
        (
            request("anon", "alice@corp.example", &[]),
            Code::InvalidArgument,
            &["`anon`", "anonymous Glean token", "drop act_as"],
        ),
        (
            request("global", "", &[]),
            Code::InvalidArgument,
            &["`global`", "X-Glean-ActAs", "set act_as"],
        ),
        (
            request("global", "alice", &[]),
            Code::InvalidArgument,
            &["`global`", "not an email address"],
        ),
        (
            request("global", "alice@evil.example", &[]),
            Code::PermissionDenied,
            &[
                "`global`",
                "may not act as `alice@evil.example`",
                "allow.act_as",
            ],
        ),
        (
            request("user", "", &["SEARCH", "CHAT", "PEOPLE"]),
            Code::FailedPrecondition,
            &[
                "`user`",
                "lacks scope(s) CHAT, PEOPLE",
                "create one with them",
            ],
        ),
        (
            request("user", "", &["TELEPORT"]),
            Code::InvalidArgument,
            &[
                "`user`",
                "`TELEPORT` for credential `user` is not a Glean scope",
            ],
        ),
        (
            request("expired", "", &[]),
            Code::FailedPrecondition,
            &[
                "`expired`",
                "expired at 2024-05-01T12:00:00Z",
                "must be rotated",
                "owner@corp.example",
            ],
        ),
        (
            request("nope", "", &[]),
            Code::NotFound,
            &["`nope`", "tokenctl status"],
        ),
        (
            request("forbidden", "", &[]),
            Code::PermissionDenied,
            &["uid 0", "`forbidden`", "add the uid or one of its groups"],
        ),
    ];
    for (req, code, fragments) in cases {
        let what = format!("{req:?}");
        let status = c.get_headers(req).await.expect_err(&what);
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        for f in fragments {
            assert!(
                status.message().contains(f),
                "{what}: {:?} lacks {f:?}",
                status.message()
            );
        }
        assert_no_secret("an error message", status.message());
    }
    // Every fetch above was audited with its result; none with the token.
    daemon.wait_for_log("credential=\"forbidden\" uid=0");
    let logs = daemon.logs();
    let audits: Vec<&str> = logs.lines().filter(|l| l.contains(" audit: ")).collect();
    assert_eq!(audits.len(), 10, "{logs}");
    assert!(
        audits
            .iter()
            .any(|l| l.contains("act_as=\"alice@evil.example\"")
                && l.contains("result=PermissionDenied"))
    );
    assert!(
        audits
            .iter()
            .all(|l| l.contains("pid=") && l.contains("exe="))
    );
}

#[tokio::test]
async fn list_credentials_shows_state_without_secrets() {
    let (_work, daemon) = start();
    let mut c = daemon.client().await;
    let list = c
        .list_credentials(ListCredentialsRequest {})
        .await
        .unwrap()
        .into_inner();
    let rows: Vec<(&str, &str, i32)> = list
        .credentials
        .iter()
        .map(|s| (s.name.as_str(), s.permission.as_str(), s.state))
        .collect();
    use proto::CredentialState::{Expired, Fresh};
    assert_eq!(
        rows,
        [
            ("anon", "anonymous", Fresh as i32),
            ("expired", "user", Expired as i32),
            ("forbidden", "user", Fresh as i32),
            ("global", "global", Fresh as i32),
            ("user", "user", Fresh as i32),
        ],
        "root is an admin and sees every credential"
    );
    assert_eq!(list.credentials[4].scopes, ["DOCUMENTS", "SEARCH"]);
    assert_eq!(list.credentials[4].owner, "search-team@corp.example");
    assert_no_secret("ListCredentials", &format!("{list:?}"));
}

#[tokio::test]
async fn tokenctl_prints_headers_json_and_status_and_exits_by_outcome() {
    let (work, daemon) = start();

    let out = work.tokenctl(&[
        "headers",
        "global",
        "--act-as",
        "bob@corp.example",
        "--scope",
        "SEARCH",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("Authorization: Bearer {CANARY}\nX-Glean-ActAs: bob@corp.example\n")
    );
    assert_no_secret("tokenctl's stderr", &String::from_utf8_lossy(&out.stderr));

    let out = work.tokenctl(&["get", "user", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["credential"], "user");
    assert_eq!(v["expires_at"], "2099-01-01T00:00:00Z");
    assert_eq!(v["headers"][0]["name"], "Authorization");
    assert_eq!(v["headers"][0]["value"], format!("Bearer {CANARY}"));

    let out = work.tokenctl(&["status"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(
        table.starts_with("NAME       KIND         PERMISSION  STATE    EXPIRES IN\n"),
        "{table}"
    );
    assert!(
        table.contains("expired    glean_token  user        expired  expired "),
        "{table}"
    );
    assert!(
        table.contains("global     glean_token  global      fresh    never"),
        "{table}"
    );
    assert_no_secret("tokenctl status", &table);

    let out = work.tokenctl(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 5);
    assert_eq!(v[1]["state"], "expired");
    assert_eq!(v[1]["expires_at"], "2024-05-01T12:00:00Z");
    assert_no_secret("tokenctl status --json", &v.to_string());

    // Exit statuses tell the failures apart; messages go to stderr.
    for (args, code, fragment) in [
        (&["headers", "nope"][..], 3, "no credential named `nope`"),
        (
            &["headers", "forbidden"],
            4,
            "may not use credential `forbidden`",
        ),
        (&["headers", "expired"], 5, "expired at"),
        (
            &["headers", "user", "--act-as", "a@corp.example"],
            2,
            "drop --act-as",
        ),
    ] {
        let out = work.tokenctl(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(fragment), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
        assert_no_secret("tokenctl's stderr", &err);
    }
    drop(daemon);
    let out = work.tokenctl(&["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("cannot reach tokend at") && err.contains("is the daemon running"),
        "{err}"
    );
}

#[tokio::test]
async fn health_is_serving_and_reflection_lists_every_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (_work, daemon) = start();
    let channel = tokend_client::channel(&daemon.socket).await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "tokend.v1.TokenBroker"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream
        .message()
        .await
        .unwrap()
        .expect("a reflection response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection response {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    // Health too, so reflection-driven clients (grpcurl, Postman) can call it.
    for service in [
        "tokend.v1.TokenBroker",
        "tokend.v1.Admin",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} not in {names:?}"
        );
    }
}

/// The typed client crate against the real daemon: the same headers as the
/// raw API, and tokend's errors as typed variants with its own messages.
#[tokio::test]
async fn the_typed_client_reads_what_the_daemon_serves() {
    use tokend_client::{Error, HeadersRequest, State};
    let (_work, daemon) = start();
    let typed = daemon.typed().await;
    let raw = daemon
        .client()
        .await
        .get_headers(request("global", "a@corp.example", &["SEARCH"]))
        .await
        .unwrap()
        .into_inner();
    let got = typed
        .headers(
            &HeadersRequest::new("global")
                .act_as("a@corp.example")
                .scope("SEARCH"),
        )
        .await
        .unwrap();
    let got_pairs: Vec<(&str, &str)> = got.iter().collect();
    assert_eq!(got_pairs, pairs(&raw));
    assert_eq!(got.bearer_token(), Some(CANARY));
    assert_eq!(got.fingerprint, raw.token_fingerprint);
    assert_no_secret("the typed headers' Debug", &format!("{got:?}"));

    let e = typed
        .headers(&HeadersRequest::new("global"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("X-Glean-ActAs")),
        "{e:?}"
    );
    let e = typed
        .headers(&HeadersRequest::new("forbidden"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    let e = typed
        .headers(&HeadersRequest::new("nope"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");

    let status = typed.status().await.unwrap();
    let expired = status.iter().find(|c| c.name == "expired").unwrap();
    assert_eq!(expired.state, State::Expired);
    assert_eq!(expired.kind, "glean_token");
}

/// A `grpc-timeout` far beyond any clock (`u64::MAX` seconds) used to
/// overflow the deadline arithmetic and panic the call's task before
/// authorisation; now a value longer than the 8 digits gRPC allows is no
/// deadline (as tonic reads it), every wait is clamped, and the call is
/// answered.
#[tokio::test]
async fn an_absurd_grpc_timeout_is_clamped_not_a_panic() {
    let (_work, daemon) = start();
    let mut client = daemon.client().await;
    for credential in ["user", "forbidden"] {
        let mut req = tonic::Request::new(GetHeadersRequest {
            credential: credential.into(),
            ..Default::default()
        });
        req.metadata_mut()
            .insert("grpc-timeout", "18446744073709551615S".parse().unwrap());
        let result = client.get_headers(req).await;
        match credential {
            "user" => assert!(result.is_ok(), "{result:?}"),
            _ => assert_eq!(result.unwrap_err().code(), Code::PermissionDenied),
        }
    }
    assert!(!daemon.logs().contains("panicked"), "{}", daemon.logs());
}
