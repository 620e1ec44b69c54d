//! The `megamind` command line.

// mimalloc: the pipeline allocates many small objects across threads; measured lower RSS
// and higher throughput than the system allocator on workload P1 (see README).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use megamind::app::{RunOptions, Server, ServerOptions};
use megamind::bench::{BenchMode, BenchOptions};
use megamind::config::Config;
use megamind::replay::ReplayOptions;
use megamind::runtime::ClusterConfig;

/// Real-time analytics and monitoring server on timely dataflow.
#[derive(Debug, Parser)]
#[command(name = "megamind", version, about)]
struct Cli {
    /// TOML configuration file (layered over the built-in defaults).
    #[arg(long, global = true, env = "MEGAMIND_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter (tracing syntax), for example `info` or `megamind=debug`.
    #[arg(
        long,
        global = true,
        default_value = "info,rmcp=warn",
        env = "MEGAMIND_LOG"
    )]
    log: String,
    /// Let the kernel back the heap with transparent huge pages. Off by default: the
    /// first touch of a huge page clears 2 MB inside whatever operator touched it (a
    /// window close, an alert), which showed up as millisecond stalls on the alert path.
    #[arg(long, global = true, env = "MEGAMIND_HUGE_PAGES")]
    huge_pages: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run all services on the embedded default.
    Serve(ServeArgs),
    /// Serve plus built-in synthetic traffic.
    Demo(ServeArgs),
    /// Run the pipeline over a JSON-lines file (or `-` for stdin).
    Replay(ReplayArgs),
    /// The load harness: prints a JSON report.
    Bench(BenchArgs),
    /// Serve MCP over stdio (for MCP hosts that launch megamind as a subprocess).
    Mcp(McpArgs),
    /// Write events to a Kafka topic (a JSON-lines file or demo traffic); prints a JSON report.
    Produce(ProduceArgs),
    /// Score the anomaly detectors on series in the Numenta Anomaly Benchmark format.
    Nab(NabArgs),
}

#[derive(Debug, Args)]
struct NabArgs {
    /// Directory of NAB `timestamp,value` CSV files (searched recursively).
    #[arg(long)]
    data: PathBuf,
    /// JSON file mapping each data file to its `[start, end]` anomaly windows.
    #[arg(long)]
    labels: PathBuf,
    /// NAB cost profile.
    #[arg(long, value_enum, default_value_t = megamind::nab::Profile::Standard)]
    profile: megamind::nab::Profile,
    /// Print the full report (with every detection's row) as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// Topic to write (default: the first of `kafka.topics`).
    #[arg(long)]
    topic: Option<String>,
    /// Brokers (default: `kafka.brokers`).
    #[arg(long)]
    brokers: Option<String>,
    /// JSON-lines file, `-` for stdin; without it, demo traffic.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Events per second; 0 sends flat out.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this long (for example `30s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Kafka timestamp of each message.
    #[arg(long, value_enum, default_value_t = megamind::produce::TimestampSource::Event)]
    timestamp: megamind::produce::TimestampSource,
}

#[derive(Debug, Args)]
struct McpArgs {
    /// Also run the synthetic traffic generator.
    #[arg(long)]
    demo: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Clone, Args)]
struct ClusterArgs {
    /// Worker threads in this process.
    #[arg(long, short = 'w', default_value_t = default_workers())]
    workers: usize,
    /// Processes in the timely cluster.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// This process's index in the cluster.
    #[arg(long, default_value_t = 0)]
    process_id: usize,
    /// File with one `host:port` per process (required with --processes > 1).
    #[arg(long)]
    hostfile: Option<PathBuf>,
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

impl ClusterArgs {
    fn run_options(&self) -> anyhow::Result<RunOptions> {
        let cluster = if self.processes > 1 {
            let path = self
                .hostfile
                .as_ref()
                .context("--hostfile is required with --processes > 1")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let addresses: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::to_owned)
                .collect();
            if addresses.len() != self.processes {
                return Err(anyhow::Error::msg(format!(
                    "{} lists {} addresses but --processes is {}",
                    path.display(),
                    addresses.len(),
                    self.processes
                )));
            }
            if self.process_id >= self.processes {
                return Err(anyhow::Error::msg("--process-id must be below --processes"));
            }
            Some(ClusterConfig {
                process: self.process_id,
                addresses,
            })
        } else {
            None
        };
        Ok(RunOptions {
            workers: self.workers.max(1),
            cluster,
            config_path: None,
        })
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// HTTP listen address (overrides server.http_listen).
    #[arg(long)]
    http: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
struct ReplayArgs {
    /// JSON-lines input; `-` reads stdin.
    input: PathBuf,
    /// Write every result as JSON lines here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Pace events by their timestamps.
    #[arg(long)]
    realtime: bool,
    /// Speed-up factor with --realtime.
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = BenchMode::Pipeline)]
    mode: BenchMode,
    /// Offered events per second (0: flat out).
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// How long to offer load (humantime, e.g. 20s).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Distinct series.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Input file (replay mode).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Concurrent clients (mcp mode).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Events per call (mcp mode).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Topic partitions (`kafka` mode).
    #[arg(long, default_value_t = 4)]
    partitions: usize,
    /// Brokers (`kafka` mode); default: librdkafka's in-process mock cluster.
    #[arg(long)]
    brokers: Option<String>,
    /// Rules (alerts mode).
    #[arg(long, default_value_t = 1000)]
    rules: usize,
    /// Window length override (humantime).
    #[arg(long, value_parser = humantime::parse_duration)]
    window: Option<Duration>,
    /// Window slide override (humantime).
    #[arg(long, value_parser = humantime::parse_duration)]
    slide: Option<Duration>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Loads the configuration; on failure prints every problem and exits with status 2
/// (a configuration error is the user's to fix, not a crash with a backtrace).
fn load_config(path: Option<&PathBuf>) -> Config {
    match Config::load(path.map(PathBuf::as_path), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprint!("{error}");
            std::process::exit(2);
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs go to stderr so stdout stays machine-readable (JSON reports, MCP stdio).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Turns transparent huge pages off for this process unless asked to keep them (see
/// `--huge-pages`); the kernel's own setting applies otherwise.
fn set_huge_pages(wanted: bool) {
    #[cfg(target_os = "linux")]
    if !wanted {
        if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
            tracing::warn!(%error, "could not turn transparent huge pages off");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = wanted;
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.log);
    set_huge_pages(cli.huge_pages);
    let mut config = load_config(cli.config.as_ref());
    match cli.command {
        Command::Serve(args) => serve(config, args, false, cli.config.clone()),
        Command::Demo(args) => serve(config, args, true, cli.config.clone()),
        Command::Mcp(args) => mcp_stdio(config, args),
        Command::Produce(args) => {
            let mut kafka = config.kafka.clone();
            if let Some(brokers) = args.brokers {
                kafka.brokers = brokers;
            }
            let topic = args
                .topic
                .or_else(|| kafka.topics.first().cloned())
                .context("no topic: give --topic or kafka.topics")?;
            let demo_requested = args.input.is_none();
            if demo_requested && args.count.is_none() && args.duration.is_none() {
                anyhow::bail!(
                    "demo traffic never ends: give --count or --duration (or --input FILE)"
                );
            }
            let report = megamind::produce::run(&megamind::produce::ProduceOptions {
                kafka,
                topic,
                input: match args.input {
                    Some(path) => megamind::produce::ProduceInput::File(path),
                    None => megamind::produce::ProduceInput::Demo(config.demo.clone()),
                },
                rate: args.rate,
                count: args.count,
                duration: args.duration,
                timestamp: args.timestamp,
            })
            .context("produce failed")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.failed > 0 {
                anyhow::bail!("{} messages were not acknowledged", report.failed);
            }
            Ok(())
        }
        Command::Replay(args) => {
            let run = args.cluster.run_options()?;
            let engine_config = run.engine_config(&config);
            let summary = megamind::replay::run(
                &config,
                engine_config,
                &ReplayOptions {
                    input: args.input,
                    out: args.out,
                    realtime: args.realtime,
                    speed: args.speed,
                },
            )
            .context("replay failed")?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
        Command::Nab(args) => {
            let report = megamind::nab::run(
                &args.data,
                &args.labels,
                args.profile,
                &config.anomaly.detectors(),
            )
            .context("nab failed")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", megamind::nab::render(&report));
            }
            Ok(())
        }
        Command::Bench(args) => {
            if let Some(window) = args.window {
                config.windows.length = window;
            }
            if let Some(slide) = args.slide {
                config.windows.slide = slide;
            }
            let run = args.cluster.run_options()?;
            let engine_config = run.engine_config(&config);
            let report = megamind::bench::run(
                &config,
                engine_config,
                &BenchOptions {
                    mode: args.mode,
                    rate: args.rate,
                    duration: args.duration,
                    keys: args.keys,
                    file: args.file,
                    clients: args.clients,
                    batch: args.batch,
                    partitions: args.partitions,
                    brokers: args.brokers,
                    rules: args.rules,
                },
            )
            .context("bench failed")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

fn serve(
    mut config: Config,
    args: ServeArgs,
    demo: bool,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    if let Some(http) = args.http {
        config.server.http_listen = http;
    }
    let mut run = args.cluster.run_options()?;
    run.config_path.clone_from(&config_path);
    let runtime = tokio_runtime()?;
    let mcp_enabled = config.mcp.enabled;
    let mcp_auth = config.mcp.auth_token.is_some();
    runtime.block_on(async move {
        let server = Server::start(config, run, ServerOptions { demo, http: true })
            .await
            .context("cannot start the server")?;
        let Some(address) = server.http_address else {
            return Err(anyhow::Error::msg("the HTTP server did not start"));
        };
        eprintln!(
            "megamind is running{}",
            if demo { " with demo traffic" } else { "" }
        );
        eprintln!("  dashboard  http://{address}/");
        eprintln!("  ingest     POST http://{address}/v1/events");
        eprintln!(
            "  queries    http://{address}/v1/metrics  /v1/sessions  /v1/breaches  /v1/status"
        );
        eprintln!("  metrics    http://{address}/metrics   health: http://{address}/healthz");
        if let Some(live) = &server.live {
            eprintln!(
                "  websocket  ws://{}/ (analytics)  ws://{}/ (sessions)",
                live.analytics, live.sessions
            );
        }
        if mcp_enabled {
            eprintln!(
                "  mcp        http://{address}/mcp{}",
                if mcp_auth {
                    "   (bearer token required)"
                } else {
                    ""
                }
            );
        }
        eprintln!("press Ctrl-C to stop");
        wait_for_signal(|| reload_config(&server)).await;
        eprintln!("stopping: flushing open windows");
        server.stop().await.map_err(anyhow::Error::msg)
    })
}

/// The runtime for network services (two threads: the timely workers have their own).
fn tokio_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

/// `megamind mcp`: the engine with the embedded default, serving MCP over stdio until
/// the client closes stdin. stdout carries only JSON-RPC; logs go to stderr.
fn mcp_stdio(config: Config, args: McpArgs) -> anyhow::Result<()> {
    let run = args.cluster.run_options()?;
    let runtime = tokio_runtime()?;
    runtime.block_on(async move {
        let server = Server::start(
            config,
            run,
            ServerOptions {
                demo: args.demo,
                http: false,
            },
        )
        .await
        .context("cannot start the server")?;
        let result = megamind::mcp::stdio::serve(std::sync::Arc::clone(&server.mcp)).await;
        server.stop().await.map_err(anyhow::Error::msg)?;
        result.map_err(|error| anyhow::Error::msg(error.to_string()))
    })
}

/// SIGHUP: reloads `[[rules]]` and `[[alerts.silences]]` from the config file as alert
/// commands (only the differences); a file with problems changes nothing (the problems are
/// logged).
async fn reload_config(server: &Server) {
    let state = &server.mcp.app;
    match megamind::rule_reload::reload(state, state.config_path.as_deref()).await {
        Ok(report) if report.accepted == 0 => {
            tracing::info!(path = %report.path, "config reloaded: no change");
        }
        Ok(report) => tracing::info!(
            path = %report.path,
            rules = ?report.rules,
            silences = ?report.silences,
            accepted = report.accepted,
            "config reloaded"
        ),
        Err(megamind::rule_reload::ReloadError::NoConfigFile) => {
            tracing::warn!("SIGHUP ignored: no --config file to reload rules from");
        }
        Err(error @ megamind::rule_reload::ReloadError::Invalid { .. }) => {
            tracing::error!(problems = %error, "rules not reloaded: the config file has problems");
        }
        Err(error) => tracing::error!(error = %error, "rules not reloaded"),
    }
}

/// Waits for Ctrl-C or SIGTERM; runs `on_hangup` on every SIGHUP meanwhile.
async fn wait_for_signal<F, Fut>(mut on_hangup: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = match signal(SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        let mut hangup = signal(SignalKind::hangup()).ok();
        tokio::pin!(ctrl_c);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => break,
                _ = terminate.recv() => break,
                Some(()) = async {
                    match hangup.as_mut() {
                        Some(hangup) => hangup.recv().await,
                        None => std::future::pending().await,
                    }
                } => on_hangup().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = &mut on_hangup;
        let _ = ctrl_c.await;
    }
}
