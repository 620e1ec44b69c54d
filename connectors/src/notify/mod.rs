//! Alert notifications: channels (log, webhook, Slack, Microsoft Teams, email over SMTP),
//! retries with backoff, dead letters.
//!
//! The dataflow decides *what* to notify; this module only delivers. [`Notifier::notify`]
//! never blocks: each channel has a bounded queue read by its own tokio task, and a
//! notification that finds the queue full is dropped and counted
//! ([`ChannelMetrics::dropped`]). A delivery task tries each notification up to
//! `retry.attempts` times with exponential backoff and full jitter; after the last try it
//! writes a [`DeadLetter`] (kept in a bounded ring, logged at `error`, and appended to
//! `dead_letter_path` when set).
//!
//! Payload formats live next to their channel: [`webhook`] (megamind's JSON with an
//! HMAC-SHA256 signature header), [`slack`] (incoming-webhook `text` + `blocks`), [`teams`]
//! (Workflows incoming webhook carrying an Adaptive Card), [`email`] (plain-text and HTML
//! bodies). Errors leave as [`DeliveryError`] values inside the delivery task; they never
//! reach the caller of `notify`.

pub mod config;
pub mod email;
mod payload;
pub mod route;
pub mod slack;
pub mod teams;
pub mod webhook;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use megamind_dataflows::time::{Clock, Stopwatch};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub use config::{ChannelConfig, EmailConfig, HttpChannelConfig, NotifyConfig, RetryConfig};
pub use payload::{Notification, NotificationStatus};

/// Most dead letters kept in memory.
const DEAD_LETTER_RING: usize = 256;

/// Why one delivery attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The HTTP request could not be sent or timed out.
    #[error("http request failed")]
    Http(#[source] reqwest::Error),
    /// The peer answered with a non-success status.
    #[error("peer answered http status {status}")]
    Status {
        /// The status code.
        status: u16,
    },
    /// The email could not be built (bad address).
    #[error("email could not be built")]
    Email(#[source] lettre::error::Error),
    /// An address in the email config is invalid.
    #[error("invalid email address {address:?}")]
    Address {
        /// The address.
        address: String,
    },
    /// The SMTP conversation failed.
    #[error("smtp delivery failed")]
    Smtp(#[source] lettre::transport::smtp::Error),
    /// The payload could not be encoded.
    #[error("payload could not be encoded: {0}")]
    Encode(String),
    /// The delivery did not finish in time.
    #[error("delivery timed out after {0:?}")]
    Timeout(Duration),
}

use crate::error_chain as chain;

/// A notification that could not be delivered after the last try.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The channel's name.
    pub channel: String,
    /// Tries made.
    pub attempts: u32,
    /// The last error, with causes.
    pub error: String,
    /// Wall-clock time of the last try, ms since the Unix epoch.
    pub at: u64,
    /// What was to be delivered.
    pub notification: Notification,
}

/// Counters of one channel.
#[derive(Debug, Default)]
pub struct ChannelMetrics {
    /// Notifications delivered.
    pub sent: AtomicU64,
    /// Attempts that failed (each retry counts).
    pub failed_attempts: AtomicU64,
    /// Notifications given up after the last try.
    pub dead_lettered: AtomicU64,
    /// Notifications dropped because the channel's queue was full.
    pub dropped: AtomicU64,
    /// Sum of enqueue → delivered times, µs (for the mean).
    pub delivery_micros: AtomicU64,
}

/// A point-in-time copy of a channel's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelCounts {
    /// The channel's name.
    pub channel: String,
    /// Its type (`log`, `webhook`, `slack`, `teams`, `email`).
    pub kind: &'static str,
    /// Notifications delivered.
    pub sent: u64,
    /// Attempts that failed.
    pub failed_attempts: u64,
    /// Notifications given up after the last try.
    pub dead_lettered: u64,
    /// Notifications dropped on a full queue.
    pub dropped: u64,
    /// Mean enqueue → delivered time, µs.
    pub mean_delivery_micros: u64,
}

struct Channel {
    name: String,
    kind: &'static str,
    sender: mpsc::Sender<Queued>,
    metrics: Arc<ChannelMetrics>,
}

struct Queued {
    notification: Arc<Notification>,
    enqueued: Stopwatch,
}

/// The handle the application notifies through. Cheap to share behind an `Arc`.
pub struct Notifier {
    channels: Vec<Channel>,
    dead_letters: Arc<Mutex<VecDeque<DeadLetter>>>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "channels",
                &self.channels.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Notifier {
    /// Starts one delivery task per configured channel on the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(config: &NotifyConfig, clock: Arc<dyn Clock>) -> Self {
        let dead_letters = Arc::new(Mutex::new(VecDeque::new()));
        let mut channels = Vec::new();
        // `log` always exists, so the default route has somewhere to go.
        let builtin_log =
            (!config.channels.contains_key("log")).then(|| ("log".to_owned(), ChannelConfig::Log));
        for (name, channel) in config
            .channels
            .iter()
            .chain(builtin_log.iter().map(|(n, c)| (n, c)))
        {
            let (sender, receiver) = mpsc::channel(config.queue.get());
            let metrics = Arc::new(ChannelMetrics::default());
            let task = DeliveryTask {
                name: name.clone(),
                channel: channel.clone(),
                retry: config.retry.clone(),
                metrics: Arc::clone(&metrics),
                dead_letters: Arc::clone(&dead_letters),
                dead_letter_path: config.dead_letter_path.clone(),
                clock: Arc::clone(&clock),
                client: reqwest::Client::builder()
                    .timeout(config.retry.timeout)
                    .build()
                    .unwrap_or_default(),
            };
            tokio::spawn(task.run(receiver));
            channels.push(Channel {
                name: name.clone(),
                kind: channel.kind(),
                sender,
                metrics,
            });
        }
        Self {
            channels,
            dead_letters,
        }
    }

    /// Hands `notification` to the named channel's queue without waiting. Returns whether it
    /// was queued: an unknown channel or a full queue refuses it (a full queue is counted
    /// in [`ChannelMetrics::dropped`]).
    pub fn notify(&self, channel: &str, notification: Arc<Notification>) -> bool {
        let Some(target) = self.channels.iter().find(|c| c.name == channel) else {
            tracing::warn!(channel, "notification for an unknown channel");
            return false;
        };
        let queued = Queued {
            notification,
            enqueued: Stopwatch::start(),
        };
        match target.sender.try_send(queued) {
            Ok(()) => true,
            Err(_) => {
                target.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// The configured channel names.
    pub fn channel_names(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(|c| c.name.as_str())
    }

    /// Counters per channel, in configuration order.
    pub fn counts(&self) -> Vec<ChannelCounts> {
        self.channels
            .iter()
            .map(|c| {
                let sent = c.metrics.sent.load(Ordering::Relaxed);
                ChannelCounts {
                    channel: c.name.clone(),
                    kind: c.kind,
                    sent,
                    failed_attempts: c.metrics.failed_attempts.load(Ordering::Relaxed),
                    dead_lettered: c.metrics.dead_lettered.load(Ordering::Relaxed),
                    dropped: c.metrics.dropped.load(Ordering::Relaxed),
                    mean_delivery_micros: c
                        .metrics
                        .delivery_micros
                        .load(Ordering::Relaxed)
                        .checked_div(sent)
                        .unwrap_or(0),
                }
            })
            .collect()
    }

    /// The most recent dead letters (up to 256), oldest first.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.dead_letters
            .lock()
            .map(|ring| ring.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Backoff before retry `attempt` (1-based): full jitter over
/// `min(max, initial * 2^(attempt-1))`.
pub fn backoff(retry: &RetryConfig, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = retry
        .initial_backoff
        .saturating_mul(1u32 << exponent)
        .min(retry.max_backoff);
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(rng.random_range(0..=micros))
}

struct DeliveryTask {
    name: String,
    channel: ChannelConfig,
    retry: RetryConfig,
    metrics: Arc<ChannelMetrics>,
    dead_letters: Arc<Mutex<VecDeque<DeadLetter>>>,
    dead_letter_path: Option<std::path::PathBuf>,
    clock: Arc<dyn Clock>,
    client: reqwest::Client,
}

impl DeliveryTask {
    async fn run(self, mut receiver: mpsc::Receiver<Queued>) {
        let mut rng = rand::rngs::SmallRng::from_os_rng();
        while let Some(queued) = receiver.recv().await {
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                let outcome =
                    tokio::time::timeout(self.retry.timeout, self.deliver(&queued.notification))
                        .await
                        .unwrap_or(Err(DeliveryError::Timeout(self.retry.timeout)));
                match outcome {
                    Ok(()) => {
                        self.metrics.sent.fetch_add(1, Ordering::Relaxed);
                        let micros =
                            u64::try_from(queued.enqueued.elapsed().as_micros()).unwrap_or(0);
                        self.metrics
                            .delivery_micros
                            .fetch_add(micros, Ordering::Relaxed);
                        break;
                    }
                    Err(error) => {
                        self.metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
                        let error = chain(&error);
                        if attempt >= self.retry.attempts.get() {
                            self.dead_letter(attempt, error, &queued.notification);
                            break;
                        }
                        tracing::warn!(channel = %self.name, attempt, %error, "notification attempt failed");
                        let pause = backoff(&self.retry, attempt, &mut rng);
                        tokio::time::sleep(pause).await;
                    }
                }
            }
        }
    }

    async fn deliver(&self, notification: &Notification) -> Result<(), DeliveryError> {
        match &self.channel {
            ChannelConfig::Log => {
                tracing::info!(
                    group = %notification.group,
                    status = notification.status.as_str(),
                    alerts = notification.alerts.len(),
                    summary = %notification.summary(),
                    "alert notification"
                );
                Ok(())
            }
            ChannelConfig::Webhook(config) => {
                webhook::post(&self.client, config, notification, self.clock.now_ms()).await
            }
            ChannelConfig::Slack(config) => {
                webhook::post_json(&self.client, &config.url, &slack::message(notification)).await
            }
            ChannelConfig::Teams(config) => {
                webhook::post_json(&self.client, &config.url, &teams::message(notification)).await
            }
            ChannelConfig::Email(config) => email::send(config, notification).await,
        }
    }

    fn dead_letter(&self, attempts: u32, error: String, notification: &Notification) {
        self.metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::error!(channel = %self.name, attempts, %error, group = %notification.group, "notification dead-lettered");
        let letter = DeadLetter {
            channel: self.name.clone(),
            attempts,
            error,
            at: self.clock.now_ms(),
            notification: notification.clone(),
        };
        if let Some(path) = &self.dead_letter_path {
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| {
                    let mut line = serde_json::to_vec(&letter).map_err(std::io::Error::other)?;
                    line.push(b'\n');
                    file.write_all(&line)
                });
            if let Err(error) = written {
                tracing::error!(path = %path.display(), %error, "could not write dead letter");
            }
        }
        if let Ok(mut ring) = self.dead_letters.lock() {
            if ring.len() >= DEAD_LETTER_RING {
                ring.pop_front();
            }
            ring.push_back(letter);
        }
    }
}
