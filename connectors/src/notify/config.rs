//! Notification settings: channels by name, the queue bound, retries, dead letters.

use std::collections::BTreeMap;
use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

/// A secret string: `Debug` and `Serialize` print `***`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; use only where it is needed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

fn default_queue() -> NonZeroUsize {
    NonZeroUsize::new(1024).unwrap_or(NonZeroUsize::MIN)
}

/// How notifications are delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Notifications buffered per channel; more are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue: NonZeroUsize,
    /// Retry policy, shared by all channels.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Dead letters are appended here as JSON lines, when set.
    #[serde(default)]
    pub dead_letter_path: Option<PathBuf>,
    /// Channels by name.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelConfig>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            queue: default_queue(),
            retry: RetryConfig::default(),
            dead_letter_path: None,
            channels: BTreeMap::new(),
        }
    }
}

impl NotifyConfig {
    /// Problems the types cannot express, each naming its field (all of them, not the
    /// first).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.retry.initial_backoff > self.retry.max_backoff {
            problems.push(format!(
                "{prefix}.retry.initial_backoff must not exceed max_backoff"
            ));
        }
        if self.retry.timeout.is_zero() {
            problems.push(format!("{prefix}.retry.timeout must be positive"));
        }
        for (name, channel) in &self.channels {
            let field = format!("{prefix}.channels.{name}");
            match channel {
                ChannelConfig::Log => {}
                ChannelConfig::Webhook(http)
                | ChannelConfig::Slack(http)
                | ChannelConfig::Teams(http) => {
                    if !(http.url.starts_with("http://") || http.url.starts_with("https://")) {
                        problems.push(format!("{field}.url must start with http:// or https://"));
                    }
                }
                ChannelConfig::Email(email) => {
                    if email.to.is_empty() {
                        problems.push(format!("{field}.to must name at least one recipient"));
                    }
                    for (what, address) in std::iter::once(("from", &email.from))
                        .chain(email.to.iter().map(|to| ("to", to)))
                    {
                        if address.parse::<lettre::message::Mailbox>().is_err() {
                            problems.push(format!(
                                "{field}.{what}: {address:?} is not an email address"
                            ));
                        }
                    }
                    if email.username.is_some() != email.password.is_some() {
                        problems.push(format!(
                            "{field}: username and password must be given together"
                        ));
                    }
                    if let Some(path) = &email.ca_file {
                        match std::fs::read(path) {
                            Ok(pem) => {
                                if lettre::transport::smtp::client::Certificate::from_pem(&pem)
                                    .is_err()
                                {
                                    problems.push(format!(
                                        "{field}.ca_file: {path:?} holds no PEM certificate"
                                    ));
                                }
                            }
                            Err(error) => problems
                                .push(format!("{field}.ca_file: cannot read {path:?}: {error}")),
                        }
                        if email.security == SmtpSecurity::None {
                            problems.push(format!(
                                "{field}.ca_file: only used with security = \"starttls\" or \"tls\""
                            ));
                        }
                    }
                }
            }
        }
        problems
    }
}

fn default_attempts() -> NonZeroU32 {
    NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN)
}

fn default_initial_backoff() -> Duration {
    Duration::from_millis(500)
}

fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Timeout and retries of one delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries per notification, the first included.
    #[serde(default = "default_attempts")]
    pub attempts: NonZeroU32,
    /// Backoff ceiling before the first retry; doubles per retry (full jitter).
    #[serde(default = "default_initial_backoff", with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Largest backoff ceiling.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Time allowed for one try.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: default_attempts(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            timeout: default_timeout(),
        }
    }
}

/// One channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelConfig {
    /// A `tracing` event at `info`.
    Log,
    /// megamind's JSON, signed with HMAC-SHA256 when a secret is set.
    Webhook(HttpChannelConfig),
    /// A Slack incoming webhook.
    Slack(HttpChannelConfig),
    /// A Microsoft Teams (Workflows) incoming webhook.
    Teams(HttpChannelConfig),
    /// Email over SMTP.
    Email(EmailConfig),
}

impl ChannelConfig {
    /// The type name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Webhook(_) => "webhook",
            Self::Slack(_) => "slack",
            Self::Teams(_) => "teams",
            Self::Email(_) => "email",
        }
    }
}

/// An HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpChannelConfig {
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 key (webhook only): the body's signature goes in
    /// `X-Megamind-Signature: sha256=<hex>`.
    #[serde(default)]
    pub secret: Option<Secret>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    /// Plain SMTP (local relays and tests only).
    None,
    /// STARTTLS upgrade (usually port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

/// An SMTP relay and the message envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Relay host name.
    pub host: String,
    /// Relay port.
    pub port: u16,
    /// Connection security.
    #[serde(default)]
    pub security: SmtpSecurity,
    /// SMTP user, with `password`.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// A PEM file of extra root certificates trusted for `starttls`/`tls` (a private CA
    /// or a self-signed relay), in addition to the public web roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Sender mailbox, for example `megamind <alerts@example.com>`.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
}
