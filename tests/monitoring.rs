//! Monitoring out of the box: `contrib/prometheus/tokend.rules.yml` passes
//! `promtool check rules` and its unit tests (`promtool test rules`), the
//! Grafana dashboard `contrib/grafana/tokend.json` is well formed and its
//! queries parse, and every metric (with its labels and their values) that
//! the rules, their unit tests' input series and the dashboard use is one
//! the real daemon serves on `/metrics`, so none of them can drift from it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::glean_api::GleanApi;
use common::promtool;
use common::{Daemon, Workdir};
use tokend::proto::PutRefreshTokenRequest;

const RULES: &str = "contrib/prometheus/tokend.rules.yml";
const RULES_TEST: &str = "contrib/prometheus/tokend.rules.test.yml";
const DASHBOARD: &str = "contrib/grafana/tokend.json";

/// Series that Prometheus makes itself, not tokend.
const PROMETHEUS_OWN: [&str; 2] = ["up", "ALERTS"];

/// Labels the scrape adds to every series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Labels whose values are names from the operator's config.
const CONFIGURED_LABELS: [&str; 2] = ["credential", "sink"];

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_path(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

#[track_caller]
fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let out = promtool::run(&["check", "rules", RULES]);
    assert_ok(&out, &format!("promtool check rules {RULES}"));
    let out = promtool::run(&["test", "rules", RULES_TEST]);
    assert_ok(&out, &format!("promtool test rules {RULES_TEST}"));
}

#[test]
fn the_dashboard_is_well_formed_and_its_queries_parse() {
    let dashboard = dashboard();
    for key in ["title", "uid"] {
        assert!(
            dashboard[key].as_str().is_some_and(|s| !s.is_empty()),
            "{DASHBOARD}: no {key}"
        );
    }
    assert!(
        dashboard["schemaVersion"].is_u64(),
        "{DASHBOARD}: schemaVersion"
    );

    // The datasource is a variable, and the credential filter one of label
    // values.
    let vars = dashboard["templating"]["list"]
        .as_array()
        .unwrap_or_else(|| panic!("{DASHBOARD}: no templating.list"));
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{DASHBOARD}: no variable {name}"))
    };
    let ds = var("DS_PROMETHEUS");
    assert_eq!(
        (&ds["type"], &ds["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    let credential = var("credential");
    assert_eq!(credential["type"], "query");
    let query = variable_query(credential);
    assert!(
        query.starts_with("label_values(") && query.ends_with(", credential)"),
        "{DASHBOARD}: the credential variable's query {query}"
    );

    // Panels: unique ids, a grid position, and every query on the variable
    // datasource.
    let panels = all_panels(&dashboard);
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in &panels {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "{DASHBOARD}: a panel without a title");
        assert!(ids.insert(p["id"].as_u64().unwrap()), "{title}: id taken");
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].is_u64(), "{title}: gridPos.{k}");
        }
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}"));
        assert!(!targets.is_empty(), "{title}: no queries");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
            queries += 1;
        }
    }
    assert!(queries >= 10, "{DASHBOARD}: only {queries} queries");

    // Per-credential panels follow the credential filter.
    for expr in panel_exprs(&dashboard) {
        if expr.contains("tokend_credential_") {
            assert!(
                expr.contains("credential=~\"$credential\""),
                "{DASHBOARD}: not filtered by $credential: {expr}"
            );
        }
    }

    // Every query parses: as recording rules, with Grafana's variables
    // replaced by what they stand for.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in dashboard_exprs(&dashboard).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$job", ".*")
            .replace("$instance", ".*")
            .replace("$credential", ".*");
        assert!(!expr.contains('$'), "an unknown variable in {expr}");
        rules += &format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        );
    }
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = promtool::run(&["check", "rules", file.to_str().unwrap()]);
    assert_ok(&out, &format!("the queries of {DASHBOARD}:\n{rules}\n"));
}

#[test]
fn every_metric_the_rules_their_tests_and_the_dashboard_use_is_served() {
    let started = Instant::now();
    let scrape = Scrape::parse(&scrape_real_daemon());

    // The rules.
    let rules = read(RULES);
    let exprs = yaml_values(&rules, "expr");
    let alerts = rules
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(alerts >= 7, "{RULES}: {alerts} alerts");
    assert_eq!(exprs.len(), alerts, "{RULES}: one expr per alert");
    for expr in &exprs {
        for s in selectors(expr) {
            scrape.check_selector(&s, RULES, expr);
        }
    }

    // The unit tests' input series: the same names, label names and label
    // values as tokend's.
    let tests = read(RULES_TEST);
    let series = yaml_values(&tests, "series");
    assert!(series.len() >= 10, "{RULES_TEST}: {} series", series.len());
    for text in &series {
        let found = selectors(text);
        assert_eq!(found.len(), 1, "{RULES_TEST}: not one series: {text}");
        scrape.check_series(&found[0], text);
    }
    for expr in yaml_values(&tests, "expr") {
        for s in selectors(&expr) {
            scrape.check_selector(&s, RULES_TEST, &expr);
        }
    }

    // The dashboard, which shows every metric tokend has.
    let dashboard = dashboard();
    let mut used = BTreeSet::new();
    for expr in dashboard_exprs(&dashboard) {
        for s in selectors(&expr) {
            scrape.check_selector(&s, DASHBOARD, &expr);
            used.insert(s.name);
        }
    }
    for family in &scrape.families {
        assert!(
            used.iter().any(|n| n.starts_with(family.as_str())),
            "{DASHBOARD} shows nothing of {family}"
        );
    }
    eprintln!(
        "checked {} rules, {} series and the dashboard's {} metrics against {} served in {:.1}s",
        exprs.len(),
        series.len(),
        used.len(),
        scrape.samples.len(),
        started.elapsed().as_secs_f64()
    );
}

// The real daemon.

/// Starts tokend with a credential of each kind and an alert sink, makes
/// every metric appear (a token request, gRPC calls, an import, a stored
/// login of an oauth_refresh credential with `refresh_token_lifetime`, an
/// alert delivery), and returns its `/metrics` page.
fn scrape_real_daemon() -> String {
    let work = Workdir::new();
    let api = GleanApi::start();
    common::write_secret(&work.path().join("client-secret"), "cc-secret");
    let uid = nix::unistd::geteuid().as_raw();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 30);
    work.write_config(
        &format!("admin_uids = [{uid}]"),
        &format!(
            r#"{store}
[metrics]
listen = "127.0.0.1:{port}"

[alerts]
source = "monitoring-test"

[[alerts.sink]]
name = "journal"
type = "log"

[[credential]]
name = "search-bot"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
expires_at = "{expires}"
secret = {{ file = "secret" }}
allow = {{ uids = [{uid}] }}

[[credential]]
name = "imported"
kind = "glean_token"
permission = "user"
scopes = ["SEARCH"]
secret = {{ store = true }}
allow = {{ uids = [{uid}] }}

[[credential]]
name = "glean-oauth"
kind = "oauth_client_credentials"
token_endpoint = "{endpoint}"
client_id = "tokend"
client_secret = {{ file = "client-secret" }}
auth_method = "client_secret_post"
allow = {{ uids = [{uid}] }}

[[credential]]
name = "glean-sso"
kind = "oauth_refresh"
token_endpoint = "{endpoint}"
client_id = "tokend-sso"
auth_method = "none"
refresh_token_lifetime = "90d"
allow = {{ uids = [{uid}] }}
"#,
            store = work.store_section(),
            endpoint = api.token_endpoint(),
        ),
    );
    let daemon = Daemon::start(&work);

    // A login of the oauth_refresh credential, as `tokenctl login` stores
    // it: a refresh token and its first access token, good for a day, so
    // tokend calls no token endpoint for it. Its login expiry is exported
    // from then on.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            daemon
                .admin()
                .await
                .put_refresh_token(PutRefreshTokenRequest {
                    credential: "glean-sso".into(),
                    refresh_token: "rt-for-monitoring".into(),
                    access_token: "at-for-monitoring".into(),
                    access_token_expires_at: Some(prost_types::Timestamp {
                        seconds: jiff::Timestamp::now().as_second() + 86_400,
                        nanos: 0,
                    }),
                })
                .await
                .expect("PutRefreshToken")
        });

    // An import (a gRPC call, and a token tokend got itself), a status
    // listing and a test alert through the sink.
    let at = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 90)).to_string();
    let mut child = work
        .tokenctl_cmd(&["import", "imported", "--expires-at", &at])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"glean_imported_for_monitoring\n")
        .unwrap();
    assert_ok(&child.wait_with_output().unwrap(), "tokenctl import");
    assert_ok(&work.tokenctl(&["status"]), "tokenctl status");
    assert_ok(
        &work.tokenctl(&["test-alert", "journal"]),
        "tokenctl test-alert",
    );

    // The client-credentials token arrives on its own.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = http_get(port, "/metrics");
        if page.contains(r#"tokend_credential_state{credential="glean-oauth",state="fresh"} 1"#)
            && page.contains(r#"tokend_refresh_attempts_total{result="ok"}"#)
        {
            for sample in [
                r#"tokend_credential_info{credential="search-bot",kind="glean_token"} 1"#,
                r#"tokend_credential_info{credential="glean-oauth",kind="oauth_client_credentials"} 1"#,
                r#"tokend_credential_info{credential="glean-sso",kind="oauth_refresh"} 1"#,
                r#"tokend_credential_state{credential="glean-sso",state="fresh"} 1"#,
                r#"tokend_credential_login_expiry_timestamp_seconds{credential="glean-sso"} "#,
            ] {
                assert!(page.contains(sample), "no {sample} in\n{page}");
            }
            drop(daemon);
            return page;
        }
        assert!(
            Instant::now() < deadline,
            "glean-oauth got no token within 20s:\n{page}\n{}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The body of `GET PATH` on 127.0.0.1:PORT (tokend closes the connection).
fn http_get(port: u16, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// What a `/metrics` page holds.
#[derive(Debug, Default)]
struct Scrape {
    /// Metric family names (`# TYPE` lines).
    families: BTreeSet<String>,
    /// Per sample name: its label names and each label's values.
    samples: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// Per family: the values its help text lists, e.g. "by result (ok,
    /// transient, permanent)", which a label may take but has not yet.
    listed: BTreeMap<String, BTreeSet<String>>,
}

impl Scrape {
    fn parse(page: &str) -> Self {
        let mut scrape = Self::default();
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                scrape
                    .families
                    .insert(rest.split(' ').next().unwrap().into());
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (family, help) = rest.split_once(' ').unwrap();
                if let Some((_, list)) = help.split_once('(') {
                    let list = list.split(')').next().unwrap();
                    scrape.listed.insert(
                        family.into(),
                        list.split(',').map(|v| v.trim().to_owned()).collect(),
                    );
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let s = selectors(line.split(['}', ' ']).next().unwrap().to_owned() + "}");
                let [s] = &s[..] else {
                    panic!("an unreadable sample: {line}")
                };
                let labels = scrape.samples.entry(s.name.clone()).or_default();
                for m in &s.matchers {
                    labels
                        .entry(m.label.clone())
                        .or_default()
                        .insert(m.value.clone());
                }
            }
        }
        for name in ["tokend_credential_state", "tokend_refresh_attempts_total"] {
            assert!(scrape.samples.contains_key(name), "no {name} in\n{page}");
        }
        scrape
    }

    /// The values label `label` of sample `name` may take.
    fn values(&self, name: &str, label: &str) -> BTreeSet<String> {
        let mut values = self.samples[name][label].clone();
        if let Some(family) = self
            .families
            .iter()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            && let Some(listed) = self.listed.get(family)
        {
            values.extend(listed.iter().cloned());
        }
        values
    }

    /// A selector in a query: a metric tokend serves, or Prometheus' own,
    /// with matchers on labels it has, for values it can take.
    #[track_caller]
    fn check_selector(&self, s: &Selector, file: &str, expr: &str) {
        if PROMETHEUS_OWN.contains(&s.name.as_str()) {
            return;
        }
        let Some(labels) = self.samples.get(&s.name) else {
            panic!(
                "{file} uses {}, which tokend does not serve: {expr}\nit serves: {:?}",
                s.name,
                self.samples.keys()
            )
        };
        for m in &s.matchers {
            if TARGET_LABELS.contains(&m.label.as_str()) {
                continue;
            }
            assert!(
                labels.contains_key(&m.label),
                "{file}: {} has no label {}: {expr}",
                s.name,
                m.label
            );
            if CONFIGURED_LABELS.contains(&m.label.as_str()) || m.value.contains('$') {
                continue;
            }
            let values = self.values(&s.name, &m.label);
            let alternatives: Vec<&str> = if m.op.ends_with('~') {
                m.value.split('|').collect()
            } else {
                vec![&m.value]
            };
            for v in alternatives {
                if m.op.ends_with('~')
                    && v.contains(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                {
                    continue; // a pattern, not a value
                }
                assert!(
                    values.contains(v),
                    "{file}: {}{{{}=\"{v}\"}} cannot occur ({} takes {values:?}): {expr}",
                    s.name,
                    m.label,
                    m.label
                );
            }
        }
    }

    /// An input series: a metric tokend serves (or `up`) with exactly its
    /// labels, plus the scrape's.
    #[track_caller]
    fn check_series(&self, s: &Selector, text: &str) {
        self.check_selector(s, RULES_TEST, text);
        for m in &s.matchers {
            assert_eq!(m.op, "=", "{RULES_TEST}: not a series: {text}");
        }
        let have: BTreeSet<&str> = s.matchers.iter().map(|m| m.label.as_str()).collect();
        for label in TARGET_LABELS {
            assert!(have.contains(label), "{RULES_TEST}: no {label}: {text}");
        }
        if PROMETHEUS_OWN.contains(&s.name.as_str()) {
            return;
        }
        let want: BTreeSet<&str> = self.samples[&s.name]
            .keys()
            .map(String::as_str)
            .chain(TARGET_LABELS)
            .collect();
        assert_eq!(have, want, "{RULES_TEST}: not tokend's labels: {text}");
    }
}

// Reading the files.

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"))
}

/// Every panel, those in collapsed rows included.
fn all_panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

fn variable_query(v: &serde_json::Value) -> String {
    match &v["query"] {
        serde_json::Value::String(s) => s.clone(),
        q => q["query"].as_str().unwrap_or_default().to_owned(),
    }
}

/// The panels' queries.
fn panel_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    all_panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect()
}

/// The panels' queries and the series selectors of the query variables'
/// `label_values(SELECTOR, LABEL)`.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = panel_exprs(dashboard);
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if v["type"] == "query" {
            let query = variable_query(v);
            let selector = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .unwrap_or_else(|| {
                    panic!("{DASHBOARD}: not label_values(SELECTOR, LABEL): {query}")
                })
                .0;
            out.push(selector.to_owned());
        }
    }
    out
}

/// The values of every `KEY:` in a YAML file (in a list item or not): a
/// plain or quoted scalar, or a `|`/`>` block (its more indented lines).
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let body = line.trim_start();
        let body = body.strip_prefix("- ").unwrap_or(body).trim_start();
        let Some(rest) = body.strip_prefix(key).and_then(|r| r.strip_prefix(':')) else {
            continue;
        };
        let indent = line.len() - body.len();
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            out.push(block.join("\n").trim().to_owned());
        } else if let Some(q) = rest.strip_prefix('\'') {
            out.push(q.strip_suffix('\'').expect(line).replace("''", "'"));
        } else if let Some(q) = rest.strip_prefix('"') {
            out.push(q.strip_suffix('"').expect(line).replace("\\\"", "\""));
        } else {
            out.push(rest.to_owned());
        }
    }
    out
}

// A small PromQL reader: enough to find the series selectors in a query.

/// `name{label op "value", ...}` in a query.
#[derive(Debug)]
struct Selector {
    name: String,
    matchers: Vec<Matcher>,
}

#[derive(Debug)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// Words that are not metric names: operators and modifiers. Functions
/// and aggregations are told by the `(` after them.
const KEYWORDS: [&str; 6] = ["and", "or", "unless", "bool", "offset", "inf"];
/// Modifiers followed by a list of label names.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn selectors(expr: impl AsRef<str>) -> Vec<Selector> {
    let b = expr.as_ref().as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            // A range or subquery, e.g. [5m] or [$__rate_interval].
            b'[' => i += b[i..].iter().position(|&c| c == b']').unwrap() + 1,
            // A Grafana variable: $name or ${name}.
            b'$' => {
                i += 1;
                while i < b.len() && (ident(b[i]) || b[i] == b'{' || b[i] == b'}') {
                    i += 1;
                }
            }
            b'{' => panic!("a selector without a metric name: {}", expr.as_ref()),
            // A number or duration: 7, 0.95, 86400, 30m, 1e3.
            c if c.is_ascii_digit() || c == b'.' => {
                while i < b.len() && (ident(b[i]) || b[i] == b'.') {
                    i += 1;
                }
            }
            c if ident(c) => {
                let start = i;
                while i < b.len() && ident(b[i]) {
                    i += 1;
                }
                let word = std::str::from_utf8(&b[start..i]).unwrap();
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let next = b.get(j).copied();
                // `sum by (x) (...)`: an aggregation with its modifier first.
                let modifier_follows = ["by", "without"].iter().any(|m| {
                    b[j..].starts_with(m.as_bytes())
                        && !b.get(j + m.len()).is_some_and(|&c| ident(c))
                });
                if GROUPING.contains(&word) {
                    if next == Some(b'(') {
                        i = j + b[j..].iter().position(|&c| c == b')').unwrap() + 1;
                    }
                } else if next == Some(b'(') || modifier_follows || KEYWORDS.contains(&word) {
                    // A function or an operator.
                } else if next == Some(b'{') {
                    let (matchers, end) = parse_matchers(b, j);
                    out.push(Selector {
                        name: word.into(),
                        matchers,
                    });
                    i = end;
                } else {
                    out.push(Selector {
                        name: word.into(),
                        matchers: Vec::new(),
                    });
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The index after the string literal starting at `start`.
fn skip_string(b: &[u8], start: usize) -> usize {
    let quote = b[start];
    let mut i = start + 1;
    while b[i] != quote {
        i += if b[i] == b'\\' { 2 } else { 1 };
    }
    i + 1
}

/// The matchers of the `{...}` at `open`, and the index after it.
fn parse_matchers(b: &[u8], open: usize) -> (Vec<Matcher>, usize) {
    let text = |r: std::ops::Range<usize>| std::str::from_utf8(&b[r]).unwrap().trim().to_owned();
    let mut matchers = Vec::new();
    let mut i = open + 1;
    loop {
        while b[i].is_ascii_whitespace() || b[i] == b',' {
            i += 1;
        }
        if b[i] == b'}' {
            return (matchers, i + 1);
        }
        let start = i;
        while !b"=!".contains(&b[i]) {
            i += 1;
        }
        let label = text(start..i);
        let op_start = i;
        while b"=!~".contains(&b[i]) {
            i += 1;
        }
        let op = text(op_start..i);
        while b[i].is_ascii_whitespace() {
            i += 1;
        }
        let end = skip_string(b, i);
        let value = text(i + 1..end - 1).replace("\\\"", "\"");
        matchers.push(Matcher { label, op, value });
        i = end;
    }
}
