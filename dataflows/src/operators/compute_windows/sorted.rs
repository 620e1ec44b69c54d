//! A sorted multiset of `f64` kept in short sorted blocks.
//!
//! One sorted `Vec` makes each insert or removal move half the window's values (a 4,096-value
//! window moves 16 KB per sample); here a value moves at most one block, and finding the
//! block is a binary search over block maxima. Rank lookups walk the block lengths. Values
//! are ordered by `f64::total_cmp`, and iteration is in that order, so a sum taken by
//! iterating does not depend on the order in which values arrived.

/// Blocks split when they grow past this many values.
const MAX_BLOCK: usize = 128;

/// Running sums in [`SortedValues::sum`].
const LANES: usize = 8;

/// Sorted values in non-empty blocks; every value of a block is `<=` every value of the next.
#[derive(Debug, Clone, Default)]
pub(super) struct SortedValues {
    blocks: Vec<Vec<f64>>,
    len: usize,
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
        let blocks = values.chunks(MAX_BLOCK / 2).map(<[f64]>::to_vec).collect();
        Self { blocks, len }
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
        self.blocks.last().and_then(|block| block.last()).copied()
    }

    /// The value at 0-based `rank` in sorted order.
    pub(super) fn at(&self, mut rank: usize) -> Option<f64> {
        for block in &self.blocks {
            if rank < block.len() {
                return Some(block[rank]);
            }
            rank -= block.len();
        }
        None
    }

    /// The values in sorted order.
    pub(super) fn iter(&self) -> impl Iterator<Item = f64> + '_ {
        self.blocks.iter().flatten().copied()
    }

    /// Sum of the values. Value `i` in sorted order goes to running sum `i mod 8`, and the
    /// eight are then added in order: the result depends only on the values, not on the
    /// order they arrived in or on how they are split into blocks, and the additions do not
    /// wait on each other one by one (a window close sums thousands of values per series).
    pub(super) fn sum(&self) -> f64 {
        let mut lanes = [0.0f64; LANES];
        let mut position = 0usize;
        for block in &self.blocks {
            // Rotate so that this block's first value lands in lane 0, add whole chunks of
            // `LANES` lane by lane, and rotate back: each lane gets the same values in the
            // same order as with a running position.
            let rotation = position % LANES;
            lanes.rotate_left(rotation);
            let mut chunks = block.chunks_exact(LANES);
            for chunk in &mut chunks {
                for (lane, value) in lanes.iter_mut().zip(chunk) {
                    *lane += value;
                }
            }
            for (lane, value) in lanes.iter_mut().zip(chunks.remainder()) {
                *lane += value;
            }
            lanes.rotate_right(rotation);
            position += block.len();
        }
        lanes.iter().sum()
    }

    /// Removes every value.
    pub(super) fn clear(&mut self) {
        self.blocks.clear();
        self.len = 0;
    }

    /// The block where `value` belongs: the first whose largest value is `>= value`, or
    /// the last block when `value` is larger than everything.
    fn block_for(&self, value: f64) -> usize {
        let position = self.blocks.partition_point(|block| {
            block
                .last()
                .is_some_and(|last| last.total_cmp(&value).is_lt())
        });
        position.min(self.blocks.len().saturating_sub(1))
    }

    /// Adds a value.
    pub(super) fn insert(&mut self, value: f64) {
        self.len += 1;
        if self.blocks.is_empty() {
            self.blocks.push(vec![value]);
            return;
        }
        let index = self.block_for(value);
        let block = &mut self.blocks[index];
        let position = block.partition_point(|existing| existing.total_cmp(&value).is_lt());
        block.insert(position, value);
        if block.len() > MAX_BLOCK {
            let upper = block.split_off(block.len() / 2);
            self.blocks.insert(index + 1, upper);
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
        block.remove(position);
        if block.is_empty() {
            self.blocks.remove(index);
        }
        self.len -= 1;
        true
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
            }
            prop_assert_eq!(blocks.iter().collect::<Vec<_>>(), reference.clone());
            prop_assert_eq!(blocks.first(), reference.first().copied());
            prop_assert_eq!(blocks.last(), reference.last().copied());
            for (rank, value) in reference.iter().enumerate() {
                prop_assert_eq!(blocks.at(rank), Some(*value));
            }
            prop_assert_eq!(blocks.at(reference.len()), None);
            let rebuilt = SortedValues::from_sorted(reference.clone());
            prop_assert_eq!(rebuilt.iter().collect::<Vec<_>>(), reference);
        }

        /// The sum is the eight-lane sum over sorted order, bit for bit, whatever the
        /// arrival order and block layout; and close to the plain sum.
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
            let mut other = SortedValues::default();
            for value in &shuffled {
                other.insert(*value);
            }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let mut lanes = [0.0f64; LANES];
            for (position, value) in sorted.iter().enumerate() {
                lanes[position % LANES] += value;
            }
            let expected: f64 = lanes.iter().sum();
            prop_assert_eq!(arrived.sum().to_bits(), expected.to_bits());
            prop_assert_eq!(other.sum().to_bits(), expected.to_bits());
            prop_assert_eq!(SortedValues::from_sorted(sorted.clone()).sum().to_bits(), expected.to_bits());
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
