//! Kafka settings (the `[kafka]` section).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where to consume from, how to commit, where to write results.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Consume from Kafka.
    pub enabled: bool,
    /// `host:port,host:port` (librdkafka `bootstrap.servers`).
    pub brokers: String,
    /// Topics to consume; every partition of each is read.
    pub topics: Vec<String>,
    /// Consumer group: offsets are committed under it.
    pub group_id: String,
    /// Where to start a partition that has no committed offset: `earliest` or `latest`.
    pub start_from: StartFrom,
    /// How often consumed positions are committed.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// A partition with no message for this long no longer holds back the watermark.
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Windows re-read before the durable frontier on restart, besides the window itself,
    /// so that operators that look back (breach transitions) rebuild their state.
    pub rebuild_windows: u32,
    /// Most messages handed to a worker in one batch.
    pub max_batch_messages: usize,
    /// Malformed messages are written here (original value; the error in headers).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Breaches, alert transitions and alert records are written here, keyed by fingerprint.
    #[serde(default)]
    pub alerts_topic: Option<String>,
    /// Closed windows are written here, keyed by series.
    #[serde(default)]
    pub windows_topic: Option<String>,
    /// Passed to librdkafka as is, for consumer and producer: `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, ...
    #[serde(default)]
    pub client: BTreeMap<String, String>,
}

/// Start position of a partition without a committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest retained message.
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

impl KafkaConfig {
    /// Problems with these settings, each naming the key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.enabled {
            return problems;
        }
        if self.brokers.trim().is_empty() {
            problems.push("kafka.brokers must not be empty when kafka is enabled".to_owned());
        }
        if self.topics.is_empty() || self.topics.iter().any(|topic| topic.trim().is_empty()) {
            problems.push("kafka.topics must name at least one topic, none empty".to_owned());
        }
        if self.group_id.trim().is_empty() {
            problems.push("kafka.group_id must not be empty".to_owned());
        }
        if self.commit_interval < Duration::from_millis(100) {
            problems.push("kafka.commit_interval must be at least 100ms".to_owned());
        }
        if self.idle_after < Duration::from_millis(100) {
            problems.push("kafka.idle_after must be at least 100ms".to_owned());
        }
        if self.max_batch_messages == 0 || self.max_batch_messages > 1_000_000 {
            problems.push("kafka.max_batch_messages must be between 1 and 1000000".to_owned());
        }
        for (name, topic) in [
            ("dead_letter_topic", &self.dead_letter_topic),
            ("alerts_topic", &self.alerts_topic),
            ("windows_topic", &self.windows_topic),
        ] {
            if let Some(topic) = topic {
                if topic.trim().is_empty() {
                    problems.push(format!("kafka.{name} must not be empty when set"));
                } else if self.topics.contains(topic) {
                    problems.push(format!(
                        "kafka.{name} {topic:?} is also an input topic (a feedback loop)"
                    ));
                }
            }
        }
        for key in self.client.keys() {
            if matches!(
                key.as_str(),
                "bootstrap.servers"
                    | "group.id"
                    | "enable.auto.commit"
                    | "enable.auto.offset.store"
            ) {
                problems.push(format!(
                    "kafka.client.\"{key}\" is set by megamind itself (use kafka.brokers / kafka.group_id)"
                ));
            }
        }
        problems
    }

    /// Whether any output topic is configured.
    pub fn has_outputs(&self) -> bool {
        self.dead_letter_topic.is_some() || self.produces_results()
    }

    /// Whether results (alerts or windows) are produced to topics, so that they are
    /// delivered only once the producer's delivered frontier passes them.
    pub fn produces_results(&self) -> bool {
        self.alerts_topic.is_some() || self.windows_topic.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use rdkafka::consumer::BaseConsumer;
    use rdkafka::producer::BaseProducer;

    use super::{KafkaConfig, StartFrom};
    use crate::kafka::consumer::client_config;

    fn config(client: &[(&str, &str)]) -> KafkaConfig {
        KafkaConfig {
            enabled: true,
            brokers: "127.0.0.1:9".to_owned(),
            topics: vec!["events".to_owned()],
            group_id: "group".to_owned(),
            start_from: StartFrom::Earliest,
            commit_interval: Duration::from_secs(1),
            idle_after: Duration::from_secs(2),
            rebuild_windows: 2,
            max_batch_messages: 100,
            dead_letter_topic: None,
            alerts_topic: None,
            windows_topic: None,
            client: client
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn sasl_and_ssl_settings_are_accepted_by_the_bundled_librdkafka() {
        // SCRAM and SSL need librdkafka built with OpenSSL (rdkafka's `ssl` feature):
        // without it, creating the client fails with "not available at build time".
        for (protocol, mechanism) in [
            ("sasl_ssl", "SCRAM-SHA-512"),
            ("sasl_ssl", "PLAIN"),
            ("sasl_plaintext", "SCRAM-SHA-256"),
        ] {
            let settings = config(&[
                ("security.protocol", protocol),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "megamind"),
                ("sasl.password", "secret"),
            ]);
            let client = client_config(&settings);
            assert_eq!(client.get("security.protocol"), Some(protocol));
            client
                .create::<BaseConsumer>()
                .unwrap_or_else(|error| panic!("{protocol}/{mechanism} consumer: {error}"));
            client
                .create::<BaseProducer>()
                .unwrap_or_else(|error| panic!("{protocol}/{mechanism} producer: {error}"));
        }
        client_config(&config(&[("security.protocol", "ssl")]))
            .create::<BaseConsumer>()
            .expect("ssl consumer");
    }

    #[test]
    fn megamind_keys_win_and_bad_settings_name_the_key() {
        let settings = config(&[("session.timeout.ms", "6000")]);
        let client = client_config(&settings);
        assert_eq!(client.get("session.timeout.ms"), Some("6000"));
        assert_eq!(client.get("enable.auto.commit"), Some("false"));
        let reserved = config(&[("group.id", "other")]);
        assert!(reserved
            .problems()
            .iter()
            .any(|problem| problem.contains("group.id")));
        let error = client_config(&config(&[("ssl.no.such.setting", "1")]))
            .create::<BaseConsumer>()
            .err()
            .expect("an unknown setting is refused");
        assert!(error.to_string().contains("ssl.no.such.setting"), "{error}");
    }
}
