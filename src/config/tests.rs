use std::os::unix::fs::PermissionsExt;

use secrecy::ExposeSecret;

use super::*;
use crate::credential::OAuthGrant;
use crate::glean::Permission;
use crate::oauth::AuthMethod;

fn with_secret(mode: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("token");
    std::fs::write(&secret, "glean_secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
    let config = dir.path().join("tokend.toml");
    (dir, config)
}

fn problems(path: &Path, text: &str) -> Vec<Problem> {
    match parse(path, text) {
        Err(ConfigError::Invalid { problems }) => problems,
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn a_full_config_is_understood() {
    let (_dir, path) = with_secret(0o600);
    let config = parse(
        &path,
        r#"
[daemon]
socket = "/tmp/x.sock"
socket_mode = 0o600
admin_uids = [0, "root"]
shutdown_timeout = "3s"

[[credential]]
name = "search"
kind = "glean_token"
permission = "global"
scopes = ["SEARCH", "chat"]
expires_at = "2030-01-01T00:00:00+02:00"
owner = "ops@corp.example"
secret = { file = "token" }
min_valid = "5m"
allow = [{ uids = [1000], act_as = ["*@corp.example"] }, { groups = [0] , act_as = ["a@b.c"] }]
"#,
    )
    .unwrap();
    assert_eq!(config.daemon.socket, Path::new("/tmp/x.sock"));
    assert_eq!(config.daemon.socket_mode, 0o600);
    assert_eq!(config.daemon.admins.0.uids, [0, 0]);
    assert_eq!(config.daemon.shutdown_timeout, Duration::from_secs(3));
    let c = &config.credentials[0];
    assert_eq!(&*c.name, "search");
    assert_eq!(c.min_valid, Duration::from_secs(300));
    assert_eq!(c.allow.len(), 2);
    assert_eq!(c.allow[1].who.gids, [0]);
    let Kind::Glean(g) = &c.kind else {
        panic!("not a Glean token: {c:?}")
    };
    assert_eq!(g.permission, Permission::Global);
    assert_eq!(g.scopes.to_string(), "CHAT, SEARCH");
    assert_eq!(g.expires_at.unwrap().to_string(), "2029-12-31T22:00:00Z");
    let GleanSecret::Configured { secret, .. } = &g.secret else {
        panic!("secret not read from its source")
    };
    assert_eq!(secret.expose_secret(), "glean_secret");
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("glean_secret"),
        "Debug shows the secret: {debug}"
    );
}

#[test]
fn every_problem_is_reported_with_its_line_and_field() {
    let (_dir, path) = with_secret(0o600);
    let text = r#"
[[credential]]
name = "a"
kind = "glean_token"
permission = "user"
scopes = ["SERACH", "CHAT"]
owner = "not-an-email"
secret = { file = "token" }

[[credential]]
name = "a"
kind = "glean_token"
"#;
    let p = problems(&path, text);
    let shown: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(p.len(), 3, "{shown:#?}");
    assert_eq!((p[0].line, p[0].column), (6, 11));
    assert_eq!(p[0].field, "credential.a.scopes");
    assert!(
        p[0].message
            .contains("unknown scope `SERACH` (did you mean SEARCH?)")
    );
    assert_eq!(p[1].field, "credential.a.owner");
    assert_eq!(p[2].line, 11);
    assert!(
        p[2].message
            .contains("duplicate credential name `a`, first defined on line 3")
    );
    assert!(shown[0].starts_with(&format!("{}:6:11: credential.a.scopes: ", path.display())));
}

#[test]
fn toml_errors_carry_positions_and_name_unknown_fields() {
    let (_dir, path) = with_secret(0o600);
    let p = problems(
        &path,
        "[[credential]]\nname = \"a\"\nkind = \"glean_token\"\ncolour = 1\n",
    );
    assert_eq!(p[0].line, 4);
    assert!(p[0].message.contains("unknown field `colour`"), "{}", p[0]);
    let p = problems(&path, "[daemon\n");
    assert_eq!(p[0].line, 1);
}

#[test]
fn kind_specific_rules() {
    let (_dir, path) = with_secret(0o600);
    let p = problems(
        &path,
        r#"
[[credential]]
name = "g"
kind = "glean_token"
permission = "global"
scopes = ["SEARCH"]
secret = { file = "token" }
allow = { uids = [1] }

[[credential]]
name = "u"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { file = "token" }
allow = { uids = [1], act_as = ["*@x.y"] }

[[credential]]
name = "k"
kind = "oauth_magic"
"#,
    );
    let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "credential.g.allow.act_as",
            "credential.u.allow.act_as",
            "credential.k.kind"
        ]
    );
    assert!(
        p[2].message
            .contains("unknown kind `oauth_magic`; known kinds: glean_token")
    );
}

#[test]
fn secrets_that_cannot_be_used_are_problems() {
    let (dir, path) = with_secret(0o640);
    let text = r#"
[[credential]]
name = "a"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { file = "token" }
"#;
    let p = problems(&path, text);
    assert_eq!(p[0].field, "credential.a.secret");
    assert!(p[0].message.contains("chmod 600"), "{}", p[0]);
    std::fs::remove_file(dir.path().join("token")).unwrap();
    let p = problems(&path, text);
    assert!(p[0].message.contains("No such file"), "{}", p[0]);
}

#[test]
fn oauth_credentials_are_understood() {
    let (_dir, path) = with_secret(0o600);
    let config = parse(
        &path,
        r#"
[store]
path = "/var/lib/x/store.redb"
key_file = "/etc/x/key"

[[credential]]
name = "glue"
kind = "oauth_client_credentials"
token_endpoint = "https://glue.example/oauth/token"
client_id = "abc"
client_secret = { file = "token" }
auth_method = "client_secret_post"
extra_params = { subject = "wks_123", redirect_uri = "https://x.example/cb" }
default_lifetime = "10m"

[[credential]]
name = "glean-sso"
kind = "oauth_refresh"
issuer = "https://acme-be.glean.com"
client_id = "tokend"
auth_method = "none"
scopes = ["openid", "offline_access"]
extra_headers = { "X-Glean-Auth-Type" = "OAUTH" }
refresh_token_lifetime = "90d"
serve_stale = true
refresh_fraction = 0.5
"#,
    )
    .unwrap();
    assert!(config.needs_store());
    assert_eq!(config.store.key_path(), Some(PathBuf::from("/etc/x/key")));
    let Kind::OAuth(glue) = &config.credentials[0].kind else {
        panic!("not OAuth")
    };
    assert_eq!(
        config.credentials[0].kind.name(),
        "oauth_client_credentials"
    );
    assert_eq!(glue.client.auth_method, AuthMethod::ClientSecretPost);
    assert_eq!(
        glue.client.extra_params,
        [
            ("redirect_uri".to_owned(), "https://x.example/cb".to_owned()),
            ("subject".to_owned(), "wks_123".to_owned())
        ]
    );
    assert_eq!(glue.schedule.default_lifetime, Duration::from_secs(600));
    let Kind::OAuth(sso) = &config.credentials[1].kind else {
        panic!("not OAuth")
    };
    assert_eq!(sso.grant, OAuthGrant::RefreshToken);
    assert!(sso.client.client_secret.is_none() && sso.serve_stale);
    assert_eq!(
        sso.extra_headers,
        [("X-Glean-Auth-Type".to_owned(), "OAUTH".to_owned())]
    );
    assert_eq!(
        sso.refresh_token_lifetime,
        Some(Duration::from_secs(90 * 86_400))
    );
}

#[test]
fn oauth_problems_name_their_fields() {
    let (_dir, path) = with_secret(0o600);
    let p = problems(
        &path,
        r#"
[[credential]]
name = "a"
kind = "oauth_refresh"
client_id = "x"
permission = "user"
auth_method = "client_secret_jwt"
client_secret = { file = "token" }
extra_params = { grant_type = "password" }
refresh_fraction = 1.5

[[credential]]
name = "b"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = { store = true }
issuer = "https://x.example"
"#,
    );
    let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "credential.a.permission",
            "credential.a.issuer",
            "credential.a.auth_method",
            "credential.a.extra_params",
            "credential.a.refresh_fraction",
            "credential.b.issuer",
        ],
        "{p:#?}"
    );
    assert!(
        p[0].message
            .contains("does not apply to kind `oauth_refresh`")
    );
    assert!(p[1].message.contains("set issuer"));
    assert!(
        p[3].message
            .contains("`grant_type` is set by tokend itself")
    );
}
