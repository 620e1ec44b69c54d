//! Wiring of a running server: engine, views, ingest, idle ticker, HTTP, demo traffic.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::serve::ListenerExt;
use megamind_connectors::notify::route::{run_dispatcher, DispatchHandle, DispatchOptions};
use megamind_connectors::notify::Notifier;
use megamind_connectors::store::rate_limits::RateLimitJournal;
use megamind_connectors::store::EventLog;
use megamind_dataflows::time::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use tokio_util::sync::CancellationToken;

use crate::http::{router, AppState};
use crate::ingest::Ingest;
use crate::kafka::KafkaRuntime;
use crate::mcp::{Facts, McpContext};
use crate::metrics::EngineMetrics;
use crate::runtime::{
    AlertDispatch, ClusterConfig, CountingSink, Engine, EngineConfig, SinkFactory, UpdateSink,
    ViewsSink,
};
use crate::services::Services;
use crate::views::Views;

/// How this process runs (flags, not configuration).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Worker threads.
    pub workers: usize,
    /// Cluster placement.
    pub cluster: Option<ClusterConfig>,
    /// The config file, for reloads (SIGHUP, `POST /v1/reload`, WebSocket admin `reload`).
    pub config_path: Option<std::path::PathBuf>,
}

impl RunOptions {
    /// The engine configuration for `config`.
    pub fn engine_config(&self, config: &Config) -> EngineConfig {
        EngineConfig {
            workers: self.workers.max(1),
            cluster: self.cluster.clone(),
            analytics: config.analytics(),
            allowed_lateness: config.ingest.allowed_lateness,
            queue_capacity: config.ingest.queue_capacity,
            limits: config.ingest.decode_limits(),
            kafka: None,
            max_in_flight: config.ingest.max_in_flight_events,
        }
    }
}

/// What to run besides the engine.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    /// Synthetic traffic.
    pub demo: bool,
    /// The HTTP server (API, dashboard, `/mcp`); off for `megamind mcp` over stdio.
    pub http: bool,
}

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The engine did not start.
    #[error(transparent)]
    Engine(#[from] crate::runtime::EngineError),
    /// A WebSocket server could not start.
    #[error(transparent)]
    Live(#[from] crate::live::LiveError),
    /// The event log could not be replayed or opened.
    #[error("event log: {0}")]
    Store(String),
    /// Kafka could not be set up (brokers, topics, store, producer).
    #[error("{0}")]
    Kafka(String),
    /// The HTTP port could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running server.
pub struct Server {
    engine: Option<Engine>,
    /// Live intake.
    pub ingest: Arc<Ingest>,
    /// Query views.
    pub views: Arc<Views>,
    /// Counters.
    pub metrics: Arc<EngineMetrics>,
    /// Switchable services.
    pub services: Arc<Services>,
    /// What MCP connections share.
    pub mcp: Arc<McpContext>,
    /// The WebSocket servers, when running.
    pub live: Option<crate::live::LiveServers>,
    /// The bound HTTP address (none when serving MCP over stdio only).
    pub http_address: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    mcp_shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    /// The Kafka source and outputs, when configured.
    pub kafka: Option<Arc<std::sync::Mutex<KafkaRuntime>>>,
    dispatcher: JoinHandle<()>,
    dispatch: DispatchHandle,
    /// Where the rate limit's counts are kept (closed last on stop).
    rate_limits: Option<Arc<RateLimitJournal>>,
}

impl Server {
    /// Starts everything; with `demo`, also the synthetic traffic generator.
    ///
    /// # Errors
    /// The engine fails to start or the HTTP address cannot be bound.
    pub async fn start(
        config: Config,
        run: RunOptions,
        options: ServerOptions,
    ) -> Result<Server, ServerError> {
        let demo = options.demo;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let metrics = Arc::new(EngineMetrics::default());
        let views = Arc::new(Views::new(
            config.views.clone(),
            config.sessions.history_length,
            Arc::clone(&metrics),
        ));
        views.seed_registry(&config.ml.models);
        views.set_rules(&config.rules);
        let sink_views = Arc::clone(&views);
        let sink_metrics = Arc::clone(&metrics);
        // Notifications: channels with their delivery tasks, and the routing/grouping
        // dispatcher fed (without blocking) by the workers' sinks.
        let notifier = Arc::new(Notifier::start(&config.alerts.notify, Arc::clone(&clock)));
        let store_path = config
            .store
            .path_for(run.cluster.as_ref().map(|cluster| cluster.process));
        // The rate limit's deferral counts are not a function of the event log (the limit
        // acts on the wall clock): they are kept in the store and continue after a restart.
        let mut dispatch_options = DispatchOptions::default();
        let mut rate_limits = None;
        if config.store.enabled {
            let store_error = |error: megamind_connectors::store::StoreError| {
                ServerError::Store(error.to_string())
            };
            let (journal, restored) = RateLimitJournal::open(&store_path).map_err(store_error)?;
            let journal = Arc::new(journal);
            dispatch_options.restored = restored;
            let hook_journal = Arc::clone(&journal);
            dispatch_options.on_rate_limited =
                Some(Arc::new(move |counts| hook_journal.record(counts)));
            rate_limits = Some(journal);
        }
        let (dispatch_handle, dispatcher) = run_dispatcher(
            config.alerts.routing.clone(),
            config.alerts.public_url.clone(),
            config.alerts.dispatch_queue,
            Arc::clone(&notifier),
            Arc::clone(&clock),
            dispatch_options,
        );
        let dispatch = AlertDispatch {
            handle: dispatch_handle.clone(),
            arm_after: Arc::new(AtomicU64::new(u64::MAX)),
        };
        let arm_after = Arc::clone(&dispatch.arm_after);
        let mut engine_config = run.engine_config(&config);
        let local_workers = engine_config.workers;
        let process = run.cluster.as_ref().map(|cluster| cluster.process);
        let (first_worker, total_workers) = match &run.cluster {
            Some(cluster) => (
                cluster.process * local_workers,
                cluster.addresses.len() * local_workers,
            ),
            None => (0, local_workers),
        };
        let mut kafka = if config.kafka.enabled {
            let kafka_config = config.clone();
            let (runtime, inputs) = tokio::task::spawn_blocking(move || {
                KafkaRuntime::prepare(
                    &kafka_config,
                    first_worker,
                    local_workers,
                    total_workers,
                    process,
                )
            })
            .await
            .map_err(|error| ServerError::Kafka(error.to_string()))?
            .map_err(ServerError::Kafka)?;
            engine_config.kafka = Some(inputs);
            Some(runtime)
        } else {
            None
        };
        let sink_parts = kafka.as_ref().map(KafkaRuntime::sink_parts);
        let factory: SinkFactory = Arc::new(move |worker| {
            let sink: Box<dyn UpdateSink> = Box::new(CountingSink::new(
                ViewsSink::new(Arc::clone(&sink_views)).with_alert_dispatch(dispatch.clone()),
                Arc::clone(&sink_metrics),
            ));
            match &sink_parts {
                Some(parts) => parts.wrap(worker.saturating_sub(first_worker), sink),
                None => sink,
            }
        });
        let workers = engine_config.workers;
        let engine_metrics = Arc::clone(&metrics);
        let engine = tokio::task::spawn_blocking(move || {
            Engine::start(engine_config, factory, engine_metrics)
        })
        .await
        .map_err(|_| crate::runtime::EngineError::WorkerStart(0))??;
        // Replay the event log (what was accepted before a crash or restart) before any
        // live traffic or wall-clock watermark, then open it for appends.
        let mut replayed_to = 0;
        let log = if config.store.enabled {
            let replayer = Ingest::new(
                engine.feeder(),
                Arc::clone(&clock),
                config.ingest.clone(),
                Arc::clone(&metrics),
                None,
            );
            let replayed = replayer
                .replay_log(&store_path)
                .await
                .map_err(ServerError::Store)?;
            if replayed.batches > 0 {
                tracing::info!(
                    batches = replayed.batches,
                    events = replayed.events,
                    path = %store_path.display(),
                    "replayed the event log"
                );
            }
            // Alert changes re-derived from the replayed events were notified before the
            // restart: notify only what comes after them.
            arm_after.store(replayed.max_ts, Ordering::Release);
            replayed_to = replayed.max_ts;
            if replayed.events > 0 {
                // Live input (alert commands enter at the watermark) starts after the
                // replayed times, so its alert changes are told apart from replayed ones.
                engine
                    .feeder()
                    .advance_all(replayed.max_ts.saturating_add(1));
            }
            Some(
                EventLog::open(&store_path)
                    .map_err(|error| ServerError::Store(error.to_string()))?,
            )
        } else {
            arm_after.store(0, Ordering::Release);
            None
        };
        if let Some(kafka) = kafka.as_mut() {
            kafka
                .start_source(&config, engine.feeder(), Arc::clone(&clock))
                .map_err(ServerError::Kafka)?;
        }
        let kafka = kafka.map(|kafka| Arc::new(std::sync::Mutex::new(kafka)));
        let services = Arc::new(Services::new(
            Arc::clone(&clock),
            Arc::clone(&metrics),
            demo,
        ));
        let ingest = Arc::new(
            Ingest::new(
                engine.feeder(),
                Arc::clone(&clock),
                config.ingest.clone(),
                Arc::clone(&metrics),
                log,
            )
            .with_services(Arc::clone(&services)),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(
            Arc::clone(&ingest).run_idle_ticker(shutdown_rx.clone()),
        ));
        tasks.push(tokio::spawn(
            Arc::clone(&ingest).run_pruner(config.store.retention, shutdown_rx.clone()),
        ));
        tasks.push(tokio::spawn(
            Arc::clone(&services).run_rate_sampler(shutdown_rx.clone()),
        ));
        if config.insights.enabled && config.insights.self_monitoring && config.kafka.enabled {
            tracing::info!(
                "self-monitoring off: events come from Kafka with their own event times"
            );
        }
        if config.insights.enabled && config.insights.self_monitoring && !config.kafka.enabled {
            tasks.push(tokio::spawn(crate::health::run_health_sampler(
                Arc::clone(&ingest),
                config.insights.health_interval,
                shutdown_rx.clone(),
            )));
        }

        let state = AppState {
            ingest: Arc::clone(&ingest),
            views: Arc::clone(&views),
            metrics: Arc::clone(&metrics),
            started_ms: clock.now_ms(),
            workers,
            services: Arc::clone(&services),
            live: Arc::new(std::sync::OnceLock::new()),
            kafka: kafka.clone(),
            notifier: Arc::clone(&notifier),
            dispatch: dispatch_handle.clone(),
            config_path: run.config_path.clone().map(Into::into),
        };
        // Config silences enter the log once the replayed part of it is in the views; in a
        // cluster only process 0 issues them (silence commands reach every worker anyway).
        if process.unwrap_or(0) == 0 {
            tasks.push(tokio::spawn(crate::rule_reload::issue_config_silences(
                state.clone(),
                config.alerts.silences.clone(),
                replayed_to,
            )));
        }
        let live_endpoints = Arc::clone(&state.live);
        let mcp_shutdown = CancellationToken::new();
        let mcp = McpContext::new(
            state.clone(),
            Facts {
                window_length: config.windows.length,
                window_slide: config.windows.slide,
                max_batch_events: config.ingest.max_batch_events,
            },
            mcp_shutdown.clone(),
        );
        tasks.push(tokio::spawn(crate::mcp::run_subscription_fan_out(
            Arc::clone(&mcp),
        )));
        let live = if options.http && config.websocket.enabled {
            let offset = run
                .cluster
                .as_ref()
                .map_or(0, |cluster| cluster.process as u16);
            let live = crate::live::start(
                &config.websocket,
                Arc::clone(&mcp),
                &shutdown_rx,
                offset,
                &mut tasks,
            )
            .await
            .map_err(ServerError::Live)?;
            let _ = live_endpoints.set(crate::http::LiveEndpoints {
                analytics_port: live.analytics.port(),
                sessions_port: live.sessions.port(),
            });
            Some(live)
        } else {
            None
        };

        let http_address = if options.http {
            let mut address = config.server.http_listen;
            if let Some(cluster) = &run.cluster {
                // Each process of a cluster serves its own HTTP port: base + process index.
                address.set_port(address.port().saturating_add(cluster.process as u16));
            }
            let listener = TcpListener::bind(address)
                .await
                .map_err(|source| ServerError::Bind { address, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::Bind { address, source })?;
            let mut app = router(state, config.ingest.max_body_bytes);
            if config.mcp.enabled {
                let service = crate::mcp::http_service(Arc::clone(&mcp), &config.mcp.allowed_hosts);
                let mut mcp_routes = axum::Router::new().nest_service("/mcp", service);
                if let Some(token) = &config.mcp.auth_token {
                    let token: Arc<str> = token.expose().into();
                    mcp_routes = mcp_routes.layer(axum::middleware::from_fn_with_state(
                        token,
                        crate::http::require_bearer,
                    ));
                }
                app = app.merge(mcp_routes);
                tracing::info!(
                    url = %format!("http://{bound}/mcp"),
                    auth = if config.mcp.auth_token.is_some() { "bearer token required" } else { "open (loopback only)" },
                    "MCP over Streamable HTTP"
                );
            }
            let mut http_shutdown = shutdown_rx.clone();
            tasks.push(tokio::spawn(async move {
                // Small responses (JSON, one SSE event) must not wait for Nagle's algorithm.
                let listener = listener.tap_io(|stream| {
                    if let Err(error) = stream.set_nodelay(true) {
                        tracing::debug!(error = %error, "cannot set TCP_NODELAY");
                    }
                });
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = http_shutdown.changed().await;
                    })
                    .await;
                if let Err(error) = served {
                    tracing::error!(error = %error, "http server failed");
                }
            }));
            if !bound.ip().is_loopback() {
                tracing::warn!(address = %bound, "HTTP ingest and queries listen beyond loopback without authentication");
            }
            Some(bound)
        } else {
            None
        };
        if demo {
            tasks.push(tokio::spawn(crate::demo::run(
                Arc::clone(&ingest),
                Arc::clone(&services),
                config.demo.clone(),
                shutdown_rx.clone(),
            )));
        }
        Ok(Server {
            engine: Some(engine),
            ingest,
            views,
            metrics,
            services,
            mcp,
            live,
            http_address,
            shutdown,
            mcp_shutdown,
            tasks,
            kafka,
            dispatcher,
            dispatch: dispatch_handle,
            rate_limits,
        })
    }

    /// Stops the tasks, closes the inputs, flushes the dataflow and joins the workers.
    ///
    /// # Errors
    /// A worker panicked.
    pub async fn stop(mut self) -> Result<(), String> {
        let _ = self.shutdown.send(true);
        self.mcp_shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        // Every holder of the intake must be gone before the engine can close its inputs:
        // the MCP context holds one too.
        let Server {
            engine,
            ingest,
            views,
            mcp,
            kafka,
            dispatcher,
            dispatch,
            rate_limits,
            ..
        } = self;
        drop(mcp);
        drop(ingest);
        drop(views);
        // Kafka first: the consumers stop (and commit), and from here on outputs are
        // partial (windows flushed at shutdown) and not recorded.
        if let Some(kafka) = &kafka {
            let kafka = Arc::clone(kafka);
            let _ = tokio::task::spawn_blocking(move || {
                kafka
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .stop_source();
            })
            .await;
        }
        let stopped = match engine {
            Some(engine) => tokio::task::spawn_blocking(move || engine.shutdown())
                .await
                .map_err(|error| error.to_string())?,
            None => Ok(()),
        };
        if let Some(kafka) = kafka {
            let _ = tokio::task::spawn_blocking(move || {
                if let Ok(kafka) = Arc::try_unwrap(kafka) {
                    kafka
                        .into_inner()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .close();
                }
            })
            .await;
        }
        // Groups still waiting for their group_wait are not sent on shutdown.
        drop(dispatch);
        dispatcher.abort();
        let _ = dispatcher.await;
        // After the dispatcher: its last counts are stored before the process exits.
        if let Some(journal) = rate_limits {
            let _ = tokio::task::spawn_blocking(move || journal.close()).await;
        }
        stopped
    }
}
