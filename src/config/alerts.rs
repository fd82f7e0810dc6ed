//! The `[alerts]` table into [`alert::Settings`]: thresholds, repeats,
//! schedules and sinks.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_spanned::Spanned;

use super::context::{Cleartext, Context, SOURCES};
use super::raw::{RawAlerts, RawSink};
use crate::alert;

/// Where PagerDuty's Events API v2 takes events unless `url` says otherwise.
const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// Builds the dotted field path of a sink's field.
type Field<'a> = &'a dyn Fn(&str) -> String;

impl Context<'_> {
    pub(super) fn alerts(&mut self, raw: RawAlerts) -> alert::Settings {
        let thresholds = match &raw.thresholds {
            None => alert::Settings::DEFAULT_THRESHOLDS.to_vec(),
            Some(list) => {
                let mut t: Vec<Duration> = list
                    .iter()
                    .filter_map(|d| {
                        self.nonzero_duration(
                            d,
                            "alerts.thresholds",
                            "a threshold of 0s is never reached before `expired` is; remove it \
                             or write e.g. \"1h\"",
                        )
                    })
                    .collect();
                t.sort_unstable_by(|a, b| b.cmp(a));
                t
            }
        };
        let mut repeat = |d: &Option<Spanned<String>>, field: &str, default: Duration| {
            d.as_ref()
                .and_then(|d| {
                    self.nonzero_duration(
                        d,
                        field,
                        "an alert would be sent again at every sweep; write e.g. \"1h\"",
                    )
                })
                .unwrap_or(default)
        };
        let repeat_expiring = repeat(
            &raw.repeat_expiring,
            "alerts.repeat_expiring",
            Duration::from_secs(86_400),
        );
        let repeat_failing = repeat(
            &raw.repeat_failing,
            "alerts.repeat_failing",
            Duration::from_secs(3600),
        );
        // Zero is meaningful here: alert as soon as refreshing fails.
        let failing_after = raw
            .refresh_failing_after
            .as_ref()
            .and_then(|d| self.duration(d, "alerts.refresh_failing_after"))
            .unwrap_or(Duration::from_secs(900));
        let sweep = self
            .cron(&raw.sweep, "alerts.sweep")
            .unwrap_or_else(|| "0 * * * * *".into());
        let digest = self
            .cron(&raw.digest, "alerts.digest")
            .or_else(|| Some("0 0 9 * * *".into()));
        let source = raw.source.unwrap_or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "tokend".into())
        });
        let sinks = self.sinks(raw.sink);
        alert::Settings {
            thresholds,
            repeat_expiring,
            repeat_failing,
            failing_after,
            sweep,
            digest,
            source,
            sinks,
        }
    }

    /// The sinks, or a log sink when none is configured.
    fn sinks(&mut self, raw: Vec<RawSink>) -> Vec<alert::SinkSpec> {
        let mut names = std::collections::HashSet::new();
        let mut sinks: Vec<alert::SinkSpec> = raw
            .into_iter()
            .filter_map(|s| {
                let name = s.name.get_ref().clone();
                if !names.insert(name.clone()) {
                    self.problem(
                        s.name.span(),
                        &format!("alerts.sink.{name}.name"),
                        format!("duplicate sink name `{name}`"),
                    );
                }
                self.sink(s)
            })
            .collect();
        if sinks.is_empty() {
            sinks.push(alert::SinkSpec {
                name: "log".into(),
                min_severity: alert::Severity::Info,
                credentials: Vec::new(),
                kind: alert::SinkKind::Log,
            });
        }
        sinks
    }

    /// A cron expression with seconds, checked by the scheduler that will
    /// run it.
    fn cron(&mut self, c: &Option<Spanned<String>>, field: &str) -> Option<String> {
        let c = c.as_ref()?;
        let ok =
            tokio_cron_scheduler::Job::new_async(c.get_ref().as_str(), |_, _| Box::pin(async {}))
                .is_ok();
        if !ok {
            let message = format!(
                "`{}` is not a cron expression with seconds; write e.g. \"0 * * * * *\" (every \
                 minute) or \"0 0 9 * * *\" (09:00 UTC daily)",
                c.get_ref()
            );
            self.problem(c.span(), field, message);
        }
        Some(c.get_ref().clone())
    }

    fn sink(&mut self, raw: RawSink) -> Option<alert::SinkSpec> {
        let name = raw.name.get_ref().clone();
        let field = |f: &str| format!("alerts.sink.{name}.{f}");
        let min_severity = match &raw.min_severity {
            None => alert::Severity::Info,
            Some(s) => alert::Severity::parse(s.get_ref()).unwrap_or_else(|| {
                self.problem(
                    s.span(),
                    &field("min_severity"),
                    format!(
                        "`{}` is not a severity; use info, warning or critical",
                        s.get_ref()
                    ),
                );
                alert::Severity::Info
            }),
        };
        let at = raw.kind.span();
        let kind = match raw.kind.get_ref().as_str() {
            "log" => Some(alert::SinkKind::Log),
            "webhook" => self.webhook(&raw, &field),
            "pagerduty" => {
                let routing_key = self
                    .secret(raw.routing_key.as_ref(), at, &field("routing_key"), SOURCES)
                    .map(|(_, s)| s);
                // The routing key travels in the body.
                let url = match &raw.url {
                    None => Some(PAGERDUTY_URL.to_owned()),
                    Some(u) => self
                        .http_url(
                            u.get_ref(),
                            u.span(),
                            &field("url"),
                            Cleartext::LoopbackOnly,
                            false,
                            PAGERDUTY_URL,
                        )
                        .map(|_| u.get_ref().clone()),
                };
                let (url, routing_key) = (url?, routing_key?);
                Some(alert::SinkKind::PagerDuty { url, routing_key })
            }
            "exec" => self.exec_sink(&raw, &field),
            other => {
                self.problem(
                    at,
                    &field("type"),
                    format!("unknown sink type `{other}`; use log, webhook, pagerduty or exec"),
                );
                None
            }
        }?;
        Some(alert::SinkSpec {
            name,
            min_severity,
            credentials: raw
                .credentials
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            kind,
        })
    }

    fn webhook(&mut self, raw: &RawSink, field: Field<'_>) -> Option<alert::SinkKind> {
        let example = "https://alerts.example/hook";
        let url = match (&raw.url, &raw.url_secret) {
            (Some(u), None) => self
                .http_url(
                    u.get_ref(),
                    u.span(),
                    &field("url"),
                    Cleartext::Allowed,
                    false,
                    example,
                )
                .map(|_| secrecy::SecretString::from(u.get_ref().as_str())),
            // A URL kept secret is one that must not travel in cleartext.
            (None, Some(s)) => self
                .secret(Some(s), raw.kind.span(), &field("url_secret"), SOURCES)
                .and_then(|(_, url)| {
                    self.http_url(
                        url.expose_secret(),
                        s.span(),
                        &field("url_secret"),
                        Cleartext::LoopbackOnly,
                        true,
                        example,
                    )?;
                    Some(url)
                }),
            _ => {
                self.problem(
                    raw.kind.span(),
                    &field("url"),
                    "set exactly one of url and url_secret (a secret source, for URLs \
                     that embed a token, like Slack's)"
                        .into(),
                );
                None
            }
        };
        let slack = match raw.format.as_ref().map(|f| f.get_ref().as_str()) {
            None | Some("json") => false,
            Some("slack") => true,
            Some(other) => {
                self.problem(
                    raw.format.as_ref().map_or(raw.kind.span(), Spanned::span),
                    &field("format"),
                    format!("unknown format `{other}`; use \"json\" or \"slack\""),
                );
                false
            }
        };
        let headers = raw
            .headers
            .as_ref()
            .map(|h| self.headers(h, &field("headers"), &[]))
            .unwrap_or_default();
        url.map(|url| alert::SinkKind::Webhook {
            url,
            slack,
            headers,
        })
    }

    fn exec_sink(&mut self, raw: &RawSink, field: Field<'_>) -> Option<alert::SinkKind> {
        let command = raw
            .command
            .as_ref()
            .map(|c| c.get_ref().clone())
            .unwrap_or_default();
        if command.is_empty() {
            self.problem(
                raw.kind.span(),
                &field("command"),
                "missing; give the program and its arguments, e.g. command = \
                 [\"/usr/local/bin/notify\", \"--team\", \"sre\"]"
                    .into(),
            );
        }
        let timeout = raw
            .timeout
            .as_ref()
            .and_then(|t| {
                self.nonzero_duration(
                    t,
                    &field("timeout"),
                    "the command would be stopped as it starts; write e.g. \"10s\" (the default)",
                )
            })
            .unwrap_or(Duration::from_secs(10));
        (!command.is_empty()).then_some(alert::SinkKind::Exec { command, timeout })
    }
}
