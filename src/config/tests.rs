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

/// Written where a secret could land by mistake; no error may quote it.
const CANARY: &str = "glean_INLINE_CANARY_7f3a91c2";

/// Every problem of `text`, as the daemon would print them.
fn refusal(path: &Path, text: &str) -> String {
    match parse(path, text) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted:\n{text}"),
    }
}

/// Each field whose value is a secret source: a config with `{S}` in its
/// place, the field's full name, and whether `{ store = true }` is one of
/// its forms.
const SECRET_FIELDS: [(&str, &str, bool); 4] = [
    (
        "[[credential]]\nname = \"g\"\nkind = \"glean_token\"\npermission = \"user\"\n\
         scopes = [\"SEARCH\"]\nsecret = {S}\n",
        "credential.g.secret",
        true,
    ),
    (
        "[[credential]]\nname = \"o\"\nkind = \"oauth_client_credentials\"\n\
         token_endpoint = \"https://as.example/token\"\nclient_id = \"tokend\"\n\
         client_secret = {S}\n",
        "credential.o.client_secret",
        false,
    ),
    (
        "[alerts]\n[[alerts.sink]]\nname = \"pd\"\ntype = \"pagerduty\"\nrouting_key = {S}\n",
        "alerts.sink.pd.routing_key",
        false,
    ),
    (
        "[alerts]\n[[alerts.sink]]\nname = \"hook\"\ntype = \"webhook\"\nurl_secret = {S}\n",
        "alerts.sink.hook.url_secret",
        false,
    ),
];

/// `secret = "glean_…"` used to be answered with serde's ``unknown variant
/// `glean_…`, expected one of `file`, …``, echoing the secret to stderr,
/// `--check`, `tokenctl reload` and every alert sink. No shape written in a
/// secret field's place may be quoted, and each answer names the field and
/// the forms it takes.
#[test]
fn a_secret_written_inline_is_refused_without_being_quoted() {
    let (_dir, path) = with_secret(0o600);
    // (the value, the field the problem names (relative), what it says)
    let shapes = [
        (
            format!("\"{CANARY}\""),
            "",
            "secrets are never written inline",
        ),
        (
            format!("'{CANARY}'"),
            "",
            "secrets are never written inline",
        ),
        (
            format!("\"\"\"\n{CANARY}\n\"\"\""),
            "",
            "secrets are never written inline",
        ),
        (
            format!("[\"{CANARY}\"]"),
            "",
            "an array is not a secret source",
        ),
        (
            format!("[{{ file = \"{CANARY}\" }}]"),
            "",
            "an array is not a secret source",
        ),
        (
            "4711081542".to_owned(),
            "",
            "a number is not a secret source",
        ),
        ("true".to_owned(), "", "a boolean is not a secret source"),
        ("1979-05-27".to_owned(), "", "a date is not a secret source"),
        (
            format!("{{ file = 1, extra = \"{CANARY}\" }}"),
            "",
            "exactly one key",
        ),
        (
            format!("{{ env = \"X\", file = \"{CANARY}\" }}"),
            "",
            "exactly one key",
        ),
        (format!("{{ {CANARY} = \"x\" }}"), "", "not a secret source"),
        (
            format!("{{ \"{CANARY}\" = true }}"),
            "",
            "not a secret source",
        ),
        ("{}".to_owned(), "", "not a secret source"),
        (
            format!("{{ store = \"{CANARY}\" }}"),
            ".store",
            "`store` takes true",
        ),
        (
            format!("{{ file = [\"{CANARY}\"] }}"),
            ".file",
            "`file` takes a path string",
        ),
        (
            format!("{{ env = {{ value = \"{CANARY}\" }} }}"),
            ".env",
            "`env` takes a name string",
        ),
        (
            "{ credential = 7 }".to_owned(),
            ".credential",
            "`credential` takes a name string",
        ),
    ];
    for (template, field, store) in SECRET_FIELDS {
        for (value, sub, what) in &shapes {
            let text = template.replace("{S}", value);
            let shown = refusal(&path, &text);
            assert!(!shown.contains(CANARY), "quoted the secret:\n{shown}");
            assert!(!shown.contains("4711081542"), "quoted the value:\n{shown}");
            let p = problems(&path, &text);
            let p = p
                .iter()
                .find(|p| p.field == format!("{field}{sub}"))
                .unwrap_or_else(|| panic!("no problem names {field}{sub}:\n{shown}"));
            let line = text
                .lines()
                .position(|l| l.starts_with(field.rsplit('.').next().unwrap()))
                .unwrap();
            assert_eq!(p.line, line + 1, "{p}");
            let what = match *what {
                "`store` takes true" if !store => "only glean_token secrets can be imported",
                what => what,
            };
            assert!(p.message.contains(what), "{value}: {p}");
            for form in [
                "{ file = \"…\" }",
                "{ credential = \"…\" }",
                "{ env = \"…\" }",
            ] {
                assert!(p.message.contains(form), "{p}");
            }
            assert_eq!(p.message.contains("{ store = true }"), store, "{p}");
        }
    }
}

/// Every other error path, fed the canary where a secret could be written
/// by mistake: an unknown key's value, a wrong-typed field, a URL holding
/// it in its user info, path or query, a header name or value, a secret
/// file holding something other than a URL.
#[test]
fn no_config_error_quotes_what_may_be_a_secret() {
    let (dir, path) = with_secret(0o600);
    std::fs::write(dir.path().join("raw"), CANARY).unwrap();
    std::fs::write(
        dir.path().join("cleartext"),
        format!("http://hooks.example/services/{CANARY}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("ftp"),
        format!("ftp://hooks.example/{CANARY}"),
    )
    .unwrap();
    for f in ["raw", "cleartext", "ftp"] {
        std::fs::set_permissions(dir.path().join(f), std::fs::Permissions::from_mode(0o600))
            .unwrap();
    }
    let glean = "[[credential]]\nname = \"g\"\nkind = \"glean_token\"\npermission = \"user\"\n\
                 scopes = [\"SEARCH\"]\nsecret = { file = \"token\" }\n";
    let oauth = "[[credential]]\nname = \"o\"\nkind = \"oauth_client_credentials\"\n\
                 token_endpoint = \"https://as.example/token\"\nclient_id = \"tokend\"\n\
                 client_secret = { file = \"token\" }\n";
    let sink = "[alerts]\n[[alerts.sink]]\nname = \"s\"\n";
    let c = CANARY;
    let hostile = [
        // Unknown keys, their values holding the canary.
        format!("{glean}colour = \"{c}\"\n"),
        format!("[daemon]\ntoken = \"{c}\"\n"),
        format!("{sink}type = \"webhook\"\nurl = \"https://x.example\"\nsecret = \"{c}\"\n"),
        format!("[store]\nkey = \"{c}\"\n"),
        // Wrong-typed fields.
        format!("{oauth}serve_stale = \"{c}\"\n"),
        format!("{oauth}refresh_fraction = \"{c}\"\n"),
        format!("{oauth}scopes = \"{c}\"\n"),
        format!("{oauth}extra_params = \"{c}\"\n"),
        format!("{oauth}extra_headers = \"{c}\"\n"),
        oauth.replace("client_id = \"tokend\"", &format!("client_id = [\"{c}\"]")),
        format!("{glean}allow = \"{c}\"\n"),
        format!("[daemon]\nsocket_mode = \"{c}\"\n"),
        format!("[daemon]\nadmin_uids = [[\"{c}\"]]\n"),
        format!("[metrics]\nlisten = [\"{c}\"]\n"),
        format!("{sink}type = \"exec\"\ncommand = \"{c}\"\n"),
        format!("{sink}type = \"webhook\"\nurl = \"https://x.example\"\nheaders = \"{c}\"\n"),
        format!("{sink}type = \"webhook\"\nurl = [\"{c}\"]\n"),
        // URLs holding the canary in user info, path or query.
        oauth.replace(
            "https://as.example/token",
            &format!("http://tokend:{c}@as.example/token?key={c}"),
        ),
        oauth.replace("https://as.example/token", &format!("ftp://as.example/{c}")),
        oauth.replace("https://as.example/token", &format!("https://{c}:x@/t")),
        oauth.replace("https://as.example/token", &format!("as.example/{c}")),
        oauth.replace("https://as.example/token", c),
        format!("{oauth}issuer = \"http://as.example/?client_secret={c}\"\n"),
        format!(
            "{}redirect_uri = \"https://x.example:99999/{c}\"\n",
            oauth.replace("oauth_client_credentials", "oauth_refresh")
        ),
        format!("{glean}instance = \"http://u:{c}@acme-be.glean.com/\"\n"),
        format!("{sink}type = \"webhook\"\nurl = \"gopher://hooks.example/services/{c}\"\n"),
        format!("{sink}type = \"webhook\"\nurl = \"hooks.slack.com/services/{c}\"\n"),
        format!(
            "{sink}type = \"pagerduty\"\nrouting_key = {{ file = \"token\" }}\n\
             url = \"http://events.example/?routing_key={c}\"\n"
        ),
        format!(
            "{sink}type = \"pagerduty\"\nrouting_key = {{ file = \"token\" }}\nurl = \"{c}\"\n"
        ),
        // A secret URL that is not one, or would travel in cleartext.
        format!("{sink}type = \"webhook\"\nurl_secret = {{ file = \"raw\" }}\n"),
        format!("{sink}type = \"webhook\"\nurl_secret = {{ file = \"cleartext\" }}\n"),
        format!("{sink}type = \"webhook\"\nurl_secret = {{ file = \"ftp\" }}\n"),
        // Header names and values.
        format!("{oauth}extra_headers = {{ \"X-Key\" = \"{c}\\u0001\" }}\n"),
        format!("{oauth}extra_headers = {{ \"X-Key\" = \"{c}\\u00e9\" }}\n"),
        format!("{oauth}extra_headers = {{ \"Authorization: Bearer {c}\" = \"x\" }}\n"),
        format!("{oauth}extra_headers = {{ \"{c} \" = \"x\" }}\n"),
        format!("{oauth}extra_headers = {{ \"X-Key\" = {c:?}, \"X Bad\" = \"x\" }}\n"),
        format!(
            "{sink}type = \"webhook\"\nurl = \"https://x.example\"\n\
             headers = {{ \"X-Key\" = \"{c}\\n\" }}\n"
        ),
        format!(
            "{sink}type = \"webhook\"\nurl = \"https://x.example\"\n\
             headers = {{ \"Authorization: Bearer {c}\" = \"\" }}\n"
        ),
        format!("{oauth}extra_headers = {{ \"X-Key\" = 4711081542 }}\n"),
    ];
    for text in &hostile {
        let shown = refusal(&path, text);
        assert!(
            !shown.contains(CANARY) && !shown.contains("4711081542"),
            "quoted a value that may be a secret:\n{text}\n=>\n{shown}"
        );
    }
}

/// A URL's scheme and host are shown, to say which one is meant; nothing
/// after them.
#[test]
fn url_problems_show_scheme_and_host_only() {
    let (_dir, path) = with_secret(0o600);
    let text = format!(
        "[[credential]]\nname = \"o\"\nkind = \"oauth_client_credentials\"\n\
         token_endpoint = \"http://tokend:{CANARY}@as.example:8443/token?k={CANARY}\"\n\
         client_id = \"tokend\"\nclient_secret = {{ file = \"token\" }}\n"
    );
    let p = problems(&path, &text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].field, "credential.o.token_endpoint");
    assert_eq!((p[0].line, p[0].column), (4, 18));
    assert!(
        p[0].message.starts_with(
            "`http://as.example:8443` uses plain http, which would carry secrets in cleartext; \
             use https://"
        ),
        "{}",
        p[0]
    );
}

/// Plain http carries the client secret and refresh tokens (or, for
/// `instance`, the Glean token) in cleartext: refused unless the host is
/// this machine.
#[test]
fn cleartext_token_endpoints_and_issuers_are_refused_off_this_host() {
    let (_dir, path) = with_secret(0o600);
    let oauth = |url_field: &str, url: &str| {
        format!(
            "[[credential]]\nname = \"o\"\nkind = \"oauth_refresh\"\n{url_field} = \"{url}\"\n\
             client_id = \"tokend\"\nauth_method = \"none\"\n"
        )
    };
    for field in ["issuer", "token_endpoint"] {
        for url in [
            "http://as.example",
            "http://as.example:8080/token",
            "http://10.0.0.1/token",
            "http://[fe80::1]/token",
            "http://localhost.example/token",
        ] {
            let p = problems(&path, &oauth(field, url));
            assert_eq!(p.len(), 1, "{url}: {p:#?}");
            assert_eq!(p[0].field, format!("credential.o.{field}"));
            assert!(p[0].message.contains("cleartext; use https://"), "{}", p[0]);
        }
        for url in [
            "https://as.example/token",
            "http://127.0.0.1:9000/token",
            "http://127.8.9.10/token",
            "http://localhost:9000/token",
            "http://LOCALHOST/token",
            "http://[::1]:9000/token",
        ] {
            parse(&path, &oauth(field, url)).unwrap_or_else(|e| panic!("{url}: {e}"));
        }
    }
    let glean = "[[credential]]\nname = \"g\"\nkind = \"glean_token\"\npermission = \"user\"\n\
                 scopes = [\"SEARCH\"]\nsecret = { file = \"token\" }\n";
    let p = problems(
        &path,
        &format!("{glean}instance = \"http://acme-be.glean.com\"\n"),
    );
    assert_eq!(p[0].field, "credential.g.instance");
    assert!(p[0].message.contains("cleartext"), "{}", p[0]);
    // The redirect is tokenctl's own plain-http listener.
    parse(
        &path,
        &format!(
            "{}redirect_uri = \"http://127.0.0.1:9091/cb\"\n",
            oauth("issuer", "https://as.example")
        ),
    )
    .unwrap();
}

#[test]
fn webhook_and_pagerduty_urls_must_be_http_urls() {
    let (_dir, path) = with_secret(0o600);
    let sink = |kind: &str, url: &str| {
        let key = if kind == "pagerduty" {
            "routing_key = { file = \"token\" }\n"
        } else {
            ""
        };
        format!(
            "[alerts]\n[[alerts.sink]]\nname = \"s\"\ntype = \"{kind}\"\n{key}url = \"{url}\"\n"
        )
    };
    for (kind, url, says) in [
        (
            "webhook",
            "ftp://files.example/hook",
            "`ftp://files.example` is not an http(s) URL",
        ),
        (
            "webhook",
            "file:///tmp/hook",
            "is not an http(s) URL with a host",
        ),
        (
            "webhook",
            "hooks.example/x",
            "not a URL (relative URL without a base)",
        ),
        ("pagerduty", "events.pagerduty.com", "not a URL"),
        (
            "pagerduty",
            "mailto:oncall@corp.example",
            "is not an http(s) URL",
        ),
        ("pagerduty", "http://events.example/v2/enqueue", "cleartext"),
    ] {
        let p = problems(&path, &sink(kind, url));
        assert_eq!(p.len(), 1, "{url}: {p:#?}");
        assert_eq!(p[0].field, "alerts.sink.s.url");
        assert!(p[0].message.contains(says), "{url}: {}", p[0]);
    }
    for (kind, url) in [
        ("webhook", "https://hooks.example/x"),
        ("webhook", "http://alerts.internal:8080/hook"),
        ("pagerduty", "https://events.eu.pagerduty.com/v2/enqueue"),
        ("pagerduty", "http://127.0.0.1:9/pd"),
    ] {
        parse(&path, &sink(kind, url)).unwrap_or_else(|e| panic!("{url}: {e}"));
    }
}

#[test]
fn header_names_must_be_http_header_names() {
    let (_dir, path) = with_secret(0o600);
    let oauth = "[[credential]]\nname = \"o\"\nkind = \"oauth_client_credentials\"\n\
                 token_endpoint = \"https://as.example/token\"\nclient_id = \"tokend\"\n\
                 client_secret = { file = \"token\" }\n";
    let webhook = "[alerts]\n[[alerts.sink]]\nname = \"s\"\ntype = \"webhook\"\n\
                   url = \"https://hooks.example/x\"\n";
    for (config, field) in [
        (
            format!("{oauth}extra_headers = {{ \"X-Ok\" = \"1\", \"X Team\" = \"sre\" }}\n"),
            "credential.o.extra_headers",
        ),
        (
            format!("{webhook}headers = {{ \"X-Ok\" = \"1\", \"X Team\" = \"sre\" }}\n"),
            "alerts.sink.s.headers",
        ),
    ] {
        let column = |text: &str, what: &str| text.lines().last().unwrap().find(what).unwrap() + 1;
        let p = problems(&path, &config);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].field, field);
        // Pointed at, not quoted.
        assert_eq!(p[0].column, column(&config, "\"X Team\""), "{}", p[0]);
        assert!(
            p[0].message
                .contains("a header name is not a valid HTTP header name"),
            "{}",
            p[0]
        );
        // Values are checked too.
        let bad_value = config.replace("\"X Team\" = \"sre\"", "\"X-Team\" = \"s\\u0000\"");
        let p = problems(&path, &bad_value);
        assert!(p[0].message.contains("a header value"), "{}", p[0]);
        assert_eq!(p[0].column, column(&bad_value, "\"s\\u0000"), "{}", p[0]);
        parse(&path, &config.replace("X Team", "X-Team")).unwrap();
    }
    let p = problems(
        &path,
        &format!("{oauth}extra_headers = {{ authorization = \"Basic x\" }}\n"),
    );
    assert!(
        p[0].message
            .contains("`authorization` is set by tokend itself"),
        "{}",
        p[0]
    );
}

/// `http_timeout = "0s"` failed every refresh; other durations where zero
/// is no setting (a hot retry loop, an alert at every sweep, a command
/// killed as it starts) are refused alike. Zero stays valid where it means
/// something: shutdown_timeout, min_valid, refresh_before,
/// refresh_failing_after.
#[test]
fn zero_durations_that_make_no_sense_are_refused() {
    let (_dir, path) = with_secret(0o600);
    let oauth = "[[credential]]\nname = \"o\"\nkind = \"oauth_refresh\"\n\
                 token_endpoint = \"https://as.example/token\"\nclient_id = \"tokend\"\n\
                 auth_method = \"none\"\n";
    let alerts = "[alerts]\n";
    let exec =
        "[alerts]\n[[alerts.sink]]\nname = \"s\"\ntype = \"exec\"\ncommand = [\"/bin/true\"]\n";
    for (config, field) in [
        (
            "[daemon]\nhttp_timeout = \"0s\"\n".to_owned(),
            "daemon.http_timeout",
        ),
        (
            "[daemon]\nmax_backoff = \"0ms\"\n".to_owned(),
            "daemon.max_backoff",
        ),
        (
            format!("{oauth}default_lifetime = \"0s\"\n"),
            "credential.o.default_lifetime",
        ),
        (
            format!("{oauth}refresh_token_lifetime = \"0d\"\n"),
            "credential.o.refresh_token_lifetime",
        ),
        (
            format!("{alerts}thresholds = [\"1d\", \"0s\"]\n"),
            "alerts.thresholds",
        ),
        (
            format!("{alerts}repeat_expiring = \"0s\"\n"),
            "alerts.repeat_expiring",
        ),
        (
            format!("{alerts}repeat_failing = \"0m\"\n"),
            "alerts.repeat_failing",
        ),
        (format!("{exec}timeout = \"0s\"\n"), "alerts.sink.s.timeout"),
    ] {
        let p = problems(&path, &config);
        assert_eq!(p.len(), 1, "{config}: {p:#?}");
        assert_eq!(p[0].field, field);
        assert!(
            p[0].message.starts_with("must be longer than 0s: "),
            "{}",
            p[0]
        );
        assert!(p[0].message.contains("write e.g.") || p[0].message.contains("remove it"));
    }
    let config = parse(
        &path,
        &format!(
            "[daemon]\nshutdown_timeout = \"0s\"\nhttp_timeout = \"1s\"\n\
             {alerts}refresh_failing_after = \"0s\"\n\n{oauth}min_valid = \"0s\"\n\
             refresh_before = \"0s\"\n"
        ),
    )
    .unwrap();
    assert_eq!(config.daemon.shutdown_timeout, Duration::ZERO);
    assert_eq!(config.daemon.http_timeout, Duration::from_secs(1));
}

/// Each problem's line used to be found by scanning the text from its
/// start: 20 000 bad credentials took half a minute to report.
#[test]
fn twenty_thousand_bad_credentials_are_all_reported() {
    let (_dir, path) = with_secret(0o600);
    let mut text = String::new();
    for i in 0..20_000 {
        text.push_str(&format!(
            "[[credential]]\nname = \"c{i}\"\nkind = \"nope\"\n\n"
        ));
    }
    let p = problems(&path, &text);
    assert_eq!(p.len(), 20_000);
    assert_eq!((p[19_999].line, p[19_999].column), (79_999, 8));
    assert_eq!(p[19_999].field, "credential.c19999.kind");
    // All on one line (an inline array of tables) too.
    let one_line = format!(
        "credential = [{}]\n",
        (0..20_000)
            .map(|i| format!("{{ name = \"c{i}\", kind = \"nope\" }}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let p = problems(&path, &one_line);
    assert_eq!(p.len(), 20_000);
    assert!(p.iter().all(|p| p.line == 1));
    let last = one_line.rfind("\"nope\"").unwrap();
    assert_eq!(p[19_999].column, last + 1);
}

#[test]
fn serde_messages_lose_their_values() {
    assert_eq!(
        without_values(r#"invalid type: string "a \"quoted\" `x`", expected a boolean"#),
        "invalid type: string, expected a boolean"
    );
    assert_eq!(
        without_values("invalid type: integer `5`, expected a string"),
        "invalid type: integer, expected a string"
    );
    assert_eq!(
        without_values("unknown variant `x`, expected `a`"),
        "unknown variant, expected `a`"
    );
    assert_eq!(
        without_values("unknown field `ownr`, expected one of `owner`"),
        "unknown field `ownr`, expected one of `owner`"
    );
}

const SHARED: &str = r#"
[[credential]]
name = "sso"
kind = "oauth_refresh"
token_endpoint = "https://as.example/token"
client_id = "tokend"
auth_method = "none"
shared = true
"#;

#[test]
fn a_fleet_table_is_understood_with_its_defaults() {
    let path = Path::new("/etc/tokend/tokend.toml");
    let text = format!(
        "[fleet]\nendpoints = [\"https://etcd-1:2379/\", \"http://127.0.0.1:2379\"]\nnode = \"web-3\"\n{SHARED}"
    );
    let config = parse(path, &text).unwrap();
    let fleet = config.fleet.unwrap();
    assert_eq!(
        fleet.endpoints,
        ["https://etcd-1:2379", "http://127.0.0.1:2379"]
    );
    assert_eq!(
        (fleet.prefix.as_str(), fleet.node.as_str(), fleet.lease_ttl),
        ("/tokend/", "web-3", Duration::from_secs(10))
    );
    assert!(fleet.key_file.is_none() && fleet.auth.is_none());
    let Kind::OAuth(o) = &config.credentials[0].kind else {
        panic!("oauth")
    };
    assert!(o.shared && !o.retry_previous_refresh_token);
}

#[test]
fn fleet_mistakes_are_named_and_explained() {
    let path = Path::new("/etc/tokend/tokend.toml");
    let cases: [(&str, &str, &str); 9] = [
        ("", "credential.sso.shared", "needs a [fleet] table"),
        ("[fleet]\n", "fleet.endpoints", "missing"),
        (
            "[fleet]\nendpoints = [\"http://etcd-1:2379\"]\n",
            "fleet.endpoints",
            "plain http",
        ),
        (
            "[fleet]\nendpoints = [\"https://e:2379\"]\nlease_ttl = \"1s\"\n",
            "fleet.lease_ttl",
            "from 2s",
        ),
        (
            "[fleet]\nendpoints = [\"https://e:2379\"]\nprefix = \"/tokend\"\n",
            "fleet.prefix",
            "ends with `/`",
        ),
        (
            "[fleet]\nendpoints = [\"https://e:2379\"]\nuser = \"tokend\"\n",
            "fleet.password",
            "both user and password",
        ),
        (
            "[fleet]\nendpoints = [\"https://e:2379\"]\nnode = \"web 3\"\n",
            "fleet.node",
            "node names",
        ),
        (
            "[fleet]\nendpoints = [\"https://e:2379\"]\ntls_cert_file = \"/c.pem\"\n",
            "fleet.tls_cert_file",
            "both tls_cert_file and tls_key_file",
        ),
        (
            "[fleet]\nendpoints = [\"https://e:2379\"]\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
            "fleet.tls_ca_file",
            "cannot read /nonexistent/ca.pem",
        ),
    ];
    for (fleet, field, says) in cases {
        let found = problems(path, &format!("{fleet}{SHARED}"));
        assert!(
            found
                .iter()
                .any(|p| p.field == field && p.message.contains(says)),
            "{field}: {found:?}"
        );
    }
    // The opt-in replay applies to refresh tokens only.
    let cc = "[[credential]]\nname = \"cc\"\nkind = \"oauth_client_credentials\"\n\
              token_endpoint = \"https://as.example/token\"\nclient_id = \"t\"\n\
              auth_method = \"none\"\nretry_previous_refresh_token = true\n";
    let found = problems(path, cc);
    assert!(
        found
            .iter()
            .any(|p| p.field == "credential.cc.retry_previous_refresh_token"),
        "{found:?}"
    );
}

#[test]
fn issuer_concurrency_is_bounded() {
    let path = Path::new("/etc/tokend/tokend.toml");
    let config = parse(path, "[daemon]\nissuer_concurrency = 2\n").unwrap();
    assert_eq!(config.daemon.issuer_concurrency, 2);
    assert_eq!(parse(path, "").unwrap().daemon.issuer_concurrency, 8);
    for bad in ["0", "257"] {
        let found = problems(path, &format!("[daemon]\nissuer_concurrency = {bad}\n"));
        assert!(
            found
                .iter()
                .any(|p| p.field == "daemon.issuer_concurrency" && p.message.contains("1 to 256")),
            "{found:?}"
        );
    }
}

#[test]
fn fleet_tls_files_are_read_at_load_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.pem");
    std::fs::write(&big, vec![b'A'; 1024 * 1024 + 1]).unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let path = dir.path().join("tokend.toml");
    let fleet = |file: &Path| {
        format!(
            "[fleet]\nendpoints = [\"https://e:2379\"]\ntls_ca_file = \"{}\"\n{SHARED}",
            file.display()
        )
    };
    let found = problems(&path, &fleet(&big));
    assert!(
        found
            .iter()
            .any(|p| p.field == "fleet.tls_ca_file" && p.message.contains("larger than 1 MiB")),
        "{found:?}"
    );
    let config = parse(&path, &fleet(&ca)).unwrap();
    let tls = config.fleet.unwrap().tls;
    assert!(tls.configured && tls.ca.is_some() && tls.identity.is_none());
    // The client key is a secret: read only when private to the daemon's
    // user, as secret files are.
    let key = dir.path().join("client.key");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\n").unwrap();
    let with_key = |mode: u32| {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        format!(
            "[fleet]\nendpoints = [\"https://e:2379\"]\ntls_cert_file = \"{}\"\n\
             tls_key_file = \"{}\"\n{SHARED}",
            ca.display(),
            key.display()
        )
    };
    let found = problems(&path, &with_key(0o644));
    assert!(
        found
            .iter()
            .any(|p| p.field == "fleet.tls_key_file"
                && p.message.contains(&key.display().to_string())),
        "{found:?}"
    );
    let config = parse(&path, &with_key(0o600)).unwrap();
    assert!(config.fleet.unwrap().tls.identity.is_some());

    // Relative paths name files beside the config, as secret files do,
    // whatever the daemon's working directory.
    let relative = format!(
        "[fleet]\nendpoints = [\"https://e:2379\"]\ntls_ca_file = \"ca.pem\"\n\
         tls_cert_file = \"ca.pem\"\ntls_key_file = \"client.key\"\nkey_file = \"fleet.key\"\n\
         {SHARED}"
    );
    let fleet = parse(&path, &relative).unwrap().fleet.unwrap();
    assert!(fleet.tls.ca.is_some() && fleet.tls.identity.is_some());
    assert_eq!(fleet.key_file, Some(dir.path().join("fleet.key")));
}

/// A Glean credential's table, for the piece-by-piece reading tests.
fn glean(name: &str) -> String {
    format!(
        "[[credential]]\nname = \"{name}\"\nkind = \"glean_token\"\npermission = \"user\"\n\
         scopes = [\"SEARCH\"]\nsecret = {{ file = \"token\" }}\nallow = {{ uids = [0] }}\n"
    )
}

#[test]
fn reading_in_pieces_means_what_reading_whole_does() {
    let (_dir, path) = with_secret(0o600);
    let (a, b, c) = (glean("a"), glean("b"), glean("c"));
    let clean = [
        // Subtables of a credential, and tables between and after them.
        format!(
            "[daemon]\nsocket = \"/s\"\n{a}[credential.extra_headers]\nX-A = \"1\"\n\
             [[proxy]]\nname = \"p\"\nlisten = \"127.0.0.1:0\"\ncredential = \"a\"\n\
             {b}[metrics]\n{c}"
        ),
        format!("{a}\n# [[credential]]\n{b}[ credential . extra_headers ]\nX-B = \"2\"\n"),
        include_str!("../../config/tokend.example.toml").to_owned(),
        include_str!("../../config/tokend.toml").to_owned(),
    ];
    let tricky = [
        // A header-like line inside a multi-line string and a multi-line array.
        format!("{a}extra = \"\"\"\n[[credential]]\nname = \"x\"\n\"\"\"\n{b}"),
        format!("{a}scopes = [\n[\"SEARCH\"]\n]\n{b}"),
        // Problems in later pieces, and a name used twice.
        format!("{a}{b}\n{}", glean("a")),
        format!("{a}{b}{c}kind_of = 1\n"),
        format!("{a}{b}name = \n"),
        // Credentials written other ways, alone and mixed with tables.
        format!("credential = [{{ name = \"i\" }}]\n{a}"),
        format!("[credential]\nname = \"s\"\n{a}"),
        format!("[credential.allow]\nuids = [0]\n{a}"),
        format!("[[\"credential\"]]\nname = \"q\"\n{a}"),
        // A table defined twice on either side of a credential.
        format!("[daemon]\n{a}[daemon]\n{b}"),
    ];
    for text in clean.iter().chain(&tricky) {
        assert_eq!(
            format!("{:?}", parse(&path, text)),
            format!("{:?}", read_whole(&path, text)),
            "{text}"
        );
    }
    // The ordinary configs are read in pieces, not through the fallback.
    for text in &clean {
        let pieces = Pieces::of(text);
        assert!(pieces.any(), "{text}");
        assert!(pieces.rest().is_some(), "{text}");
        assert!(pieces.credentials(text).all(|c| c.is_ok()), "{text}");
    }
    // And problems in a piece point into the file, not into the piece.
    let text = format!("{a}{b}\n{}", glean("a"));
    let found = problems(&path, &text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].line, 17, "{found:?}");
    assert!(
        found[0].message.contains("first defined on line 2"),
        "{found:?}"
    );
}
