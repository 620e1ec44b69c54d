//! Configuration: embedded defaults, then a TOML file, then `MEGAMIND__SECTION__KEY`
//! environment variables; parsed section by section and validated, reporting every
//! problem at once.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use megamind_connectors::kafka::KafkaConfig;
use megamind_dataflows::model::decode::DecodeLimits;
use megamind_dataflows::model::{BreachRule, ModelRegistration};
use megamind_dataflows::operators::route_events::series_names::MODEL_CORRECT;
use megamind_dataflows::operators::{RuleSet, SessionConfig, WindowConfig};
use megamind_dataflows::pipelines::AnalyticsConfig;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod anomaly;
pub use anomaly::AnomalySection;

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Everything megamind can be configured with.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    /// Network endpoints.
    pub server: ServerConfig,
    /// The MCP server.
    pub mcp: McpConfig,
    /// Live WebSocket fan-out.
    pub websocket: WebSocketConfig,
    /// Event intake.
    pub ingest: IngestConfig,
    /// Embedded store.
    pub store: StoreConfig,
    /// Sliding windows.
    pub windows: WindowsConfig,
    /// Session tracking.
    pub sessions: SessionsConfig,
    /// Alert lifecycle.
    pub alerts: AlertsConfig,
    /// Query views.
    pub views: ViewsConfig,
    /// Synthetic traffic.
    pub demo: DemoConfig,
    /// Kafka source and outputs.
    pub kafka: KafkaConfig,
    /// ML performance tracking and drift detection.
    pub ml: MlConfig,
    /// Predictive insights and self-monitoring.
    pub insights: InsightsConfig,
    /// Anomaly scoring and error families.
    pub anomaly: AnomalySection,
    /// Threshold rules.
    pub rules: Vec<BreachRule>,
}

/// Network endpoints.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP listen address.
    pub http_listen: SocketAddr,
}

/// A secret string: never printed, never serialized in clear.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("***")
    }
}

/// The MCP server.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Serve MCP at `/mcp`.
    pub enabled: bool,
    /// Bearer token required on `/mcp`.
    #[serde(default)]
    pub auth_token: Option<Secret>,
    /// Extra host names allowed in `Host`/`Origin` headers.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

/// Live WebSocket fan-out.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebSocketConfig {
    /// Run the WebSocket servers.
    pub enabled: bool,
    /// The analytics stream (every topic).
    pub analytics_listen: SocketAddr,
    /// The session monitor (`sessions/*`).
    pub sessions_listen: SocketAddr,
    /// Token of the read-only role.
    #[serde(default)]
    pub dashboard_token: Option<Secret>,
    /// Token of the role that may also add events.
    #[serde(default)]
    pub developer_token: Option<Secret>,
    /// Token of the role that may do everything.
    #[serde(default)]
    pub admin_token: Option<Secret>,
    /// Updates remembered per topic.
    pub ring_capacity: usize,
    /// Messages buffered per client.
    pub client_queue: usize,
    /// Largest client message, bytes.
    pub max_message_bytes: usize,
    /// Requests per second per client.
    pub requests_per_second: f64,
    /// Request burst per client.
    pub burst: f64,
    /// Server ping period.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Silence after which a client is dropped.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl WebSocketConfig {
    /// Whether any role token is configured.
    pub fn has_tokens(&self) -> bool {
        [
            &self.dashboard_token,
            &self.developer_token,
            &self.admin_token,
        ]
        .iter()
        .any(|token| {
            token
                .as_ref()
                .is_some_and(|token| !token.expose().is_empty())
        })
    }
}

/// Event intake.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// How far the watermark trails the newest event time.
    #[serde(with = "humantime_serde")]
    pub allowed_lateness: Duration,
    /// Idle time after which the wall clock advances the watermark.
    #[serde(with = "humantime_serde")]
    pub idle_advance_after: Duration,
    /// How far in the future an event may be stamped.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Most events per request.
    pub max_batch_events: usize,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Largest single event, bytes.
    pub max_record_bytes: usize,
    /// Batches buffered per worker.
    pub queue_capacity: usize,
    /// Events a worker may have in flight in the dataflow before it stops reading.
    pub max_in_flight_events: u64,
    /// Longest id, bytes.
    pub max_id_bytes: usize,
    /// Longest free text, bytes.
    pub max_text_bytes: usize,
    /// Most entries per map.
    pub max_map_entries: usize,
}

impl IngestConfig {
    /// Field limits for the decoder.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_id_bytes: self.max_id_bytes,
            max_text_bytes: self.max_text_bytes,
            max_map_entries: self.max_map_entries,
        }
    }

    /// Batch limits for the JSON codec.
    pub fn batch_limits(&self) -> megamind_connectors::codec::json::BatchLimits {
        megamind_connectors::codec::json::BatchLimits {
            fields: self.decode_limits(),
            max_record_bytes: self.max_record_bytes,
            max_records: self.max_batch_events,
        }
    }
}

/// The embedded store (write-ahead log of accepted events).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Write accepted events ahead and replay them on start.
    pub enabled: bool,
    /// SQLite database file.
    pub path: std::path::PathBuf,
    /// How long batches are kept.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl StoreConfig {
    /// The database file of cluster process `process` (the configured path when alone).
    pub fn results_path_for(&self, process: Option<usize>) -> std::path::PathBuf {
        let path = self.path_for(process);
        let stem = path
            .file_stem()
            .map_or_else(|| "megamind".into(), |s| s.to_string_lossy().into_owned());
        path.with_file_name(format!("{stem}-results.db"))
    }

    /// The event log's file for process `process` of a cluster (`None`: single process).
    pub fn path_for(&self, process: Option<usize>) -> std::path::PathBuf {
        match process {
            None => self.path.clone(),
            Some(index) => {
                let stem = self
                    .path
                    .file_stem()
                    .map_or_else(|| "megamind".into(), |s| s.to_string_lossy().into_owned());
                let name = match self.path.extension() {
                    Some(extension) => format!("{stem}-p{index}.{}", extension.to_string_lossy()),
                    None => format!("{stem}-p{index}"),
                };
                self.path.with_file_name(name)
            }
        }
    }
}

/// Sliding windows.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WindowsConfig {
    /// Window length.
    #[serde(with = "humantime_serde")]
    pub length: Duration,
    /// Slide (pane length).
    #[serde(with = "humantime_serde")]
    pub slide: Duration,
    /// Exact percentiles up to this many samples per window.
    pub exact_limit: usize,
}

/// Session tracking.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// History interval.
    #[serde(with = "humantime_serde")]
    pub history_interval: Duration,
    /// History points kept per session.
    pub history_length: usize,
    /// Forget active sessions idle this long.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Forget ended sessions this long after their end.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

/// Alert lifecycle.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// How long resolved alerts are kept.
    #[serde(with = "humantime_serde")]
    pub resolved_retention: Duration,
    /// megamind's address as people reach it (for links in notifications), for example
    /// `https://megamind.example.com`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Alert changes buffered between the dataflow and the dispatcher; more are dropped
    /// and counted.
    #[serde(default = "default_dispatch_queue")]
    pub dispatch_queue: usize,
    /// Channels, retries and dead letters.
    #[serde(default)]
    pub notify: megamind_connectors::notify::NotifyConfig,
    /// Which channels hear about which alerts, and grouping.
    #[serde(default)]
    pub routing: megamind_connectors::notify::route::RoutingConfig,
    /// Escalation policies (`[[alerts.escalations]]`), checked in order: the first that
    /// matches a newly firing alert (by severity and labels) escalates it while nobody
    /// acknowledges it.
    #[serde(default)]
    pub escalations: Vec<megamind_dataflows::model::EscalationPolicy>,
    /// Silences (`[[alerts.silences]]`): issued as `silence` commands at start and on
    /// reload (only what differs from the silences in force), like `POST /v1/silences`.
    #[serde(default)]
    pub silences: Vec<crate::silences::ConfigSilence>,
}

fn default_dispatch_queue() -> usize {
    4096
}

/// Query views.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ViewsConfig {
    /// Most series held.
    pub max_series: usize,
    /// Most sessions held.
    pub max_sessions: usize,
    /// Most recent breaches held.
    pub recent_breaches: usize,
}

/// ML performance tracking and drift detection (`[ml]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MlConfig {
    /// Outcomes match predictions less than this far apart in event time; unmatched
    /// predictions and orphan outcomes expire after it.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// Matched pairs in the reference window (the first of each version).
    pub reference_size: usize,
    /// Matched pairs in the current window (the latest).
    pub window_size: usize,
    /// Bins of the confidence histogram, reliability diagram and PSI.
    pub bins: usize,
    /// PSI at or above this is drift.
    pub psi_threshold: f64,
    /// KS and chi-squared p-values below this are drift.
    pub p_value_threshold: f64,
    /// A relative accuracy drop at or above this is drift.
    pub accuracy_drop: f64,
    /// ADWIN's delta on the 0/1 error stream.
    pub adwin_delta: f64,
    /// Drift tests and thresholds run after every this many ordered matched pairs.
    pub evaluate_every: u64,
    /// Whether every matched pair becomes a `model.correct` sample (1 right, 0 wrong), so
    /// `[[rules]]` can watch a model's windowed accuracy.
    pub correctness_series: bool,
    /// Registered models (`[[ml.models]]`): metadata and thresholds.
    #[serde(default)]
    pub models: Vec<ModelRegistration>,
}

/// Predictive insights and self-monitoring (`[insights]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InsightsConfig {
    /// Whether the insight operators run.
    pub enabled: bool,
    /// Whether megamind samples its own CPU, memory and ingest queue depth and feeds them
    /// in as metrics (never while consuming Kafka: see the README).
    pub self_monitoring: bool,
    /// How often megamind samples its own health.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// A running session's tracked prediction is made once it has this many operations.
    pub min_operations: u64,
    /// Ended sessions (both outcomes present) before the first success model.
    pub min_training: usize,
    /// Most recent ended sessions kept for training and completion estimates.
    pub training_window: usize,
    /// Retrain after this many ended sessions.
    pub retrain_every: u64,
    /// Tracked outcomes in the drift check.
    pub drift_window: usize,
    /// Retrain when live accuracy is this much (relative) below training accuracy.
    pub drift_drop: f64,
    /// Windows kept per series for trend and forecast.
    pub forecast_history: usize,
    /// Windows a series needs before it is forecast.
    pub forecast_min_windows: usize,
    /// Holt level smoothing, in (0, 1].
    pub alpha: f64,
    /// Holt trend smoothing, in (0, 1].
    pub beta: f64,
    /// How far ahead forecasts look.
    #[serde(with = "humantime_serde")]
    pub horizon: Duration,
    /// How far ahead a threshold crossing is still reported.
    #[serde(with = "humantime_serde")]
    pub reach: Duration,
    /// Slopes with a p-value below this count as a trend.
    pub significance: f64,
    /// Series forecast per worker.
    pub max_series: usize,
    /// A running session below this success probability is at risk.
    pub low_success_probability: f64,
    /// Threshold crossings forecast within this time become insights.
    #[serde(with = "humantime_serde")]
    pub time_to_threshold: Duration,
    /// Memory (RSS) limit the memory forecast is compared with, bytes.
    pub memory_limit_bytes: u64,
    /// CPU percent the CPU forecast is compared with.
    pub cpu_limit_percent: f64,
    /// A model's windowed accuracy below this is an insight.
    pub min_model_accuracy: f64,
}

/// Synthetic traffic.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// Events per second.
    pub events_per_second: f64,
    /// Concurrent sessions.
    pub sessions: usize,
    /// Models making predictions.
    pub models: usize,
    /// Random seed.
    pub seed: u64,
}

/// Every problem found while loading the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem(s)):",
            self.problems.len()
        )?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

const SECTIONS: [&str; 15] = [
    "insights",
    "server",
    "mcp",
    "websocket",
    "ingest",
    "store",
    "windows",
    "sessions",
    "alerts",
    "views",
    "demo",
    "kafka",
    "ml",
    "anomaly",
    "rules",
];

impl Config {
    /// Loads defaults, then `file` (if any), then `MEGAMIND__…` variables from `env`.
    ///
    /// # Errors
    /// Every unreadable file, syntax error, unknown key, ill-typed value and failed
    /// validation, all at once.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        match file {
            None => Self::from_layers(None, env),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => Self::from_layers(Some((&path.display().to_string(), &text)), env),
                Err(error) => Err(ConfigError {
                    problems: vec![format!("{}: cannot read: {error}", path.display())],
                }),
            },
        }
    }

    /// Parses a TOML text on top of the defaults (no environment); for tests and tools.
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Self::from_layers(Some(("<string>", text)), std::iter::empty())
    }

    fn from_layers(
        file: Option<(&str, &str)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut merged = match DEFAULT_TOML.parse::<toml::Table>() {
            Ok(table) => table,
            Err(error) => {
                return Err(ConfigError {
                    problems: vec![format!("embedded defaults: {error}")],
                })
            }
        };
        if let Some((name, text)) = file {
            match text.parse::<toml::Table>() {
                Ok(table) => merge(&mut merged, table),
                Err(error) => problems.push(format!("{name}: {}", error.message())),
            }
        }
        for (name, value) in env {
            if let Some(path) = name.strip_prefix("MEGAMIND__") {
                if let Err(problem) = apply_env(&mut merged, path, &value) {
                    problems.push(format!("environment variable {name}: {problem}"));
                }
            }
        }
        let config = Self::from_table(merged, &mut problems);
        match config {
            Some(config) if problems.is_empty() => {
                config.validate(&mut problems);
                if problems.is_empty() {
                    Ok(config)
                } else {
                    Err(ConfigError { problems })
                }
            }
            _ => Err(ConfigError { problems }),
        }
    }

    fn from_table(mut table: toml::Table, problems: &mut Vec<String>) -> Option<Config> {
        for key in table.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                problems.push(format!(
                    "unknown section `{key}` (expected one of {})",
                    SECTIONS.join(", ")
                ));
            }
        }
        let mut take = |name: &str| {
            table
                .remove(name)
                .unwrap_or(toml::Value::Table(toml::Table::new()))
        };
        let server = section::<ServerConfig>("server", take("server"), problems);
        let mcp = section::<McpConfig>("mcp", take("mcp"), problems);
        let websocket = section::<WebSocketConfig>("websocket", take("websocket"), problems);
        let ingest = section::<IngestConfig>("ingest", take("ingest"), problems);
        let store = section::<StoreConfig>("store", take("store"), problems);
        let windows = section::<WindowsConfig>("windows", take("windows"), problems);
        let sessions = section::<SessionsConfig>("sessions", take("sessions"), problems);
        let alerts = section::<AlertsConfig>("alerts", take("alerts"), problems);
        let views = section::<ViewsConfig>("views", take("views"), problems);
        let demo = section::<DemoConfig>("demo", take("demo"), problems);
        let kafka = section::<KafkaConfig>("kafka", take("kafka"), problems);
        let ml = section::<MlConfig>("ml", take("ml"), problems);
        let insights = section::<InsightsConfig>("insights", take("insights"), problems);
        let anomaly = section::<AnomalySection>("anomaly", take("anomaly"), problems);
        let rules = match take("rules") {
            toml::Value::Array(items) => {
                let mut rules = Vec::new();
                for (position, item) in items.into_iter().enumerate() {
                    if let Some(rule) =
                        section::<BreachRule>(&format!("rules[{position}]"), item, problems)
                    {
                        rules.push(rule);
                    }
                }
                Some(rules)
            }
            toml::Value::Table(table) if table.is_empty() => Some(Vec::new()),
            _ => {
                problems.push("`rules` must be an array of tables ([[rules]])".to_owned());
                None
            }
        };
        Some(Config {
            server: server?,
            mcp: mcp?,
            websocket: websocket?,
            ingest: ingest?,
            store: store?,
            windows: windows?,
            sessions: sessions?,
            alerts: alerts?,
            views: views?,
            demo: demo?,
            kafka: kafka?,
            ml: ml?,
            insights: insights?,
            anomaly: anomaly?,
            rules: rules?,
        })
    }

    fn validate(&self, problems: &mut Vec<String>) {
        problems.extend(self.kafka.problems());
        problems.extend(self.insights.problems());
        problems.extend(self.anomaly.problems());
        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(problem.to_owned());
            }
        };
        let minute = Duration::from_secs(60);
        check(
            self.windows.length >= minute && self.windows.length <= 30 * minute,
            "windows.length must be between 1m and 30m",
        );
        check(
            self.windows.slide >= Duration::from_millis(100),
            "windows.slide must be at least 100ms",
        );
        check(
            self.windows.slide.as_millis() == 0
                || self.windows.length.as_millis() % self.windows.slide.as_millis().max(1) == 0,
            "windows.length must be a multiple of windows.slide",
        );
        check(
            self.windows.exact_limit >= 1,
            "windows.exact_limit must be at least 1",
        );
        check(
            !self.mcp.enabled
                || self.server.http_listen.ip().is_loopback()
                || self
                    .mcp
                    .auth_token
                    .as_ref()
                    .is_some_and(|token| !token.expose().is_empty()),
            "mcp.auth_token is required when server.http_listen is not a loopback address",
        );
        let ws = &self.websocket;
        check(
            !ws.enabled
                || ws.has_tokens()
                || (ws.analytics_listen.ip().is_loopback() && ws.sessions_listen.ip().is_loopback()),
            "websocket: a token (websocket.admin_token, developer_token or dashboard_token) is required when \
             listening beyond loopback",
        );
        check(
            ws.analytics_listen != ws.sessions_listen || ws.analytics_listen.port() == 0,
            "websocket.analytics_listen and websocket.sessions_listen must differ",
        );
        check(
            ws.ring_capacity >= 1,
            "websocket.ring_capacity must be at least 1",
        );
        check(
            ws.client_queue >= 16,
            "websocket.client_queue must be at least 16",
        );
        check(
            ws.max_message_bytes >= 1024,
            "websocket.max_message_bytes must be at least 1024",
        );
        check(
            ws.requests_per_second > 0.0 && ws.burst >= 1.0,
            "websocket.requests_per_second must be positive and websocket.burst at least 1",
        );
        check(
            ws.ping_interval < ws.idle_timeout,
            "websocket.ping_interval must be shorter than websocket.idle_timeout",
        );
        check(
            !self.store.enabled || !self.store.path.as_os_str().is_empty(),
            "store.path must not be empty when the store is enabled",
        );
        check(
            self.store.retention >= Duration::from_secs(60),
            "store.retention must be at least 1m",
        );
        check(
            self.ingest.allowed_lateness <= Duration::from_secs(3600),
            "ingest.allowed_lateness must be at most 1h",
        );
        check(
            self.ingest.idle_advance_after >= Duration::from_millis(10),
            "ingest.idle_advance_after must be at least 10ms",
        );
        check(
            self.ingest.max_batch_events >= 1,
            "ingest.max_batch_events must be at least 1",
        );
        check(
            self.ingest.queue_capacity >= 1,
            "ingest.queue_capacity must be at least 1",
        );
        check(
            self.ingest.max_in_flight_events >= 1,
            "ingest.max_in_flight_events must be at least 1",
        );
        check(
            self.ingest.max_body_bytes >= 1024,
            "ingest.max_body_bytes must be at least 1024",
        );
        check(
            self.ingest.max_record_bytes >= 64,
            "ingest.max_record_bytes must be at least 64",
        );
        check(
            self.ingest.max_id_bytes >= 1,
            "ingest.max_id_bytes must be at least 1",
        );
        check(
            self.ingest.max_map_entries >= 1,
            "ingest.max_map_entries must be at least 1",
        );
        check(
            self.sessions.history_interval >= Duration::from_secs(1),
            "sessions.history_interval must be at least 1s",
        );
        check(
            self.sessions.history_length >= 1,
            "sessions.history_length must be at least 1",
        );
        check(
            self.views.max_series >= 1,
            "views.max_series must be at least 1",
        );
        check(
            self.views.max_sessions >= 1,
            "views.max_sessions must be at least 1",
        );
        check(
            self.demo.events_per_second.is_finite() && self.demo.events_per_second > 0.0,
            "demo.events_per_second must be a positive number",
        );
        check(self.demo.sessions >= 1, "demo.sessions must be at least 1");
        check(
            self.ml.horizon >= Duration::from_secs(1),
            "ml.horizon must be at least 1s",
        );
        check(
            (1..=10_000).contains(&self.ml.reference_size),
            "ml.reference_size must be between 1 and 10000 (the exact KS test bounds it)",
        );
        check(
            (1..=10_000).contains(&self.ml.window_size),
            "ml.window_size must be between 1 and 10000 (the exact KS test bounds it)",
        );
        check(
            (2..=100).contains(&self.ml.bins),
            "ml.bins must be between 2 and 100",
        );
        check(
            self.ml.psi_threshold.is_finite() && self.ml.psi_threshold > 0.0,
            "ml.psi_threshold must be a positive number",
        );
        check(
            self.ml.p_value_threshold > 0.0 && self.ml.p_value_threshold < 1.0,
            "ml.p_value_threshold must be between 0 and 1 (exclusive)",
        );
        check(
            self.ml.accuracy_drop > 0.0 && self.ml.accuracy_drop <= 1.0,
            "ml.accuracy_drop must be in (0, 1]",
        );
        check(
            self.ml.adwin_delta > 0.0 && self.ml.adwin_delta < 1.0,
            "ml.adwin_delta must be between 0 and 1 (exclusive)",
        );
        check(
            self.ml.evaluate_every >= 1,
            "ml.evaluate_every must be at least 1",
        );
        check(
            self.alerts.dispatch_queue >= 1,
            "alerts.dispatch_queue must be at least 1",
        );
        let mut registered = BTreeMap::new();
        for model in &self.ml.models {
            for (field, reason) in model.problems() {
                problems.push(format!(
                    "ml.models ({:?}): {field} {reason}",
                    model.model_id.as_str()
                ));
            }
            let key = (model.model_id.clone(), model.model_version.clone());
            if registered.insert(key, ()).is_some() {
                problems.push(format!(
                    "ml.models: model {:?}{} is registered more than once",
                    model.model_id.as_str(),
                    model
                        .model_version
                        .as_ref()
                        .map_or_else(String::new, |v| format!(" version {:?}", v.as_str()))
                ));
            }
        }
        if !self.ml.correctness_series {
            for (position, rule) in self.rules.iter().enumerate() {
                if rule.metric == MODEL_CORRECT {
                    problems.push(format!(
                        "rules[{position}].metric: rule {:?} watches {MODEL_CORRECT}, which \
                         needs ml.correctness_series = true",
                        rule.id.as_str()
                    ));
                }
            }
        }
        problems.extend(self.alerts.notify.problems("alerts.notify"));
        let mut channels: Vec<&str> = self
            .alerts
            .notify
            .channels
            .keys()
            .map(String::as_str)
            .collect();
        channels.push("log");
        problems.extend(
            self.alerts
                .routing
                .problems("alerts.routing", channels.iter().copied()),
        );
        for (position, policy) in self.alerts.escalations.iter().enumerate() {
            let prefix = format!("alerts.escalations[{position}]");
            problems.extend(policy.problems(&prefix));
            for (step, rules) in policy.steps.iter().enumerate() {
                for channel in &rules.channels {
                    if !channels.contains(&channel.as_str()) {
                        problems.push(format!(
                            "{prefix}.steps[{step}].channels: unknown channel {channel:?}"
                        ));
                    }
                }
            }
        }
        let mut silence_ids = BTreeMap::new();
        for (position, silence) in self.alerts.silences.iter().enumerate() {
            let prefix = format!("alerts.silences[{position}]");
            problems.extend(silence.problems(&prefix));
            if silence_ids.insert(silence.id.as_str(), ()).is_some() {
                problems.push(format!(
                    "{prefix}.id: silence id {:?} is used more than once",
                    silence.id
                ));
            }
        }
        let mut seen = BTreeMap::new();
        for rule in &self.rules {
            if let Err(error) = rule.validate() {
                problems.push(error.to_string());
            }
            if seen.insert(rule.id.clone(), ()).is_some() {
                problems.push(format!(
                    "rule id {:?} is used more than once",
                    rule.id.as_str()
                ));
            }
        }
    }

    /// The dataflow's configuration.
    pub fn analytics(&self) -> AnalyticsConfig {
        AnalyticsConfig {
            windows: WindowConfig {
                length: self.windows.length,
                slide: self.windows.slide,
                exact_limit: self.windows.exact_limit,
            },
            sessions: SessionConfig {
                history_interval: self.sessions.history_interval,
                idle_timeout: self.sessions.idle_timeout,
                retention: self.sessions.retention,
                ..SessionConfig::default()
            },
            rules: RuleSet::new(self.rules.clone()),
            alerts: megamind_dataflows::operators::AlertConfig {
                resolved_retention: self.alerts.resolved_retention,
                escalations: self.alerts.escalations.clone(),
                cooldowns: self
                    .rules
                    .iter()
                    .filter(|rule| !rule.cooldown.is_zero())
                    .map(|rule| (rule.id.to_string(), rule.cooldown))
                    .collect(),
                // Templates were checked by `validate`; a rule whose templates fail here
                // keeps its default title.
                templates: self
                    .rules
                    .iter()
                    .filter(|rule| rule.summary.is_some() || !rule.annotations.is_empty())
                    .filter_map(|rule| Some((rule.id.to_string(), rule.templates().ok()?)))
                    .collect(),
                rule_ids: self.rules.iter().map(|rule| rule.id.to_string()).collect(),
                correctness_series: self.ml.correctness_series,
            },
            models: megamind_dataflows::operators::TrackModelsConfig {
                horizon: self.ml.horizon,
                reference_size: self.ml.reference_size,
                window_size: self.ml.window_size,
                bins: self.ml.bins,
                psi_threshold: self.ml.psi_threshold,
                p_value_threshold: self.ml.p_value_threshold,
                accuracy_drop: self.ml.accuracy_drop,
                adwin_delta: self.ml.adwin_delta,
                evaluate_every: self.ml.evaluate_every,
                models: self.ml.models.clone(),
                correctness_series: self.ml.correctness_series,
            },
            anomaly: self.anomaly.scorer(),
            novelty: self.anomaly.novelty(),
            insights: self.insights.dataflow(),
        }
    }
}

impl InsightsConfig {
    /// Every problem with these settings, as `insights.<field> ...` lines.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, problem: &str| {
            if !ok {
                problems.push(format!("insights.{problem}"));
            }
        };
        let unit_open = |value: f64| value > 0.0 && value < 1.0;
        check(
            self.health_interval >= Duration::from_millis(100),
            "health_interval must be at least 100ms",
        );
        check(self.min_training >= 2, "min_training must be at least 2");
        check(
            self.training_window >= self.min_training,
            "training_window must be at least min_training",
        );
        check(self.retrain_every >= 1, "retrain_every must be at least 1");
        check(self.drift_window >= 1, "drift_window must be at least 1");
        check(unit_open(self.drift_drop), "drift_drop must be in (0, 1)");
        check(
            self.forecast_history >= 3,
            "forecast_history must be at least 3",
        );
        check(
            self.forecast_min_windows >= 3 && self.forecast_min_windows <= self.forecast_history,
            "forecast_min_windows must be between 3 and forecast_history",
        );
        check(
            self.alpha > 0.0 && self.alpha <= 1.0,
            "alpha must be in (0, 1]",
        );
        check(
            self.beta > 0.0 && self.beta <= 1.0,
            "beta must be in (0, 1]",
        );
        check(!self.horizon.is_zero(), "horizon must be positive");
        check(self.reach >= self.horizon, "reach must be at least horizon");
        check(
            unit_open(self.significance),
            "significance must be in (0, 1)",
        );
        check(self.max_series >= 1, "max_series must be at least 1");
        check(
            unit_open(self.low_success_probability),
            "low_success_probability must be in (0, 1)",
        );
        check(
            !self.time_to_threshold.is_zero(),
            "time_to_threshold must be positive",
        );
        check(
            self.memory_limit_bytes > 0,
            "memory_limit_bytes must be positive",
        );
        check(
            self.cpu_limit_percent > 0.0 && self.cpu_limit_percent.is_finite(),
            "cpu_limit_percent must be a positive number",
        );
        check(
            unit_open(self.min_model_accuracy),
            "min_model_accuracy must be in (0, 1)",
        );
        problems
    }

    /// The dataflow's insight settings.
    pub fn dataflow(&self) -> megamind_dataflows::pipelines::InsightsConfig {
        use megamind_dataflows::operators::predict_sessions::TrainerConfig;
        use megamind_dataflows::operators::{ForecastConfig, PredictConfig, RecommendConfig};
        megamind_dataflows::pipelines::InsightsConfig {
            enabled: self.enabled,
            predict: PredictConfig {
                trainer: TrainerConfig {
                    min_training: self.min_training,
                    training_window: self.training_window,
                    retrain_every: self.retrain_every,
                    drift_window: self.drift_window,
                    drift_drop: self.drift_drop,
                    ..TrainerConfig::default()
                },
                min_operations: self.min_operations,
                ..PredictConfig::default()
            },
            forecast: ForecastConfig {
                history: self.forecast_history,
                min_windows: self.forecast_min_windows,
                alpha: self.alpha,
                beta: self.beta,
                horizon: self.horizon,
                reach: self.reach,
                significance: self.significance,
                max_series: self.max_series,
                include_session_series: false,
            },
            recommend: RecommendConfig {
                low_success_probability: self.low_success_probability,
                time_to_threshold: self.time_to_threshold,
                memory_limit_bytes: self.memory_limit_bytes as f64,
                cpu_limit_percent: self.cpu_limit_percent,
                min_model_accuracy: self.min_model_accuracy,
                ..RecommendConfig::default()
            },
        }
    }
}

fn section<T: DeserializeOwned>(
    name: &str,
    value: toml::Value,
    problems: &mut Vec<String>,
) -> Option<T> {
    match T::deserialize(value) {
        Ok(parsed) => Some(parsed),
        Err(error) => {
            problems.push(format!("[{name}]: {}", error.message().trim()));
            None
        }
    }
}

/// Deep-merges `overlay` into `base`: tables merge key by key, everything else replaces.
fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(incoming)) => {
                merge(existing, incoming)
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies `SECTION__KEY=value`: the value is read as a TOML value when it parses as one
/// (numbers, booleans, quoted strings, arrays), else as a bare string.
fn apply_env(table: &mut toml::Table, path: &str, raw: &str) -> Result<(), String> {
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    if keys.iter().any(String::is_empty) {
        return Err("empty key segment".to_owned());
    }
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut parsed) => parsed
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    };
    let (last, parents) = keys.split_last().ok_or_else(|| "empty name".to_owned())?;
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("`{key}` is not a section")),
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests;
