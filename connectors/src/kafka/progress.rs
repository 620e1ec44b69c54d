//! Per-partition event-time progress: the lateness rule, the watermark, and the rewind
//! checkpoints that make a restart recompute exactly the results that were not yet durable.
//!
//! Everything here is a function of the partition's own message sequence, never of how
//! partitions interleave, which is what makes a crashed-and-restarted run produce the same
//! results as one that never crashed:
//!
//! - an event is **late** when its time is more than `lateness` behind the newest event
//!   time seen earlier *in the same partition*; late events are dropped (and counted);
//! - the partition's **watermark** is that newest time minus `lateness`, so every event the
//!   partition still admits lies at or after its watermark, and therefore at or after the
//!   engine's frontier (the minimum over partitions): no admitted event can find its window
//!   already closed;
//! - a **checkpoint** `(offset, max_before)` is recorded at every batch boundary: every
//!   event before `offset` has time at most `max_before`. Restarting at a checkpoint with
//!   the partition maximum restored to `max_before` re-admits exactly the same events.

use std::collections::VecDeque;

/// A position a partition can be rewound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The next offset to read.
    pub offset: i64,
    /// The newest event time before `offset` (`None`: no event before it).
    pub max_before: Option<u64>,
}

impl Checkpoint {
    /// The metadata string committed with this checkpoint, carrying the durable frontier.
    pub fn metadata(&self, durable_frontier: u64) -> String {
        match self.max_before {
            Some(max) => format!("megamind/1 frontier={durable_frontier} max={max}"),
            None => format!("megamind/1 frontier={durable_frontier} max=-"),
        }
    }
}

/// What a committed offset's metadata said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedMetadata {
    /// The committing process's durable output frontier.
    pub frontier: u64,
    /// The newest event time before the committed offset.
    pub max_before: Option<u64>,
}

/// Parses metadata written by [`Checkpoint::metadata`]; `None` for anything else (offsets
/// committed by other tools carry no frontier).
pub fn parse_metadata(text: &str) -> Option<CommittedMetadata> {
    let mut parts = text.split(' ');
    if parts.next()? != "megamind/1" {
        return None;
    }
    let frontier = parts.next()?.strip_prefix("frontier=")?.parse().ok()?;
    let max_before = match parts.next()?.strip_prefix("max=")? {
        "-" => None,
        number => Some(number.parse().ok()?),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(CommittedMetadata {
        frontier,
        max_before,
    })
}

/// Whether an event is admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted.
    Admitted,
    /// Late: more than the lateness behind `newest`, the newest time seen before it.
    Late {
        /// The partition's newest event time at that point.
        newest: u64,
    },
}

/// Progress of one partition.
#[derive(Debug, Clone)]
pub struct PartitionProgress {
    lateness: u64,
    newest: Option<u64>,
    next_offset: i64,
    checkpoints: VecDeque<Checkpoint>,
    capacity: usize,
}

impl PartitionProgress {
    /// Starts at `start` (where consumption resumes), keeping at most `capacity` checkpoints.
    pub fn new(start: Checkpoint, lateness: u64, capacity: usize) -> Self {
        let mut checkpoints = VecDeque::with_capacity(capacity.clamp(2, 1024));
        checkpoints.push_back(start);
        Self {
            lateness,
            newest: start.max_before,
            next_offset: start.offset,
            checkpoints,
            capacity: capacity.max(2),
        }
    }

    /// Applies the lateness rule to an event at `ts`, updating the newest time.
    pub fn admit(&mut self, ts: u64) -> Admission {
        match self.newest {
            Some(newest) if ts.saturating_add(self.lateness) < newest => Admission::Late { newest },
            Some(newest) => {
                self.newest = Some(newest.max(ts));
                Admission::Admitted
            }
            None => {
                self.newest = Some(ts);
                Admission::Admitted
            }
        }
    }

    /// Marks the end of a batch: the next offset to read is `next_offset`.
    pub fn end_batch(&mut self, next_offset: i64) {
        if next_offset <= self.next_offset {
            return;
        }
        self.next_offset = next_offset;
        if self.checkpoints.len() >= self.capacity {
            self.thin();
        }
        self.checkpoints.push_back(Checkpoint {
            offset: next_offset,
            max_before: self.newest,
        });
    }

    /// The next offset to read.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// The newest admitted event time.
    pub fn newest(&self) -> Option<u64> {
        self.newest
    }

    /// Newest event time minus the lateness: no later event of this partition is admitted
    /// below it. `None` before the first event.
    pub fn watermark(&self) -> Option<u64> {
        self.newest
            .map(|newest| newest.saturating_sub(self.lateness))
    }

    /// The latest checkpoint before which every event is older than `needed_from`: reading
    /// from it again sees every event at or after `needed_from`. Checkpoints before the
    /// chosen one are forgotten (they will never be needed again, as `needed_from` only
    /// grows).
    pub fn rewind_point(&mut self, needed_from: u64) -> Checkpoint {
        let mut chosen = 0;
        for (index, checkpoint) in self.checkpoints.iter().enumerate() {
            if checkpoint.max_before.is_none_or(|max| max < needed_from) {
                chosen = index;
            } else {
                break;
            }
        }
        self.checkpoints.drain(..chosen);
        self.checkpoints.front().copied().unwrap_or(Checkpoint {
            offset: self.next_offset,
            max_before: self.newest,
        })
    }

    /// Checkpoints held.
    pub fn checkpoints(&self) -> usize {
        self.checkpoints.len()
    }

    /// Halves the checkpoints, keeping the oldest (the one a rewind may still need) and
    /// every second one after it: rewinds become coarser (earlier), never wrong.
    fn thin(&mut self) {
        let kept: VecDeque<Checkpoint> = self
            .checkpoints
            .iter()
            .enumerate()
            .filter(|(index, _)| index % 2 == 0)
            .map(|(_, checkpoint)| *checkpoint)
            .collect();
        self.checkpoints = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start() -> Checkpoint {
        Checkpoint {
            offset: 0,
            max_before: None,
        }
    }

    #[test]
    fn lateness_is_relative_to_the_partition_newest_time() {
        let mut progress = PartitionProgress::new(start(), 100, 16);
        assert_eq!(progress.admit(1_000), Admission::Admitted);
        assert_eq!(progress.admit(900), Admission::Admitted);
        assert_eq!(progress.admit(899), Admission::Late { newest: 1_000 });
        assert_eq!(progress.watermark(), Some(900));
        assert_eq!(progress.admit(2_000), Admission::Admitted);
        assert_eq!(progress.watermark(), Some(1_900));
    }

    #[test]
    fn rewind_point_covers_every_needed_event_and_forgets_older_checkpoints() {
        let mut progress = PartitionProgress::new(start(), 0, 64);
        // Batches of ten offsets, times 0..100, 100..200, ...
        for batch in 0..10i64 {
            for offset in 0..10 {
                let ts = u64::try_from(batch * 100 + offset * 10).unwrap_or(0);
                progress.admit(ts);
            }
            progress.end_batch((batch + 1) * 10);
        }
        // Events at time >= 450 start in the batch at offset 40 (times 400..490).
        let point = progress.rewind_point(450);
        assert_eq!(point.offset, 40);
        assert_eq!(point.max_before, Some(390));
        // A later call with a smaller need cannot go back before what was forgotten.
        assert_eq!(progress.rewind_point(0).offset, 40);
        assert_eq!(progress.rewind_point(10_000).offset, 100);
    }

    #[test]
    fn thinning_keeps_rewinds_conservative() {
        let mut progress = PartitionProgress::new(start(), 0, 4);
        for batch in 0..20i64 {
            progress.admit(u64::try_from(batch * 100).unwrap_or(0));
            progress.end_batch(batch + 1);
        }
        assert!(progress.checkpoints() <= 4);
        let point = progress.rewind_point(1_050);
        // The exact answer is offset 11; a thinned ring may answer earlier, never later.
        assert!(point.offset <= 11, "{point:?}");
        assert!(point.max_before.is_none_or(|max| max < 1_050));
    }

    #[test]
    fn metadata_round_trips_and_foreign_metadata_is_ignored() {
        let checkpoint = Checkpoint {
            offset: 5,
            max_before: Some(42),
        };
        let text = checkpoint.metadata(7);
        assert_eq!(
            parse_metadata(&text),
            Some(CommittedMetadata {
                frontier: 7,
                max_before: Some(42)
            })
        );
        assert_eq!(
            parse_metadata(&start().metadata(0)).map(|meta| meta.max_before),
            Some(None)
        );
        assert_eq!(parse_metadata(""), None);
        assert_eq!(parse_metadata("megamind/1 frontier=x max=-"), None);
        assert_eq!(parse_metadata("something else"), None);
    }
}
