//! The pub/sub hub: topics with sequence numbers and a bounded replay ring, and clients
//! with bounded queues and topic patterns.
//!
//! A published message is serialized once and shared by every subscriber (an `Arc<str>`).
//! Each client has a bounded queue; a client whose queue is full is disconnected with a
//! reason rather than slowing the publisher or anyone else. Every topic keeps its last
//! messages so a client that reconnects can resume from its last sequence number without a
//! gap, or learn that the gap is too old and take a fresh snapshot.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

/// Identifies one connected client.
pub type ClientId = u64;

/// Hub limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// Messages remembered per topic for resume and history.
    pub ring_capacity: usize,
    /// Messages buffered per client before it is disconnected as too slow.
    pub client_queue: usize,
    /// Topics remembered at most (the least recently published are forgotten first).
    pub max_topics: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            ring_capacity: 1024,
            client_queue: 1024,
            max_topics: 100_000,
        }
    }
}

/// One published message, as stored for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Position in its topic (1, 2, ...).
    pub seq: u64,
    /// Wall time of publication, ms.
    pub at_ms: u64,
    /// The complete JSON-RPC notification text.
    pub message: Arc<str>,
}

/// What a client's writer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Text frames to send, in order.
    Batch(Vec<Arc<str>>),
}

/// Why a client was disconnected by the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    /// WebSocket close code.
    pub code: u16,
    /// Close reason.
    pub reason: String,
}

/// Close code for a client that fell behind (application range).
pub const CLOSE_LAGGED: u16 = 4001;

/// The receiving side of a client registration.
pub struct ClientReceiver {
    /// Messages to send, in order.
    pub queue: mpsc::Receiver<Outbound>,
    /// Set when the hub disconnects the client.
    pub kicked: watch::Receiver<Option<Kick>>,
}

struct Client {
    queue: mpsc::Sender<Outbound>,
    kick: watch::Sender<Option<Kick>>,
    patterns: HashSet<String>,
}

#[derive(Default)]
struct Topic {
    seq: u64,
    ring: VecDeque<Published>,
    last_publish_ms: u64,
}

#[derive(Default)]
struct Inner {
    topics: HashMap<String, Topic>,
    clients: HashMap<ClientId, Client>,
    /// Pattern → clients. Patterns are exact topics, `prefix/*`, or `*`.
    patterns: HashMap<String, HashSet<ClientId>>,
    next_client: ClientId,
    kicked_total: u64,
    published_total: u64,
}

/// Counters of the hub.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct HubStats {
    /// Connected clients.
    pub clients: usize,
    /// Topics remembered.
    pub topics: usize,
    /// Messages published.
    pub published: u64,
    /// Clients disconnected for falling behind.
    pub lagged_disconnects: u64,
}

/// The hub.
pub struct Hub {
    config: HubConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Whether `pattern` (exact, `prefix/*` or `*`) covers `topic`.
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

/// The patterns that could cover `topic`: itself, `*`, and `p/*` for each `/` in it.
fn candidate_patterns(topic: &str) -> impl Iterator<Item = String> + '_ {
    let prefixes = topic
        .char_indices()
        .filter(|(_, c)| *c == '/')
        .map(move |(position, _)| format!("{}*", &topic[..=position]));
    std::iter::once(topic.to_owned())
        .chain(std::iter::once("*".to_owned()))
        .chain(prefixes)
}

/// The JSON-RPC notification for one published message.
pub fn notification(topic: &str, seq: u64, data_json: &str) -> String {
    let topic = serde_json::to_string(topic).unwrap_or_else(|_| "\"\"".to_owned());
    format!(
        r#"{{"jsonrpc":"2.0","method":"update","params":{{"topic":{topic},"seq":{seq},"data":{data_json}}}}}"#
    )
}

impl Hub {
    /// An empty hub.
    pub fn new(config: HubConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a client; its messages arrive on the returned receiver.
    pub fn connect(&self) -> (ClientId, ClientReceiver) {
        let (queue, receiver) = mpsc::channel(self.config.client_queue.max(1));
        let (kick, kicked) = watch::channel(None);
        let mut inner = self.lock();
        inner.next_client += 1;
        let id = inner.next_client;
        inner.clients.insert(
            id,
            Client {
                queue,
                kick,
                patterns: HashSet::new(),
            },
        );
        (
            id,
            ClientReceiver {
                queue: receiver,
                kicked,
            },
        )
    }

    /// Forgets a client and its subscriptions.
    pub fn disconnect(&self, client: ClientId) {
        let mut inner = self.lock();
        if let Some(removed) = inner.clients.remove(&client) {
            for pattern in removed.patterns {
                if let Some(members) = inner.patterns.get_mut(&pattern) {
                    members.remove(&client);
                    if members.is_empty() {
                        inner.patterns.remove(&pattern);
                    }
                }
            }
        }
    }

    /// Subscribes `client` to `pattern`; returns whether it was new.
    pub fn subscribe(&self, client: ClientId, pattern: &str) -> bool {
        let mut inner = self.lock();
        let Some(state) = inner.clients.get_mut(&client) else {
            return false;
        };
        if !state.patterns.insert(pattern.to_owned()) {
            return false;
        }
        inner
            .patterns
            .entry(pattern.to_owned())
            .or_default()
            .insert(client);
        true
    }

    /// Unsubscribes `client` from `pattern`; returns whether it was subscribed.
    pub fn unsubscribe(&self, client: ClientId, pattern: &str) -> bool {
        let mut inner = self.lock();
        let removed = inner
            .clients
            .get_mut(&client)
            .is_some_and(|state| state.patterns.remove(pattern));
        if removed {
            if let Some(members) = inner.patterns.get_mut(pattern) {
                members.remove(&client);
                if members.is_empty() {
                    inner.patterns.remove(pattern);
                }
            }
        }
        removed
    }

    /// Publishes `data_json` (a JSON value, already serialized) on `topic`; returns its
    /// sequence number.
    pub fn publish(&self, topic: &str, data_json: &str, now_ms: u64) -> u64 {
        self.publish_batch([(topic, data_json)], now_ms)
            .first()
            .copied()
            .unwrap_or(0)
    }

    /// Publishes several `(topic, data_json)` messages at once; returns their sequence
    /// numbers. Each client receives everything of the batch it subscribed to as one queue
    /// entry, so a burst (thousands of windows closing together) costs one slot of its
    /// queue, not one slot per message: only a client that falls behind by `client_queue`
    /// batches is disconnected.
    pub fn publish_batch<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a str, &'a str)>,
        now_ms: u64,
    ) -> Vec<u64> {
        let mut inner = self.lock();
        let capacity = self.config.ring_capacity.max(1);
        let mut sequences = Vec::new();
        let mut per_client: HashMap<ClientId, Vec<Arc<str>>> = HashMap::new();
        for (topic, data_json) in items {
            if !inner.topics.contains_key(topic) && inner.topics.len() >= self.config.max_topics {
                // Forget the topic published least recently.
                if let Some(oldest) = inner
                    .topics
                    .iter()
                    .min_by_key(|(_, state)| state.last_publish_ms)
                    .map(|(name, _)| name.clone())
                {
                    inner.topics.remove(&oldest);
                }
            }
            let state = inner.topics.entry(topic.to_owned()).or_default();
            state.seq += 1;
            state.last_publish_ms = now_ms;
            let seq = state.seq;
            let message: Arc<str> = Arc::from(notification(topic, seq, data_json));
            state.ring.push_back(Published {
                seq,
                at_ms: now_ms,
                message: Arc::clone(&message),
            });
            while state.ring.len() > capacity {
                state.ring.pop_front();
            }
            inner.published_total += 1;
            sequences.push(seq);
            let mut recipients: Vec<ClientId> = Vec::new();
            for pattern in candidate_patterns(topic) {
                if let Some(members) = inner.patterns.get(&pattern) {
                    recipients.extend(members.iter().copied());
                }
            }
            recipients.sort_unstable();
            recipients.dedup();
            for client in recipients {
                per_client
                    .entry(client)
                    .or_default()
                    .push(Arc::clone(&message));
            }
        }
        let mut lagged = Vec::new();
        for (client, messages) in per_client {
            if let Some(state) = inner.clients.get(&client) {
                if state.queue.try_send(Outbound::Batch(messages)).is_err() {
                    lagged.push(client);
                }
            }
        }
        for client in lagged {
            Self::kick_lagged(&mut inner, client);
        }
        sequences
    }

    /// Disconnects a client that fell behind; counts it once.
    fn kick_lagged(inner: &mut Inner, client: ClientId) {
        if let Some(state) = inner.clients.get(&client) {
            if state.kick.borrow().is_some() {
                return;
            }
            let _ = state.kick.send(Some(Kick {
                code: CLOSE_LAGGED,
                reason:
                    "lagged: the client fell behind; reconnect and resume from your last sequence"
                        .to_owned(),
            }));
            inner.kicked_total += 1;
        }
    }

    /// Subscribes `client` to `topic` and returns the messages after `since` in one step,
    /// so no update is both replayed and delivered live (see [`Hub::since`] for the error).
    pub fn resume(&self, client: ClientId, topic: &str, since: u64) -> Result<Vec<Published>, u64> {
        let mut inner = self.lock();
        let replay = Self::since_locked(&inner, topic, since)?;
        if let Some(state) = inner.clients.get_mut(&client) {
            if state.patterns.insert(topic.to_owned()) {
                inner
                    .patterns
                    .entry(topic.to_owned())
                    .or_default()
                    .insert(client);
            }
        }
        Ok(replay)
    }

    /// The current sequence number of `topic` (0 when nothing was published).
    pub fn sequence(&self, topic: &str) -> u64 {
        self.lock().topics.get(topic).map_or(0, |state| state.seq)
    }

    /// Messages of `topic` after `since`, if none of them has left the ring; `Err` with the
    /// oldest sequence still held (or the current one) otherwise.
    pub fn since(&self, topic: &str, since: u64) -> Result<Vec<Published>, u64> {
        Self::since_locked(&self.lock(), topic, since)
    }

    fn since_locked(inner: &Inner, topic: &str, since: u64) -> Result<Vec<Published>, u64> {
        let Some(state) = inner.topics.get(topic) else {
            return if since == 0 { Ok(Vec::new()) } else { Err(0) };
        };
        if since > state.seq {
            return Err(state.seq);
        }
        let oldest = state.ring.front().map_or(state.seq + 1, |first| first.seq);
        if since + 1 < oldest {
            return Err(oldest);
        }
        Ok(state
            .ring
            .iter()
            .filter(|published| published.seq > since)
            .cloned()
            .collect())
    }

    /// Up to `limit` most recent messages of `topic` published at or after `since_ms`.
    pub fn history(&self, topic: &str, since_ms: u64, limit: usize) -> Vec<Published> {
        let inner = self.lock();
        let Some(state) = inner.topics.get(topic) else {
            return Vec::new();
        };
        let matching: Vec<&Published> = state
            .ring
            .iter()
            .filter(|published| published.at_ms >= since_ms)
            .collect();
        let skip = matching.len().saturating_sub(limit);
        matching.into_iter().skip(skip).cloned().collect()
    }

    /// Sends `message` to one client (answers to its requests), kicking it when its queue
    /// is full.
    pub fn send_to(&self, client: ClientId, message: Arc<str>) -> bool {
        let mut inner = self.lock();
        let full = match inner.clients.get(&client) {
            Some(state) => state
                .queue
                .try_send(Outbound::Batch(vec![message]))
                .is_err(),
            None => return false,
        };
        if full {
            Self::kick_lagged(&mut inner, client);
        }
        !full
    }

    /// Disconnects `client` with a close code and reason (its writer sends the close frame).
    pub fn kick(&self, client: ClientId, code: u16, reason: &str) {
        if let Some(state) = self.lock().clients.get(&client) {
            let _ = state.kick.send(Some(Kick {
                code,
                reason: reason.to_owned(),
            }));
        }
    }

    /// Counters.
    pub fn stats(&self) -> HubStats {
        let inner = self.lock();
        HubStats {
            clients: inner.clients.len(),
            topics: inner.topics.len(),
            published: inner.published_total,
            lagged_disconnects: inner.kicked_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(ring: usize, queue: usize) -> Hub {
        Hub::new(HubConfig {
            ring_capacity: ring,
            client_queue: queue,
            max_topics: 3,
        })
    }

    fn texts(outbound: Outbound) -> Vec<String> {
        let Outbound::Batch(texts) = outbound;
        texts.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn patterns_route_messages_and_sequences_count_per_topic() {
        let hub = hub(8, 8);
        let (exact, mut exact_rx) = hub.connect();
        let (wild, mut wild_rx) = hub.connect();
        let (all, mut all_rx) = hub.connect();
        assert!(hub.subscribe(exact, "metrics/cpu"));
        assert!(!hub.subscribe(exact, "metrics/cpu"), "idempotent");
        hub.subscribe(wild, "metrics/*");
        hub.subscribe(all, "*");
        assert_eq!(hub.publish("metrics/cpu", "1", 10), 1);
        assert_eq!(hub.publish("metrics/mem", "2", 11), 1);
        assert_eq!(hub.publish("metrics/cpu", "3", 12), 2);
        assert_eq!(hub.publish("alerts", "{}", 13), 1);
        let drain = |rx: &mut ClientReceiver| {
            let mut out = Vec::new();
            while let Ok(message) = rx.queue.try_recv() {
                out.extend(texts(message));
            }
            out
        };
        assert_eq!(drain(&mut exact_rx).len(), 2);
        assert_eq!(drain(&mut wild_rx).len(), 3);
        let everything = drain(&mut all_rx);
        assert_eq!(everything.len(), 4);
        let first: serde_json::Value = serde_json::from_str(&everything[0]).unwrap();
        assert_eq!(first["params"]["topic"], "metrics/cpu");
        assert_eq!(first["params"]["seq"], 1);
        assert_eq!(first["params"]["data"], 1);
        hub.unsubscribe(wild, "metrics/*");
        hub.publish("metrics/cpu", "4", 14);
        assert!(drain(&mut wild_rx).is_empty());
    }

    #[test]
    fn resume_replays_missed_messages_or_reports_the_gap() {
        let hub = hub(3, 8);
        for value in 1..=5 {
            hub.publish("t", &value.to_string(), value);
        }
        // The ring holds seq 3, 4, 5.
        let replay: Vec<u64> = hub.since("t", 2).unwrap().iter().map(|p| p.seq).collect();
        assert_eq!(replay, [3, 4, 5]);
        assert_eq!(hub.since("t", 5).unwrap(), Vec::new());
        assert_eq!(hub.since("t", 1), Err(3), "seq 2 is gone: resnapshot");
        assert_eq!(hub.since("t", 9), Err(5), "from the future");
        assert_eq!(hub.since("unknown", 0), Ok(Vec::new()));
        assert_eq!(hub.history("t", 4, 10).len(), 2);
        assert_eq!(hub.history("t", 0, 1)[0].seq, 5);
        assert_eq!(hub.sequence("t"), 5);
    }

    #[test]
    fn a_slow_client_is_kicked_and_others_keep_receiving() {
        let hub = hub(8, 2);
        let (slow, mut slow_rx) = hub.connect();
        let (fast, mut fast_rx) = hub.connect();
        hub.subscribe(slow, "*");
        hub.subscribe(fast, "*");
        for value in 0..5 {
            hub.publish("t", &value.to_string(), 0);
            while fast_rx.queue.try_recv().is_ok() {}
        }
        let kick = slow_rx.kicked.borrow_and_update().clone().unwrap();
        assert_eq!(kick.code, CLOSE_LAGGED);
        assert_eq!(
            hub.stats().lagged_disconnects,
            1,
            "a lagging client counts once"
        );
        hub.disconnect(slow);
        assert_eq!(hub.stats().clients, 1);
        assert!(
            slow_rx.queue.try_recv().is_ok(),
            "the queued messages are still there to flush"
        );
    }

    #[test]
    fn a_burst_is_one_queue_entry_per_client() {
        let hub = hub(8, 2);
        let (client, mut receiver) = hub.connect();
        hub.subscribe(client, "*");
        let data: Vec<String> = (0..100).map(|i| i.to_string()).collect();
        let sequences = hub.publish_batch(data.iter().map(|d| ("t", d.as_str())), 0);
        assert_eq!(sequences.len(), 100);
        assert!(
            receiver.kicked.borrow().is_none(),
            "a burst larger than the queue is fine"
        );
        assert_eq!(texts(receiver.queue.try_recv().unwrap()).len(), 100);
        let (late, _late_rx) = hub.connect();
        assert_eq!(hub.resume(late, "t", 95).unwrap().len(), 5, "replayed...");
        hub.publish("t", "1", 0);
        assert_eq!(hub.sequence("t"), 101, "...and subscribed in the same step");
    }

    #[test]
    fn topics_are_bounded() {
        let hub = hub(8, 8);
        for (at, topic) in ["a", "b", "c", "d"].iter().enumerate() {
            hub.publish(topic, "0", at as u64);
        }
        assert_eq!(hub.stats().topics, 3);
        assert_eq!(
            hub.sequence("a"),
            0,
            "the least recently published topic is forgotten"
        );
        assert!(pattern_matches("sessions/*", "sessions/x"));
        assert!(!pattern_matches("sessions/*", "metrics/x"));
        assert!(pattern_matches("*", "anything"));
    }
}
