//! A sorted multiset of `f64` kept in short sorted blocks.
//!
//! One sorted `Vec` makes each insert or removal move half the window's values (a 4,096-value
//! window moves 16 KB per sample); here a value moves at most one block, and finding the
//! block is a binary search over block maxima. Rank lookups walk the block lengths. Values
//! are ordered by `f64::total_cmp`, and iteration is in that order. The sum is kept
//! exactly alongside (see [`ExactSum`]), so reading it costs nothing per value.

use super::exact_sum::ExactSum;

/// Blocks split when they grow past this many values.
const MAX_BLOCK: usize = 128;

/// Sorted values in non-empty blocks; every value of a block is `<=` every value of the next.
///
/// Each block's length and largest value are also kept side by side in two small arrays,
/// so finding where a value goes, or which block holds a rank, reads a few contiguous
/// cache lines instead of one block header and one heap block per step: a window close
/// does these lookups for every series at once, and was bound by those reads.
#[derive(Debug, Clone, Default)]
pub(super) struct SortedValues {
    blocks: Vec<Vec<f64>>,
    /// `blocks[i].len()`.
    lengths: Vec<u32>,
    /// `blocks[i].last()`.
    maxima: Vec<f64>,
    len: usize,
    /// Exact sum of the values held, kept as they come and go.
    sum: ExactSum,
}

impl SortedValues {
    /// Takes values that are already sorted by `total_cmp`.
    pub(super) fn from_sorted(values: Vec<f64>) -> Self {
        debug_assert!(
            values
                .windows(2)
                .all(|pair| pair[0].total_cmp(&pair[1]).is_le()),
            "invariant: input is sorted"
        );
        let len = values.len();
        let mut sum = ExactSum::default();
        values.iter().for_each(|value| sum.add(*value));
        let blocks: Vec<Vec<f64>> = values.chunks(MAX_BLOCK / 2).map(<[f64]>::to_vec).collect();
        let lengths = blocks.iter().map(|block| block.len() as u32).collect();
        let maxima = blocks
            .iter()
            .filter_map(|block| block.last().copied())
            .collect();
        Self {
            blocks,
            lengths,
            maxima,
            len,
            sum,
        }
    }

    /// Number of values.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Smallest value.
    pub(super) fn first(&self) -> Option<f64> {
        self.blocks.first().and_then(|block| block.first()).copied()
    }

    /// Largest value.
    pub(super) fn last(&self) -> Option<f64> {
        self.maxima.last().copied()
    }

    /// The value at 0-based `rank` in sorted order (the close uses [`Self::at_ranks`]).
    #[cfg(test)]
    pub(super) fn at(&self, rank: usize) -> Option<f64> {
        self.blocks.iter().flatten().nth(rank).copied()
    }

    /// The values at 0-based `ranks` (ascending) in sorted order, in one walk over the
    /// block lengths; `None` for a rank past the end.
    pub(super) fn at_ranks<const N: usize>(&self, ranks: [usize; N]) -> [Option<f64>; N] {
        debug_assert!(
            ranks.windows(2).all(|pair| pair[0] <= pair[1]),
            "invariant: ranks ascend"
        );
        let mut found = [None; N];
        let mut next = 0;
        let mut skipped = 0;
        for (index, length) in self.lengths.iter().enumerate() {
            let length = *length as usize;
            while next < N && ranks[next] < skipped + length {
                found[next] = self.blocks[index].get(ranks[next] - skipped).copied();
                next += 1;
            }
            if next == N {
                break;
            }
            skipped += length;
        }
        found
    }

    /// The values in sorted order.
    pub(super) fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.blocks.iter().flatten().copied()
    }

    /// Sum of the values, correctly rounded (see [`ExactSum`]): independent of the order
    /// they came in, and read in constant time.
    pub(super) fn sum(&mut self) -> f64 {
        self.sum.value()
    }

    /// Removes every value.
    pub(super) fn clear(&mut self) {
        self.blocks.clear();
        self.lengths.clear();
        self.maxima.clear();
        self.len = 0;
        self.sum.clear();
    }

    /// The block where `value` belongs: the first whose largest value is `>= value`, or
    /// the last block when `value` is larger than everything.
    fn block_for(&self, value: f64) -> usize {
        let position = self
            .maxima
            .partition_point(|last| last.total_cmp(&value).is_lt());
        position.min(self.blocks.len().saturating_sub(1))
    }

    /// Adds a value.
    pub(super) fn insert(&mut self, value: f64) {
        self.len += 1;
        self.sum.add(value);
        if self.blocks.is_empty() {
            self.blocks.push(vec![value]);
            self.lengths.push(1);
            self.maxima.push(value);
            return;
        }
        let index = self.block_for(value);
        let block = &mut self.blocks[index];
        let position = block.partition_point(|existing| existing.total_cmp(&value).is_lt());
        block.insert(position, value);
        if block.len() > MAX_BLOCK {
            let upper = block.split_off(block.len() / 2);
            let (lower_length, lower_last) = (block.len(), block.last().copied());
            let (upper_length, upper_last) = (upper.len(), upper.last().copied());
            self.blocks.insert(index + 1, upper);
            self.lengths[index] = lower_length as u32;
            self.lengths.insert(index + 1, upper_length as u32);
            self.maxima[index] = lower_last.unwrap_or(value);
            self.maxima.insert(index + 1, upper_last.unwrap_or(value));
        } else {
            self.lengths[index] += 1;
            if let Some(last) = block.last() {
                self.maxima[index] = *last;
            }
        }
    }

    /// Removes one value equal (by `total_cmp`) to `value`; false when there is none.
    pub(super) fn remove(&mut self, value: f64) -> bool {
        if self.blocks.is_empty() {
            return false;
        }
        let index = self.block_for(value);
        let block = &mut self.blocks[index];
        let position = block.partition_point(|existing| existing.total_cmp(&value).is_lt());
        if !block
            .get(position)
            .is_some_and(|found| found.total_cmp(&value).is_eq())
        {
            return false;
        }
        let removed = block.remove(position);
        match block.last() {
            Some(last) => {
                self.maxima[index] = *last;
                self.lengths[index] -= 1;
            }
            None => {
                self.blocks.remove(index);
                self.lengths.remove(index);
                self.maxima.remove(index);
            }
        }
        self.len -= 1;
        self.sum.remove(removed);
        true
    }

    /// Whether the side arrays describe the blocks (tests).
    #[cfg(test)]
    fn consistent(&self) -> bool {
        self.lengths
            == self
                .blocks
                .iter()
                .map(|block| block.len() as u32)
                .collect::<Vec<_>>()
            && self.maxima.iter().map(|m| m.to_bits()).collect::<Vec<_>>()
                == self
                    .blocks
                    .iter()
                    .filter_map(|block| block.last().map(|m| m.to_bits()))
                    .collect::<Vec<_>>()
            && self.blocks.iter().all(|block| !block.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn behaves_like_a_sorted_vector(
            operations in proptest::collection::vec((any::<bool>(), -40i32..40), 0..1500)
        ) {
            let mut blocks = SortedValues::default();
            let mut reference: Vec<f64> = Vec::new();
            for (insert, raw) in operations {
                let value = f64::from(raw) / 4.0;
                let position = reference.partition_point(|v| v.total_cmp(&value).is_lt());
                if insert {
                    blocks.insert(value);
                    reference.insert(position, value);
                } else {
                    let present = reference.get(position).is_some_and(|v| *v == value);
                    prop_assert_eq!(blocks.remove(value), present);
                    if present {
                        reference.remove(position);
                    }
                }
                prop_assert_eq!(blocks.len(), reference.len());
                prop_assert!(blocks.consistent());
            }
            prop_assert_eq!(blocks.iter().collect::<Vec<_>>(), reference.clone());
            prop_assert_eq!(blocks.first(), reference.first().copied());
            prop_assert_eq!(blocks.last(), reference.last().copied());
            for (rank, value) in reference.iter().enumerate() {
                prop_assert_eq!(blocks.at(rank), Some(*value));
            }
            prop_assert_eq!(blocks.at(reference.len()), None);
            // Several ranks in one walk agree with one at a time (a rank may repeat, and
            // the last may be past the end).
            let len = reference.len();
            let ranks = [len / 2, len / 2, len.saturating_sub(1), len];
            prop_assert_eq!(blocks.at_ranks(ranks), ranks.map(|rank| blocks.at(rank)));
            let rebuilt = SortedValues::from_sorted(reference.clone());
            prop_assert_eq!(rebuilt.iter().collect::<Vec<_>>(), reference);
        }

        /// The sum depends only on the values held, bit for bit, whatever the arrival
        /// order, block layout and removals; and it is close to the plain sum.
        #[test]
        fn the_sum_depends_only_on_the_values(
            values in proptest::collection::vec(-1.0e6f64..1.0e6, 0..2000),
            seed in any::<u64>(),
        ) {
            let mut arrived = SortedValues::default();
            for value in &values {
                arrived.insert(*value);
            }
            let mut shuffled = values.clone();
            let mut state = seed | 1;
            for i in (1..shuffled.len()).rev() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                shuffled.swap(i, (state % (i as u64 + 1)) as usize);
            }
            // Built in another order, with half of the values removed and put back.
            let mut other = SortedValues::default();
            for value in &shuffled {
                other.insert(*value);
            }
            for value in shuffled.iter().step_by(2) {
                prop_assert!(other.remove(*value));
            }
            for value in shuffled.iter().step_by(2) {
                other.insert(*value);
            }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let mut rebuilt = SortedValues::from_sorted(sorted.clone());
            prop_assert_eq!(arrived.sum().to_bits(), other.sum().to_bits());
            prop_assert_eq!(arrived.sum().to_bits(), rebuilt.sum().to_bits());
            let plain: f64 = sorted.iter().sum();
            prop_assert!((arrived.sum() - plain).abs() <= 1e-6 * values.len() as f64);
        }
    }

    #[test]
    fn signed_zeros_and_duplicates_are_kept_apart_by_total_order() {
        let mut blocks = SortedValues::default();
        for value in [0.0, -0.0, 1.0, 1.0, -0.0] {
            blocks.insert(value);
        }
        assert_eq!(
            blocks.iter().map(f64::to_bits).collect::<Vec<_>>(),
            [-0.0, -0.0, 0.0, 1.0, 1.0].map(f64::to_bits)
        );
        assert!(blocks.remove(-0.0));
        assert!(blocks.remove(1.0));
        assert!(!blocks.remove(2.0));
        assert_eq!(blocks.len(), 3);
    }
}
