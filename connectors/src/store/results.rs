//! The results store: closed windows, breaches and alert transitions, keyed by kind, key
//! and output time, with the *durable frontier* (every result before it is committed).
//!
//! Writes are idempotent (`INSERT OR IGNORE` on the whole row), so a result recomputed
//! after a crash is recognised as already delivered. Each local worker sends its rows and
//! then its output frontier through one bounded queue; a transaction commits the rows and
//! the smallest frontier every worker has passed, so the stored frontier never claims a
//! result that is not stored. A full queue makes the worker wait (backpressure into the
//! dataflow and from there to the sources), it never drops.
//!
//! When results also leave through another durable path (the Kafka output topics), the
//! store is opened with that path's delivered frontier as a *bound*: the stored frontier
//! never passes it. A restart suppresses everything before the stored frontier, so a
//! result stored but not yet produced when the process died is recomputed and produced
//! again instead of being lost to the topic (re-storing it is a no-op).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::{params, Connection, OptionalExtension};

use super::{connect, sqlite, StoreError};

/// Messages queued before workers wait.
const RESULTS_QUEUE: usize = 1024;
/// Most messages folded into one transaction.
const GROUP_MAX: usize = 256;
/// How often the writer looks at the bound while it holds the frontier back.
const BOUND_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// One stored result.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResultRow {
    /// `window`, `breach`, `alert` (transition), `alert_record`, `series_idle`.
    pub kind: String,
    /// The identity within the kind (series key, rule and series, fingerprint, alert id).
    pub key: String,
    /// Output time (the window end; the transition time), ms.
    pub time: u64,
    /// The result as JSON.
    pub body: String,
}

enum ResultsMsg {
    Rows(Vec<ResultRow>),
    Frontier { worker: usize, frontier: u64 },
}

/// A worker's handle on the store.
#[derive(Clone)]
pub struct ResultsHandle {
    sender: SyncSender<ResultsMsg>,
    waits: Arc<AtomicU64>,
}

impl std::fmt::Debug for ResultsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultsHandle").finish_non_exhaustive()
    }
}

impl ResultsHandle {
    fn send(&self, message: ResultsMsg) {
        match self.sender.try_send(message) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(message)) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                let _ = self.sender.send(message);
            }
        }
    }

    /// Queues rows.
    pub fn rows(&self, rows: Vec<ResultRow>) {
        if !rows.is_empty() {
            self.send(ResultsMsg::Rows(rows));
        }
    }

    /// Reports that local `worker` has delivered every result before `frontier`.
    pub fn frontier(&self, worker: usize, frontier: u64) {
        self.send(ResultsMsg::Frontier { worker, frontier });
    }
}

/// The store and its writer thread.
pub struct ResultsStore {
    path: PathBuf,
    handle: Option<ResultsHandle>,
    writer: Option<JoinHandle<()>>,
    durable: Arc<AtomicU64>,
    start_frontier: u64,
}

impl std::fmt::Debug for ResultsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultsStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    connect(
        path,
        "CREATE TABLE IF NOT EXISTS results (
                 kind TEXT NOT NULL,
                 key TEXT NOT NULL,
                 time INTEGER NOT NULL,
                 digest INTEGER NOT NULL,
                 body TEXT NOT NULL,
                 PRIMARY KEY (kind, key, time, digest)
             );
             CREATE TABLE IF NOT EXISTS results_meta (
                 name TEXT PRIMARY KEY,
                 value INTEGER NOT NULL
             );",
    )
}

fn stored_frontier(connection: &Connection, path: &Path) -> Result<u64, StoreError> {
    let value: Option<i64> = connection
        .query_row(
            "SELECT value FROM results_meta WHERE name = 'frontier'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite(path))?;
    Ok(value
        .and_then(|value| u64::try_from(value).ok())
        .unwrap_or(0))
}

impl ResultsStore {
    /// Opens (or creates) the store for `local_workers` workers. With `bound`, the stored
    /// frontier never passes that frontier either (see the module documentation).
    ///
    /// # Errors
    /// The database cannot be opened.
    pub fn open(
        path: &Path,
        local_workers: usize,
        bound: Option<Arc<AtomicU64>>,
    ) -> Result<ResultsStore, StoreError> {
        let connection = open_connection(path)?;
        // The writer inserts rows keyed by series all over the primary-key index: with
        // SQLite's default 2 MB page cache most inserts re-read index pages, and the
        // default checkpoint every 1,000 WAL pages copies the same hot pages again and
        // again (together three quarters of the writer's time at 1 M events).
        connection
            .execute_batch(
                "PRAGMA cache_size = -65536;
                 PRAGMA wal_autocheckpoint = 16384;",
            )
            .map_err(sqlite(path))?;
        let start_frontier = stored_frontier(&connection, path)?;
        let durable = Arc::new(AtomicU64::new(start_frontier));
        let (sender, receiver) = sync_channel(RESULTS_QUEUE);
        let writer = {
            let writer_path = path.to_path_buf();
            let durable = Arc::clone(&durable);
            std::thread::Builder::new()
                .name("megamind-results".into())
                .spawn(move || {
                    if let Err(error) = write_loop(
                        &connection,
                        &writer_path,
                        &receiver,
                        local_workers.max(1),
                        &durable,
                        bound.as_deref(),
                    ) {
                        tracing::error!(%error, "results store writer stopped");
                    }
                })
                .map_err(|source| StoreError::Thread {
                    path: path.display().to_string(),
                    source,
                })?
        };
        Ok(ResultsStore {
            path: path.to_path_buf(),
            handle: Some(ResultsHandle {
                sender,
                waits: Arc::new(AtomicU64::new(0)),
            }),
            writer: Some(writer),
            durable,
            start_frontier,
        })
    }

    /// A handle for the workers.
    pub fn handle(&self) -> Option<ResultsHandle> {
        self.handle.clone()
    }

    /// The frontier stored when the store was opened: results before it were delivered by
    /// a previous run.
    pub fn start_frontier(&self) -> u64 {
        self.start_frontier
    }

    /// The durable frontier, updated as transactions commit.
    pub fn durable_frontier(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.durable)
    }

    /// Times a worker waited for the writer.
    pub fn waits(&self) -> u64 {
        self.handle
            .as_ref()
            .map_or(0, |handle| handle.waits.load(Ordering::Relaxed))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored result of `kind` (all kinds with `None`), ordered.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn read(path: &Path, kind: Option<&str>) -> Result<Vec<ResultRow>, StoreError> {
        let connection = open_connection(path)?;
        let mut statement = connection
            .prepare(
                "SELECT kind, key, time, body FROM results
                 WHERE ?1 IS NULL OR kind = ?1 ORDER BY kind, key, time, body",
            )
            .map_err(sqlite(path))?;
        let rows = statement
            .query_map(params![kind], |row| {
                Ok(ResultRow {
                    kind: row.get(0)?,
                    key: row.get(1)?,
                    time: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                    body: row.get(3)?,
                })
            })
            .map_err(sqlite(path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(path))
    }

    /// The stored durable frontier.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn read_frontier(path: &Path) -> Result<u64, StoreError> {
        let connection = open_connection(path)?;
        stored_frontier(&connection, path)
    }

    /// Commits what is queued and stops the writer (every handle must be dropped first
    /// for the queue to end; handles still alive are simply cut off).
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.handle = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for ResultsStore {
    fn drop(&mut self) {
        self.handle = None;
    }
}

/// FNV-1a (64 bit) of a result's JSON: identical results share a digest, so re-inserting
/// one is ignored; a recomputed result that differed would be stored beside the first and
/// show up (the crash test looks for exactly that).
fn digest(body: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in body.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_ne_bytes(hash.to_ne_bytes())
}

fn write_loop(
    connection: &Connection,
    path: &Path,
    receiver: &Receiver<ResultsMsg>,
    workers: usize,
    durable: &AtomicU64,
    bound: Option<&AtomicU64>,
) -> Result<(), StoreError> {
    let mut frontiers: Vec<Option<u64>> = vec![None; workers];
    let mut stored = durable.load(Ordering::Acquire);
    let lowest = |frontiers: &[Option<u64>]| -> Option<u64> {
        frontiers
            .iter()
            .copied()
            .collect::<Option<Vec<u64>>>()
            .and_then(|all| all.into_iter().min())
    };
    // The frontier to store: the slowest worker's, held back by the bound.
    let target = |frontiers: &[Option<u64>]| -> Option<u64> {
        let lowest = lowest(frontiers)?;
        Some(bound.map_or(lowest, |bound| lowest.min(bound.load(Ordering::Acquire))))
    };
    loop {
        // While the bound holds the frontier back, look again now and then: the workers
        // may have nothing more to send once the stream stands still.
        let held_back = lowest(&frontiers).is_some_and(|lowest| lowest > stored);
        let first = if held_back {
            match receiver.recv_timeout(BOUND_POLL) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match receiver.recv() {
                Ok(message) => Some(message),
                Err(_) => break,
            }
        };
        let mut batch: Vec<ResultsMsg> = first.into_iter().collect();
        while !batch.is_empty() && batch.len() < GROUP_MAX {
            match receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        for message in &batch {
            if let ResultsMsg::Frontier { worker, frontier } = message {
                if let Some(slot) = frontiers.get_mut(*worker) {
                    *slot = Some(slot.map_or(*frontier, |seen| seen.max(*frontier)));
                }
            }
        }
        let advance = target(&frontiers).filter(|frontier| *frontier > stored);
        if batch.is_empty() && advance.is_none() {
            continue;
        }
        let transaction = connection.unchecked_transaction().map_err(sqlite(path))?;
        {
            let mut insert = transaction
                .prepare_cached(
                    "INSERT OR IGNORE INTO results (kind, key, time, digest, body)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sqlite(path))?;
            for message in &batch {
                if let ResultsMsg::Rows(rows) = message {
                    for row in rows {
                        insert
                            .execute(params![
                                row.kind,
                                row.key,
                                i64::try_from(row.time).unwrap_or(i64::MAX),
                                digest(&row.body),
                                row.body
                            ])
                            .map_err(sqlite(path))?;
                    }
                }
            }
        }
        if let Some(frontier) = advance {
            store_frontier(&transaction, path, frontier)?;
        }
        transaction.commit().map_err(sqlite(path))?;
        if let Some(frontier) = advance {
            stored = frontier;
            durable.store(frontier, Ordering::Release);
        }
    }
    // The bound may have moved on since the last message (the producer flushed at
    // shutdown): store how far both paths got.
    if let Some(frontier) = target(&frontiers).filter(|frontier| *frontier > stored) {
        let transaction = connection.unchecked_transaction().map_err(sqlite(path))?;
        store_frontier(&transaction, path, frontier)?;
        transaction.commit().map_err(sqlite(path))?;
        durable.store(frontier, Ordering::Release);
    }
    Ok(())
}

fn store_frontier(connection: &Connection, path: &Path, frontier: u64) -> Result<(), StoreError> {
    connection
        .execute(
            "INSERT INTO results_meta (name, value) VALUES ('frontier', ?1)
             ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            params![i64::try_from(frontier).unwrap_or(i64::MAX)],
        )
        .map_err(sqlite(path))?;
    Ok(())
}

/// Where the Kafka source records the event-time state of each committed rewind position
/// (the newest event time before it), in the results database: brokers that do not keep
/// commit metadata (Tansu) then still restart exactly.
pub struct CheckpointJournal {
    path: PathBuf,
    connection: std::sync::Mutex<Connection>,
}

impl std::fmt::Debug for CheckpointJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointJournal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Rows kept per partition (older rewind positions are never needed again).
const CHECKPOINTS_KEPT: i64 = 64;

impl CheckpointJournal {
    /// Opens the journal in the results database at `path`.
    ///
    /// # Errors
    /// The database cannot be opened.
    pub fn open(path: &Path) -> Result<CheckpointJournal, StoreError> {
        let connection = open_connection(path)?;
        connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS kafka_checkpoints (
                     grp TEXT NOT NULL,
                     topic TEXT NOT NULL,
                     partition INTEGER NOT NULL,
                     offset INTEGER NOT NULL,
                     max_before INTEGER,
                     PRIMARY KEY (grp, topic, partition, offset)
                 ) WITHOUT ROWID;",
            )
            .map_err(sqlite(path))?;
        Ok(CheckpointJournal {
            path: path.to_path_buf(),
            connection: std::sync::Mutex::new(connection),
        })
    }

    /// Records positions about to be committed: `(topic, partition, offset, max_before)`.
    ///
    /// # Errors
    /// SQLite failed (the caller must then not commit).
    pub fn record(
        &self,
        group: &str,
        positions: &[(String, i32, i64, Option<u64>)],
    ) -> Result<(), StoreError> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let path = &self.path;
        let transaction = connection.unchecked_transaction().map_err(sqlite(path))?;
        for (topic, partition, offset, max_before) in positions {
            transaction
                .execute(
                    "INSERT OR REPLACE INTO kafka_checkpoints VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        group,
                        topic,
                        partition,
                        offset,
                        max_before.and_then(|max| i64::try_from(max).ok())
                    ],
                )
                .map_err(sqlite(path))?;
            transaction
                .execute(
                    "DELETE FROM kafka_checkpoints WHERE grp = ?1 AND topic = ?2 AND partition = ?3
                     AND offset < (SELECT MIN(offset) FROM (SELECT offset FROM kafka_checkpoints
                        WHERE grp = ?1 AND topic = ?2 AND partition = ?3
                        ORDER BY offset DESC LIMIT ?4))",
                    params![group, topic, partition, CHECKPOINTS_KEPT],
                )
                .map_err(sqlite(path))?;
        }
        transaction.commit().map_err(sqlite(path))
    }

    /// The newest event time recorded before `offset`: `None` when the position was never
    /// recorded here, `Some(None)` when it was recorded with no event before it.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn lookup(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<Option<Option<u64>>, StoreError> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let found: Option<Option<i64>> = connection
            .query_row(
                "SELECT max_before FROM kafka_checkpoints
                 WHERE grp = ?1 AND topic = ?2 AND partition = ?3 AND offset = ?4",
                params![group, topic, partition, offset],
                |row| row.get(0),
            )
            .optional()
            .map_err(sqlite(&self.path))?;
        Ok(found.map(|max| max.and_then(|max| u64::try_from(max).ok())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use megamind_dataflows::time::{pace, Stopwatch};

    fn row(key: &str, time: u64) -> ResultRow {
        ResultRow {
            kind: "window".into(),
            key: key.into(),
            time,
            body: format!("{{\"end\":{time}}}"),
        }
    }

    #[test]
    fn rows_are_idempotent_and_the_frontier_is_the_slowest_worker() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("results.db");
        let store = ResultsStore::open(&path, 2, None).expect("open");
        let handle = store.handle().expect("handle");
        handle.rows(vec![row("a", 10), row("b", 10)]);
        handle.rows(vec![row("a", 10)]);
        handle.frontier(0, 20);
        handle.frontier(1, 15);
        drop(handle);
        store.close();
        assert_eq!(
            ResultsStore::read(&path, Some("window")).expect("read"),
            vec![row("a", 10), row("b", 10)]
        );
        assert_eq!(ResultsStore::read_frontier(&path).expect("frontier"), 15);
        let reopened = ResultsStore::open(&path, 2, None).expect("reopen");
        assert_eq!(reopened.start_frontier(), 15);
        reopened.close();
    }

    /// Waits (10 s at most) for the store's durable frontier to reach `frontier`.
    fn wait_for_durable(store: &ResultsStore, frontier: u64) {
        let settle = Stopwatch::start();
        while store.durable_frontier().load(Ordering::Acquire) < frontier
            && settle.elapsed() < std::time::Duration::from_secs(10)
        {
            pace(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn the_frontier_never_passes_the_bound() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("results.db");
        let bound = Arc::new(AtomicU64::new(12));
        let store = ResultsStore::open(&path, 1, Some(Arc::clone(&bound))).expect("open");
        let handle = store.handle().expect("handle");
        handle.rows(vec![row("a", 10), row("b", 14)]);
        handle.frontier(0, 20);
        // The writer has taken the frontier message once a later message is through.
        handle.rows(vec![row("a", 10)]);
        wait_for_durable(&store, 12);
        assert_eq!(store.durable_frontier().load(Ordering::Acquire), 12);
        // The bound moves on with no further message (a stream standing still): the
        // writer notices by itself.
        bound.store(17, Ordering::Release);
        wait_for_durable(&store, 17);
        assert_eq!(store.durable_frontier().load(Ordering::Acquire), 17);
        assert_eq!(ResultsStore::read_frontier(&path).expect("frontier"), 17);
        // And at the latest when it stops.
        bound.store(30, Ordering::Release);
        drop(handle);
        store.close();
        assert_eq!(ResultsStore::read_frontier(&path).expect("frontier"), 20);
        bound.store(5, Ordering::Release);
        let reopened = ResultsStore::open(&path, 1, Some(bound)).expect("reopen");
        assert_eq!(reopened.start_frontier(), 20);
        reopened.close();
    }

    #[test]
    fn the_frontier_waits_for_every_worker() {
        let directory = tempfile::tempdir().expect("tempdir");
        let path = directory.path().join("results.db");
        let store = ResultsStore::open(&path, 2, None).expect("open");
        let handle = store.handle().expect("handle");
        handle.frontier(0, 50);
        drop(handle);
        store.close();
        assert_eq!(ResultsStore::read_frontier(&path).expect("frontier"), 0);
    }
}
