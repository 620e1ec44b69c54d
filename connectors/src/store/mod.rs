//! The embedded store (SQLite, bundled): a write-ahead log of accepted event batches.
//!
//! Every batch the live ingest accepts is appended here *before* the caller is answered,
//! so an acknowledged event survives a crash (`kill -9`) and is replayed into the pipeline
//! on the next start. Appends from many requests are group-committed by one writer thread:
//! concurrent callers share a transaction, so durability costs one commit per burst, not
//! one per request. The log is pruned by age.
//!
//! The store knows nothing about events: a batch is opaque text (NDJSON or a JSON array)
//! plus the ingestion time used to stamp events without `ts` and the indices of records
//! that were rejected, so that replay reproduces exactly the events that were accepted.

pub mod rate_limits;
pub mod results;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

/// Requests queued for the writer before appends wait for room.
const WRITER_QUEUE: usize = 4096;
/// Most appends committed in one transaction.
const GROUP_COMMIT_MAX: usize = 512;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("sqlite error on {path}")]
    Sqlite {
        /// The database file.
        path: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create {path}")]
    Directory {
        /// The directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A writer thread could not be started.
    #[error("cannot start the writer thread for {path}")]
    Thread {
        /// The database file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The writer thread is gone (shutdown or a previous fatal error).
    #[error("the event log writer has stopped")]
    Stopped,
}

/// One stored batch, as read back for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    /// Position in the log (increasing).
    pub seq: i64,
    /// Wall time of ingestion, ms; stamps events without `ts`.
    pub ingested_ms: u64,
    /// The request body (NDJSON or a JSON array).
    pub payload: String,
    /// Indices of records in `payload` that were rejected at ingestion.
    pub rejected: Vec<usize>,
}

enum Request {
    Append {
        ingested_ms: u64,
        payload: String,
        rejected: Vec<usize>,
        reply: oneshot::Sender<Result<i64, StoreError>>,
    },
    Prune {
        before_ms: u64,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
}

/// The write-ahead event log.
pub struct EventLog {
    path: PathBuf,
    requests: Option<SyncSender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

pub(crate) fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |source| StoreError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

/// Opens (creating its directory) the database at `path` in WAL mode and applies `schema`.
pub(crate) fn connect(path: &Path, schema: &str) -> Result<Connection, StoreError> {
    if let Some(directory) = path
        .parent()
        .filter(|directory| !directory.as_os_str().is_empty())
    {
        std::fs::create_dir_all(directory).map_err(|source| StoreError::Directory {
            path: directory.display().to_string(),
            source,
        })?;
    }
    let connection = Connection::open(path).map_err(sqlite(path))?;
    // WAL + NORMAL: a committed transaction survives a process crash; only a power loss
    // can drop the last commits.
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             PRAGMA busy_timeout = 5000;",
        )
        .map_err(sqlite(path))?;
    connection.execute_batch(schema).map_err(sqlite(path))?;
    Ok(connection)
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    connect(
        path,
        "CREATE TABLE IF NOT EXISTS event_batches (
             seq INTEGER PRIMARY KEY AUTOINCREMENT,
             ingested_ms INTEGER NOT NULL,
             payload TEXT NOT NULL,
             rejected TEXT NOT NULL
         );",
    )
}

impl EventLog {
    /// Opens (or creates) the log at `path` and starts its writer thread.
    ///
    /// # Errors
    /// The directory or database cannot be created or opened.
    pub fn open(path: &Path) -> Result<EventLog, StoreError> {
        let connection = open_connection(path)?;
        let (requests, receiver) = sync_channel(WRITER_QUEUE);
        let writer_path = path.to_path_buf();
        let writer = std::thread::Builder::new()
            .name("megamind-eventlog".into())
            .spawn(move || write_loop(connection, &writer_path, receiver))
            .map_err(|source| StoreError::Thread {
                path: path.display().to_string(),
                source,
            })?;
        Ok(EventLog {
            path: path.to_path_buf(),
            requests: Some(requests),
            writer: Some(writer),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a batch; resolves once it is committed.
    ///
    /// # Errors
    /// SQLite failed to commit, or the writer stopped.
    ///
    /// # Cancel safety
    /// Cancelling after the request was queued does not withdraw it: the batch may still be
    /// committed.
    pub async fn append(
        &self,
        ingested_ms: u64,
        payload: String,
        rejected: Vec<usize>,
    ) -> Result<i64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Append {
            ingested_ms,
            payload,
            rejected,
            reply,
        })
        .await?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Deletes batches ingested before `before_ms`; returns how many.
    ///
    /// # Errors
    /// SQLite failed, or the writer stopped.
    pub async fn prune(&self, before_ms: u64) -> Result<usize, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Prune { before_ms, reply }).await?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    async fn send(&self, request: Request) -> Result<(), StoreError> {
        let requests = self.requests.clone().ok_or(StoreError::Stopped)?;
        // A full queue means the disk is behind: wait on the blocking pool, not a runtime thread.
        match requests.try_send(request) {
            Ok(()) => Ok(()),
            Err(std::sync::mpsc::TrySendError::Full(request)) => {
                tokio::task::spawn_blocking(move || requests.send(request))
                    .await
                    .map_err(|_| StoreError::Stopped)?
                    .map_err(|_| StoreError::Stopped)
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => Err(StoreError::Stopped),
        }
    }

    /// Reads every batch with `seq > after`, oldest first (for replay at start).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn read_after(path: &Path, after: i64) -> Result<Vec<StoredBatch>, StoreError> {
        let connection = open_connection(path)?;
        let mut statement = connection
            .prepare("SELECT seq, ingested_ms, payload, rejected FROM event_batches WHERE seq > ?1 ORDER BY seq")
            .map_err(sqlite(path))?;
        let rows = statement
            .query_map(params![after], |row| {
                let rejected: String = row.get(3)?;
                Ok(StoredBatch {
                    seq: row.get(0)?,
                    ingested_ms: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
                    payload: row.get(2)?,
                    rejected: rejected
                        .split(',')
                        .filter_map(|index| index.parse().ok())
                        .collect(),
                })
            })
            .map_err(sqlite(path))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(sqlite(path))
    }

    /// Number of stored batches and the highest `seq`.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn stats(path: &Path) -> Result<(u64, i64), StoreError> {
        let connection = open_connection(path)?;
        let count: i64 = connection
            .query_row("SELECT COUNT(*) FROM event_batches", [], |row| row.get(0))
            .map_err(sqlite(path))?;
        let last: Option<i64> = connection
            .query_row("SELECT MAX(seq) FROM event_batches", [], |row| row.get(0))
            .optional()
            .map_err(sqlite(path))?
            .flatten();
        Ok((u64::try_from(count).unwrap_or(0), last.unwrap_or(0)))
    }

    /// Stops the writer after it has committed everything queued.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.requests = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// An append waiting for the next group commit: (ingested_ms, payload, rejected, reply).
type PendingAppend = (
    u64,
    String,
    String,
    oneshot::Sender<Result<i64, StoreError>>,
);

fn write_loop(mut connection: Connection, path: &Path, requests: Receiver<Request>) {
    let mut appends: Vec<PendingAppend> = Vec::new();
    while let Ok(first) = requests.recv() {
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Append {
                    ingested_ms,
                    payload,
                    rejected,
                    reply,
                } => {
                    let rejected = rejected
                        .iter()
                        .map(usize::to_string)
                        .collect::<Vec<_>>()
                        .join(",");
                    appends.push((ingested_ms, payload, rejected, reply));
                }
                Request::Prune { before_ms, reply } => {
                    let deleted = connection
                        .execute(
                            "DELETE FROM event_batches WHERE ingested_ms < ?1",
                            params![i64::try_from(before_ms).unwrap_or(i64::MAX)],
                        )
                        .map_err(sqlite(path));
                    let _ = reply.send(deleted);
                }
            }
            if appends.len() < GROUP_COMMIT_MAX {
                next = requests.try_recv().ok();
            }
        }
        if appends.is_empty() {
            continue;
        }
        let result = commit(&mut connection, &appends);
        match result {
            Ok(first_seq) => {
                for (offset, (_, _, _, reply)) in appends.drain(..).enumerate() {
                    let _ = reply.send(Ok(first_seq + offset as i64));
                }
            }
            Err(error) => {
                let text = error.to_string();
                tracing::error!(path = %path.display(), error = %text, "event log commit failed; batches not acknowledged");
                for (_, _, _, reply) in appends.drain(..) {
                    let _ = reply.send(Err(StoreError::Sqlite {
                        path: path.display().to_string(),
                        source: rusqlite::Error::InvalidParameterName(text.clone()),
                    }));
                }
                // Give a failing disk a moment before the next attempt (own thread, not a worker).
                megamind_dataflows::time::pace(Duration::from_millis(100));
            }
        }
    }
}

fn commit(connection: &mut Connection, appends: &[PendingAppend]) -> Result<i64, rusqlite::Error> {
    let transaction = connection.transaction()?;
    let mut first = None;
    {
        let mut insert = transaction.prepare_cached(
            "INSERT INTO event_batches (ingested_ms, payload, rejected) VALUES (?1, ?2, ?3)",
        )?;
        for (ingested_ms, payload, rejected, _) in appends {
            insert.execute(params![
                i64::try_from(*ingested_ms).unwrap_or(i64::MAX),
                payload,
                rejected
            ])?;
            if first.is_none() {
                first = Some(transaction.last_insert_rowid());
            }
        }
    }
    transaction.commit()?;
    Ok(first.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn appends_survive_reopen_in_order_and_prune_by_age() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("nested").join("log.db");
        let log = EventLog::open(&path).unwrap();
        let mut tasks = Vec::new();
        let log = std::sync::Arc::new(log);
        for i in 0..50u64 {
            let log = std::sync::Arc::clone(&log);
            tasks.push(tokio::spawn(async move {
                log.append(
                    1_000 + i,
                    format!("{{\"n\":{i}}}"),
                    if i == 3 { vec![0, 2] } else { vec![] },
                )
                .await
                .unwrap()
            }));
        }
        let mut seqs = Vec::new();
        for task in tasks {
            seqs.push(task.await.unwrap());
        }
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len(), 50, "every append gets its own position");
        drop(std::sync::Arc::try_unwrap(log).unwrap());

        let batches = EventLog::read_after(&path, 0).unwrap();
        assert_eq!(batches.len(), 50);
        assert!(batches.windows(2).all(|pair| pair[0].seq < pair[1].seq));
        let third = batches
            .iter()
            .find(|batch| batch.payload == "{\"n\":3}")
            .unwrap();
        assert_eq!(
            (third.ingested_ms, third.rejected.clone()),
            (1_003, vec![0, 2])
        );
        assert_eq!(EventLog::stats(&path).unwrap().0, 50);

        let log = EventLog::open(&path).unwrap();
        assert_eq!(log.prune(1_010).await.unwrap(), 10);
        log.close();
        let (count, _) = EventLog::stats(&path).unwrap();
        assert_eq!(count, 40);
        let after = EventLog::read_after(&path, batches[45].seq).unwrap();
        assert_eq!(after.len(), 4);
    }

    #[test]
    fn unwritable_location_is_a_clear_error() {
        let directory = tempfile::tempdir().unwrap();
        let blocker = directory.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let error = EventLog::open(&blocker.join("log.db")).unwrap_err();
        assert!(error.to_string().contains("cannot create"), "{error}");
    }
}
