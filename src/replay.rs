//! `megamind replay`: run the pipeline over a JSON-lines file (or stdin) as fast as
//! possible, or at recorded speed, optionally writing every result as JSON lines.
//!
//! The reader thread only finds line boundaries; decoding happens on the workers, each
//! taking whole chunks round-robin. In a cluster every process reads the same file and
//! keeps the chunks destined to its own workers, so the union of the processes' outputs
//! equals a single process's output.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use megamind_connectors::codec::json::split_complete_lines;
use megamind_dataflows::model::decode::decode_event;
use megamind_dataflows::model::Update;
use megamind_dataflows::time::{pace, Clock, Stopwatch, SystemClock};
use serde::Serialize;

use crate::config::Config;
use crate::metrics::EngineMetrics;
use crate::runtime::{
    CountingSink, Engine, EngineConfig, Feeder, SinkFactory, UpdateSink, WorkerMsg,
};

/// Bytes read per chunk.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks queued per worker.
const REPLAY_QUEUE_CHUNKS: usize = 4;
/// Output bytes buffered per worker before they go to the writer thread.
const OUTPUT_FLUSH_BYTES: usize = 1 << 20;

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Input file; `-` reads stdin.
    pub input: PathBuf,
    /// Where to write results (JSON lines), if anywhere.
    pub out: Option<PathBuf>,
    /// Pace events by their timestamps instead of as fast as possible.
    pub realtime: bool,
    /// Speed-up factor for `realtime`.
    pub speed: f64,
}

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input cannot be read.
    #[error("cannot read {path}")]
    Input {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The output cannot be written.
    #[error("cannot write {path}")]
    Output {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The engine failed.
    #[error("engine failed: {0}")]
    Engine(String),
}

/// Totals of a replay, printed as JSON at the end.
#[derive(Debug, Clone, Serialize)]
pub struct ReplaySummary {
    /// Events decoded and processed.
    pub events: u64,
    /// Records rejected, by reason (includes `late`).
    pub rejected: BTreeMap<&'static str, u64>,
    /// Non-empty windows closed.
    pub windows: u64,
    /// Sum of the window counts.
    pub window_count_sum: u64,
    /// Breaching windows.
    pub breaches: u64,
    /// Alert transitions.
    pub alert_transitions: u64,
    /// Wall-clock seconds from start to the last result written.
    pub elapsed_seconds: f64,
    /// Events per second over `elapsed_seconds`.
    pub events_per_second: f64,
    /// Peak resident memory, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Worker threads in this process.
    pub workers: usize,
    /// Times a worker stopped reading because `ingest.max_in_flight_events` were in flight.
    pub backpressure_pauses: u64,
}

/// Writes the results of one worker as JSON lines, in large buffers.
struct FileSink {
    buffer: Vec<u8>,
    writer: SyncSender<Vec<u8>>,
    count_sum: Arc<std::sync::atomic::AtomicU64>,
}

impl UpdateSink for FileSink {
    fn deliver(&mut self, updates: &[Update]) {
        let mut count_sum = 0;
        for update in updates {
            // Intermediate session snapshots depend on batching, and the anomaly counters
            // are per-worker telemetry deltas (they go to /metrics); the history samples
            // and everything else are deterministic.
            if matches!(update, Update::Session(_) | Update::AnomalyCounters(_)) {
                continue;
            }
            if let Update::Window(stats) = update {
                count_sum += stats.count;
            }
            if serde_json::to_writer(&mut self.buffer, update).is_ok() {
                self.buffer.push(b'\n');
            }
        }
        self.count_sum
            .fetch_add(count_sum, std::sync::atomic::Ordering::Relaxed);
        if self.buffer.len() >= OUTPUT_FLUSH_BYTES {
            let full = std::mem::replace(
                &mut self.buffer,
                Vec::with_capacity(OUTPUT_FLUSH_BYTES + 4096),
            );
            let _ = self.writer.send(full);
        }
    }

    fn finish(&mut self) {
        if !self.buffer.is_empty() {
            let _ = self.writer.send(std::mem::take(&mut self.buffer));
        }
    }
}

/// Counts window totals without writing anything.
struct CountSink {
    count_sum: Arc<std::sync::atomic::AtomicU64>,
}

impl UpdateSink for CountSink {
    fn deliver(&mut self, updates: &[Update]) {
        let sum: u64 = updates
            .iter()
            .map(|update| match update {
                Update::Window(stats) => stats.count,
                _ => 0,
            })
            .sum();
        self.count_sum
            .fetch_add(sum, std::sync::atomic::Ordering::Relaxed);
    }
}

fn spawn_writer(
    path: PathBuf,
    chunks: Receiver<Vec<u8>>,
) -> Result<std::thread::JoinHandle<Result<(), ReplayError>>, ReplayError> {
    let file = File::create(&path).map_err(|source| ReplayError::Output {
        path: path.display().to_string(),
        source,
    })?;
    Ok(std::thread::spawn(move || {
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let fail = |source| ReplayError::Output {
            path: path.display().to_string(),
            source,
        };
        for chunk in chunks {
            out.write_all(&chunk).map_err(fail)?;
        }
        out.flush().map_err(fail)
    }))
}

/// Runs a replay to completion.
///
/// # Errors
/// Unreadable input, unwritable output, or an engine failure.
pub fn run(
    config: &Config,
    mut engine_config: EngineConfig,
    options: &ReplayOptions,
) -> Result<ReplaySummary, ReplayError> {
    // Chunks are large; a few per worker keep the workers busy without buffering the file.
    engine_config.queue_capacity = engine_config.queue_capacity.min(REPLAY_QUEUE_CHUNKS);
    let clock = SystemClock;
    let metrics = Arc::new(EngineMetrics::default());
    let count_sum = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (writer_tx, writer_rx) = sync_channel::<Vec<u8>>(16);
    let writer = match &options.out {
        Some(path) => Some(spawn_writer(path.clone(), writer_rx)?),
        None => {
            drop(writer_rx);
            None
        }
    };
    let writing = writer.is_some();
    let sink_metrics = Arc::clone(&metrics);
    let sink_sum = Arc::clone(&count_sum);
    let writer_tx = std::sync::Mutex::new(writer_tx);
    let factory: SinkFactory = Arc::new(move |_worker| {
        let count_sum = Arc::clone(&sink_sum);
        if writing {
            let writer = writer_tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            Box::new(CountingSink::new(
                FileSink {
                    buffer: Vec::with_capacity(OUTPUT_FLUSH_BYTES + 4096),
                    writer,
                    count_sum,
                },
                Arc::clone(&sink_metrics),
            ))
        } else {
            Box::new(CountingSink::new(
                CountSink { count_sum },
                Arc::clone(&sink_metrics),
            ))
        }
    });
    let workers = engine_config.workers;
    let started = Stopwatch::start();
    let engine = Engine::start(engine_config, factory, Arc::clone(&metrics))
        .map_err(|e| ReplayError::Engine(e.to_string()))?;
    let feeder = engine.feeder();
    let (first_worker, total_workers) = engine.worker_range();
    let read_result = if options.realtime {
        feed_realtime(config, &feeder, options, &clock, &metrics)
    } else {
        feed_chunks(
            &feeder,
            options,
            first_worker,
            total_workers,
            clock.now_ms(),
        )
    };
    drop(feeder);
    let engine_result = engine.shutdown();
    read_result?;
    engine_result.map_err(ReplayError::Engine)?;
    if let Some(writer) = writer {
        writer
            .join()
            .map_err(|_| ReplayError::Engine("output writer panicked".to_owned()))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = metrics
        .events_accepted
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok(ReplaySummary {
        events,
        rejected: metrics.rejected_by_reason(),
        windows: metrics.updates_of("window"),
        window_count_sum: count_sum.load(std::sync::atomic::Ordering::Relaxed),
        breaches: metrics.updates_of("breach"),
        alert_transitions: metrics.updates_of("alert"),
        elapsed_seconds: elapsed,
        events_per_second: if elapsed > 0.0 {
            events as f64 / elapsed
        } else {
            0.0
        },
        peak_rss_bytes: crate::metrics::peak_rss_bytes(),
        workers,
        backpressure_pauses: metrics
            .backpressure_pauses
            .load(std::sync::atomic::Ordering::Relaxed),
    })
}

fn open_input(options: &ReplayOptions) -> Result<Box<dyn Read>, ReplayError> {
    if options.input.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    File::open(&options.input)
        .map(|file| Box::new(file) as Box<dyn Read>)
        .map_err(|source| ReplayError::Input {
            path: options.input.display().to_string(),
            source,
        })
}

/// Reads the input in chunks cut at line ends; chunk `k` goes to global worker
/// `k % total_workers`, and this process sends only the chunks of its own workers.
fn feed_chunks(
    feeder: &Feeder,
    options: &ReplayOptions,
    first_worker: usize,
    total_workers: usize,
    now_ms: u64,
) -> Result<(), ReplayError> {
    let mut input = open_input(options)?;
    let local_workers = feeder.workers();
    let mut buffer: Vec<u8> = Vec::with_capacity(CHUNK_BYTES * 2);
    let mut chunk_index = 0usize;
    let send = |chunk: Vec<u8>, chunk_index: usize| -> Result<(), ReplayError> {
        let target = chunk_index % total_workers.max(1);
        if target >= first_worker && target < first_worker + local_workers {
            feeder
                .blocking_send(
                    target - first_worker,
                    WorkerMsg::Lines {
                        chunk,
                        default_ts: now_ms,
                    },
                )
                .map_err(|e| ReplayError::Engine(e.to_string()))?;
        }
        Ok(())
    };
    let mut eof = false;
    while !eof {
        let start = buffer.len();
        buffer.resize(start + CHUNK_BYTES, 0);
        let read = input
            .read(&mut buffer[start..])
            .map_err(|source| ReplayError::Input {
                path: options.input.display().to_string(),
                source,
            })?;
        buffer.truncate(start + read);
        eof = read == 0;
        if buffer.len() < CHUNK_BYTES && !eof {
            continue;
        }
        let (complete, tail) = if eof {
            (&buffer[..], &buffer[..0])
        } else {
            split_complete_lines(&buffer)
        };
        if !complete.is_empty() {
            let chunk = complete.to_vec();
            let tail = tail.to_vec();
            send(chunk, chunk_index)?;
            chunk_index += 1;
            buffer.clear();
            buffer.extend_from_slice(&tail);
        }
    }
    Ok(())
}

/// Paces events by their timestamps (divided by `speed`), decoding on the reader thread.
fn feed_realtime(
    config: &Config,
    feeder: &Feeder,
    options: &ReplayOptions,
    clock: &SystemClock,
    metrics: &EngineMetrics,
) -> Result<(), ReplayError> {
    use std::io::BufRead;
    let input = std::io::BufReader::new(open_input(options)?);
    let limits = config.ingest.decode_limits();
    let speed = if options.speed.is_finite() && options.speed > 0.0 {
        options.speed
    } else {
        1.0
    };
    let started = Stopwatch::start();
    let mut first_ts: Option<u64> = None;
    let mut batch = Vec::new();
    let mut worker = 0usize;
    let workers = feeder.workers().max(1);
    let flush = |batch: &mut Vec<_>, worker: &mut usize| -> Result<(), ReplayError> {
        if batch.is_empty() {
            return Ok(());
        }
        feeder
            .blocking_send(*worker, WorkerMsg::Events(std::mem::take(batch)))
            .map_err(|e| ReplayError::Engine(e.to_string()))?;
        *worker = (*worker + 1) % workers;
        Ok(())
    };
    for line in input.lines() {
        let line = line.map_err(|source| ReplayError::Input {
            path: options.input.display().to_string(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let event = match decode_event(line.as_bytes(), &limits, clock.now_ms()) {
            Ok(event) => event,
            Err(error) => {
                metrics.reject(error.reason, 1);
                continue;
            }
        };
        let first = *first_ts.get_or_insert(event.ts);
        let due = Duration::from_secs_f64(event.ts.saturating_sub(first) as f64 / 1000.0 / speed);
        let elapsed = started.elapsed();
        if due > elapsed {
            flush(&mut batch, &mut worker)?;
            pace(due - elapsed);
        }
        batch.push(event);
        if batch.len() >= 1024 {
            flush(&mut batch, &mut worker)?;
        }
    }
    flush(&mut batch, &mut worker)
}
