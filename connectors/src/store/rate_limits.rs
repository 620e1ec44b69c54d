//! The rate-limit journal: how many notifications the global rate limit deferred, in
//! total and per alert, kept in the embedded store so the counts survive a restart.
//!
//! The rest of an alert's state is a function of the event log and comes back by replay;
//! these counts are not (the limit acts on the wall clock, at delivery), so they are
//! written here. The dispatcher hands over its latest counts (a cheap swap into a slot,
//! never blocking on the disk); a writer thread replaces the stored counts with the
//! newest snapshot in one transaction. Snapshots handed over while the writer is busy
//! are superseded by later ones, so a storm costs one write per disk round trip, not one
//! per deferral. Errors leave through [`StoreError`] at open and load; a failed write is
//! logged and retried (with the newest snapshot) after [`RETRY_AFTER`], and once more at
//! close. A `kill -9` loses what was handed over after the last commit (a commit takes
//! milliseconds, so at most the deferrals of those milliseconds).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use super::{connect, sqlite, StoreError};

/// Deferral counts of the rate limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitCounts {
    /// Due notifications deferred, in total.
    pub total: u64,
    /// Per alert id: deferred notifications that carried it.
    pub alerts: BTreeMap<String, u64>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS rate_limited_alerts (
         alert_id TEXT PRIMARY KEY,
         deferred INTEGER NOT NULL
     );
     CREATE TABLE IF NOT EXISTS rate_limit_meta (
         name TEXT PRIMARY KEY,
         value INTEGER NOT NULL
     );";

/// How long the writer waits before it tries a failed write again (sooner when newer
/// counts come).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The slot between the dispatcher and the writer.
#[derive(Default)]
struct Slot {
    latest: Option<RateLimitCounts>,
    closed: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
}

impl Shared {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The journal and its writer thread.
pub struct RateLimitJournal {
    path: PathBuf,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for RateLimitJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitJournal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn write(
    connection: &mut Connection,
    path: &Path,
    counts: &RateLimitCounts,
) -> Result<(), StoreError> {
    let transaction = connection.transaction().map_err(sqlite(path))?;
    transaction
        .execute("DELETE FROM rate_limited_alerts", [])
        .map_err(sqlite(path))?;
    {
        let mut insert = transaction
            .prepare("INSERT INTO rate_limited_alerts (alert_id, deferred) VALUES (?1, ?2)")
            .map_err(sqlite(path))?;
        for (id, deferred) in &counts.alerts {
            insert
                .execute(params![id, to_i64(*deferred)])
                .map_err(sqlite(path))?;
        }
    }
    transaction
        .execute(
            "INSERT INTO rate_limit_meta (name, value) VALUES ('total', ?1)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![to_i64(counts.total)],
        )
        .map_err(sqlite(path))?;
    transaction.commit().map_err(sqlite(path))
}

fn write_loop(mut connection: Connection, path: &Path, shared: &Shared) {
    let mut failed = false;
    loop {
        let (latest, closed) = {
            let mut slot = shared.slot();
            if failed && !slot.closed {
                // Newer counts or the close end the wait early.
                slot = shared
                    .changed
                    .wait_timeout(slot, RETRY_AFTER)
                    .map_or_else(|poisoned| poisoned.into_inner().0, |(slot, _)| slot);
            }
            while slot.latest.is_none() && !slot.closed {
                slot = shared
                    .changed
                    .wait(slot)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            (slot.latest.take(), slot.closed)
        };
        failed = false;
        if let Some(counts) = latest {
            if let Err(error) = write(&mut connection, path, &counts) {
                if closed {
                    tracing::error!(error = %error, "rate-limit counts lost at close: not stored");
                    return;
                }
                tracing::warn!(error = %error, "rate-limit counts not stored; retrying");
                failed = true;
                // Tried again unless newer counts replace them meanwhile.
                shared.slot().latest.get_or_insert(counts);
            }
        }
        if closed && !failed {
            return;
        }
    }
}

/// The counts stored in `connection`'s database (`path`, for errors).
fn read(connection: &Connection, path: &Path) -> Result<RateLimitCounts, StoreError> {
    let total: Option<i64> = connection
        .query_row(
            "SELECT value FROM rate_limit_meta WHERE name = 'total'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite(path))?;
    let mut statement = connection
        .prepare("SELECT alert_id, deferred FROM rate_limited_alerts")
        .map_err(sqlite(path))?;
    let alerts = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(sqlite(path))?
        .map(|row| row.map(|(id, deferred)| (id, to_u64(deferred))))
        .collect::<Result<BTreeMap<_, _>, _>>()
        .map_err(sqlite(path))?;
    Ok(RateLimitCounts {
        total: total.map_or(0, to_u64),
        alerts,
    })
}

impl RateLimitJournal {
    /// The counts stored at `path` (zero when none were).
    ///
    /// # Errors
    /// The database cannot be opened or read.
    pub fn load(path: &Path) -> Result<RateLimitCounts, StoreError> {
        read(&connect(path, SCHEMA)?, path)
    }

    /// Opens the journal at `path`, starts its writer, and returns the counts stored
    /// there (zero when none were), to continue from.
    ///
    /// # Errors
    /// The database cannot be opened or read.
    pub fn open(path: &Path) -> Result<(RateLimitJournal, RateLimitCounts), StoreError> {
        let connection = connect(path, SCHEMA)?;
        let stored = read(&connection, path)?;
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::default()),
            changed: Condvar::new(),
        });
        let writer_shared = Arc::clone(&shared);
        let writer_path = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("megamind-ratelimits".into())
            .spawn(move || write_loop(connection, &writer_path, &writer_shared))
            .map_err(|source| StoreError::Thread {
                path: path.display().to_string(),
                source,
            })?;
        let journal = RateLimitJournal {
            path: path.to_owned(),
            shared,
            writer: Mutex::new(Some(writer)),
        };
        Ok((journal, stored))
    }

    /// Hands over the latest counts; they replace any not written yet. Never waits for
    /// the disk.
    pub fn record(&self, counts: RateLimitCounts) {
        self.shared.slot().latest = Some(counts);
        self.shared.changed.notify_one();
    }

    /// Writes what was handed over last and stops the writer; waits for the disk.
    /// Counts handed over afterwards are not written.
    pub fn close(&self) {
        self.shared.slot().closed = true;
        self.shared.changed.notify_one();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for RateLimitJournal {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_reopen_and_later_snapshots_replace_earlier_ones() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("store.db");
        assert_eq!(
            RateLimitJournal::load(&path).unwrap(),
            RateLimitCounts::default()
        );
        let (journal, stored) = RateLimitJournal::open(&path).unwrap();
        assert_eq!(stored, RateLimitCounts::default());
        let first = RateLimitCounts {
            total: 3,
            alerts: [("a".to_owned(), 2), ("b".to_owned(), 1)].into(),
        };
        journal.record(first);
        // "b" was dropped (resolved and sent), "a" counted again.
        let second = RateLimitCounts {
            total: 4,
            alerts: [("a".to_owned(), 3)].into(),
        };
        journal.record(second.clone());
        journal.close();
        assert_eq!(RateLimitJournal::load(&path).unwrap(), second);
        // A second journal on the same file starts from what is stored.
        let (journal, stored) = RateLimitJournal::open(&path).unwrap();
        assert_eq!(stored, second);
        let third = RateLimitCounts {
            total: u64::MAX,
            alerts: [("c".to_owned(), 7)].into(),
        };
        journal.record(third);
        drop(journal);
        let loaded = RateLimitJournal::load(&path).unwrap();
        assert_eq!(
            loaded.total,
            i64::MAX as u64,
            "saturates at SQLite's integer range"
        );
        assert_eq!(loaded.alerts, [("c".to_owned(), 7)].into());
    }

    #[test]
    fn a_failed_write_is_retried_until_it_succeeds() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("store.db");
        let (journal, _) = RateLimitJournal::open(&path).unwrap();
        // The table goes away under the writer: its write fails.
        let other = connect(&path, SCHEMA).unwrap();
        other
            .execute_batch("DROP TABLE rate_limited_alerts")
            .unwrap();
        let counts = RateLimitCounts {
            total: 2,
            alerts: [("a".to_owned(), 2)].into(),
        };
        journal.record(counts.clone());
        let started = megamind_dataflows::time::Stopwatch::start();
        let mut recreated = false;
        loop {
            // Not before the writer tried (and failed): its first try finds no table.
            if !recreated && started.elapsed() > RETRY_AFTER / 2 {
                other.execute_batch(SCHEMA).unwrap();
                recreated = true;
            }
            if recreated && RateLimitJournal::load(&path).unwrap() == counts {
                break;
            }
            assert!(
                started.elapsed() < RETRY_AFTER * 10,
                "the counts were not written again"
            );
        }
        journal.close();
    }

    #[test]
    fn an_unopenable_path_is_an_error() {
        let directory = tempfile::tempdir().unwrap();
        let blocker = directory.path().join("file");
        std::fs::write(&blocker, b"not a directory").unwrap();
        let error = RateLimitJournal::load(&blocker.join("store.db")).unwrap_err();
        assert!(error.to_string().contains("cannot create"), "{error}");
    }
}
