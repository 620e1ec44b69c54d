//! An exact running sum of `f64` values that supports removal.
//!
//! Every finite `f64` is an integer multiple of 2^-1074, at most 2^1024 in size, so a sum of
//! them is an integer count of 2^-1074 units that fits in a fixed array of 32-bit digits.
//! Adding or removing a value touches three digits; reading the sum normalises the digits
//! and rounds once, to the nearest `f64` (ties to even). The result is the correctly
//! rounded sum of the values held, so it does not depend on the order in which they came
//! or went, and a window close reads it in constant time instead of re-adding the window.

/// 32-bit digits needed: bit positions 0..2046 of the unit, plus 84 bits of a shifted
/// mantissa, plus room for carries.
const DIGITS: usize = 68;

/// Additions between carry normalisations (each adds less than 2^32 to a digit held in
/// an `i64`, so 2^30 of them cannot overflow one).
const NORMALISE_EVERY: u32 = 1 << 30;

/// A multiset sum of `f64` values, exact until it is read.
#[derive(Debug, Clone)]
pub(super) struct ExactSum {
    /// Digit `i` weighs 2^(32 i - 1074); digits may be out of range until normalised.
    digits: [i64; DIGITS],
    /// Additions and removals since the last normalisation.
    pending: u32,
    /// Non-finite values held: +inf, -inf, NaN.
    positive_infinities: u64,
    negative_infinities: u64,
    nans: u64,
}

impl Default for ExactSum {
    fn default() -> Self {
        Self {
            digits: [0; DIGITS],
            pending: 0,
            positive_infinities: 0,
            negative_infinities: 0,
            nans: 0,
        }
    }
}

impl ExactSum {
    /// Adds `value`.
    pub(super) fn add(&mut self, value: f64) {
        self.apply(value, 1);
    }

    /// Removes `value` (which must have been added).
    pub(super) fn remove(&mut self, value: f64) {
        self.apply(value, -1);
    }

    /// Forgets every value.
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }

    fn apply(&mut self, value: f64, direction: i64) {
        if !value.is_finite() {
            let count = if value.is_nan() {
                &mut self.nans
            } else if value > 0.0 {
                &mut self.positive_infinities
            } else {
                &mut self.negative_infinities
            };
            *count = if direction > 0 {
                count.saturating_add(1)
            } else {
                count.saturating_sub(1)
            };
            return;
        }
        let bits = value.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as usize;
        let fraction = bits & ((1u64 << 52) - 1);
        // value = mantissa × 2^(position - 1074)
        let (mantissa, position) = if exponent == 0 {
            (fraction, 0)
        } else {
            (fraction | (1u64 << 52), exponent - 1)
        };
        if mantissa == 0 {
            return;
        }
        let sign = if bits >> 63 == 1 {
            -direction
        } else {
            direction
        };
        let shifted = u128::from(mantissa) << (position % 32);
        let digit = position / 32;
        for (offset, part) in [shifted, shifted >> 32, shifted >> 64]
            .into_iter()
            .enumerate()
        {
            // Each part is below 2^32.
            self.digits[digit + offset] += sign * ((part & 0xffff_ffff) as i64);
        }
        self.pending += 1;
        if self.pending >= NORMALISE_EVERY {
            self.normalise();
        }
    }

    /// Moves carries up so that every digit but the last is in `[0, 2^32)`; the last
    /// carries the sign of the whole.
    fn normalise(&mut self) {
        normalise_digits(&mut self.digits);
        self.pending = 0;
    }

    /// The sum rounded to the nearest `f64` (ties to even); infinite when it overflows,
    /// and IEEE's answer when infinities or NaNs are held.
    pub(super) fn value(&mut self) -> f64 {
        if self.nans > 0 || (self.positive_infinities > 0 && self.negative_infinities > 0) {
            return f64::NAN;
        }
        if self.positive_infinities > 0 {
            return f64::INFINITY;
        }
        if self.negative_infinities > 0 {
            return f64::NEG_INFINITY;
        }
        // Normalising in place keeps the value: no copy of the digits on the usual path.
        self.normalise();
        if self.digits[DIGITS - 1] >= 0 {
            return round_digits(&self.digits);
        }
        let mut magnitude = self.digits;
        for digit in &mut magnitude {
            *digit = -*digit;
        }
        normalise_digits(&mut magnitude);
        -round_digits(&magnitude)
    }
}

/// Moves carries up so that every digit but the last is in `[0, 2^32)`.
fn normalise_digits(digits: &mut [i64; DIGITS]) {
    for index in 0..DIGITS - 1 {
        let carry = digits[index] >> 32;
        digits[index] -= carry << 32;
        digits[index + 1] += carry;
    }
}

/// The non-negative number held by normalised `digits`, rounded to the nearest `f64`.
fn round_digits(digits: &[i64; DIGITS]) -> f64 {
    let Some(top) = digits.iter().rposition(|digit| *digit != 0) else {
        return 0.0;
    };
    let digit = |index: usize| -> u128 { digits.get(index).map_or(0, |d| *d as u128) };
    // The top three digits (96 bits) hold every bit a double can keep plus the rounding
    // bits; anything below only matters as "nonzero" (sticky).
    let high = (digit(top) << 64)
        | (top.checked_sub(1).map_or(0, digit) << 32)
        | top.checked_sub(2).map_or(0, digit);
    let sticky = top >= 3 && digits[..top - 2].iter().any(|digit| *digit != 0);
    // high × 2^scale is the value (before the sticky bits).
    let scale = 32 * top as i64 - 64 - 1074;
    let length = 128 - i64::from(high.leading_zeros());
    let top_bit = length - 1 + scale;
    if top_bit < -1022 {
        // Subnormal: a multiple of 2^-1074 below 2^-1022 is exact. The unit sits at
        // `scale + shift == -1074`, and only zero bits are shifted out.
        let shift = -1074 - scale;
        let mantissa = if shift >= 0 {
            high >> shift
        } else {
            high << -shift
        };
        return f64::from_bits(mantissa as u64);
    }
    // Keep 53 bits.
    let shift = length - 53;
    let (mut mantissa, mut exponent) = if shift > 0 {
        let kept = high >> shift;
        let rest = high & ((1u128 << shift) - 1);
        let half = 1u128 << (shift - 1);
        let round_up = rest > half || (rest == half && (sticky || kept & 1 == 1));
        (kept + u128::from(round_up), top_bit)
    } else {
        (high << -shift, top_bit)
    };
    if mantissa == 1u128 << 53 {
        mantissa >>= 1;
        exponent += 1;
    }
    if exponent > 1023 {
        return f64::INFINITY;
    }
    let biased = (exponent + 1023) as u64;
    f64::from_bits((biased << 52) | (mantissa as u64 & ((1u64 << 52) - 1)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sum_of(values: &[f64]) -> f64 {
        let mut sum = ExactSum::default();
        values.iter().for_each(|value| sum.add(*value));
        sum.value()
    }

    /// Values of the form k × 2^-40 with |k| < 2^80 sum exactly in an i128, which Rust
    /// converts to `f64` rounding to nearest, ties to even.
    fn reference(units: &[i128]) -> f64 {
        units.iter().sum::<i128>() as f64 * 2f64.powi(-40)
    }

    proptest! {
        #[test]
        fn equals_the_correctly_rounded_sum(
            units in proptest::collection::vec(-(1i128 << 79)..(1i128 << 79), 0..300),
            removed in proptest::collection::vec(any::<prop::sample::Index>(), 0..50),
        ) {
            let values: Vec<f64> = units.iter().map(|k| *k as f64 * 2f64.powi(-40)).collect();
            // The values themselves are rounded; the reference sums what they became.
            let exact: Vec<i128> = values.iter().map(|v| (v * 2f64.powi(40)) as i128).collect();
            let mut sum = ExactSum::default();
            values.iter().for_each(|value| sum.add(*value));
            prop_assert_eq!(sum.value().to_bits(), reference(&exact).to_bits());
            let mut kept = exact.clone();
            let mut gone = std::collections::BTreeSet::new();
            for index in removed {
                if values.is_empty() { break; }
                let at = index.index(values.len());
                if gone.insert(at) {
                    sum.remove(values[at]);
                    kept[at] = 0;
                }
            }
            prop_assert_eq!(sum.value().to_bits(), reference(&kept).to_bits());
        }

        #[test]
        fn order_does_not_matter(values in proptest::collection::vec(any::<f64>(), 0..200)) {
            let finite: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
            let mut reversed = finite.clone();
            reversed.reverse();
            prop_assert_eq!(sum_of(&finite).to_bits(), sum_of(&reversed).to_bits());
        }
    }

    #[test]
    fn edges_of_the_double_range() {
        let tiny = f64::from_bits(1);
        assert_eq!(sum_of(&[tiny, tiny]), f64::from_bits(2));
        assert_eq!(
            sum_of(&[f64::MIN_POSITIVE, -tiny]),
            f64::MIN_POSITIVE - tiny
        );
        assert_eq!(sum_of(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert_eq!(sum_of(&[f64::MAX, f64::MAX, -f64::MAX]), f64::MAX);
        assert_eq!(sum_of(&[-f64::MAX, -f64::MAX]), f64::NEG_INFINITY);
        assert_eq!(sum_of(&[1e16, 1.0, -1e16]), 1.0);
        assert_eq!(sum_of(&[0.1, 0.2, 0.3]), 0.6);
        assert_eq!(sum_of(&[0.1; 10]), 1.0);
        assert_eq!(sum_of(&[1.0, 2f64.powi(-53)]), 1.0, "a tie rounds to even");
        assert_eq!(
            sum_of(&[1.0, 2f64.powi(-53), 2f64.powi(-100)]),
            1.0 + f64::EPSILON,
            "just above the tie rounds up"
        );
        assert_eq!(sum_of(&[]), 0.0);
        assert_eq!(sum_of(&[-3.5]), -3.5);
        assert!(sum_of(&[1.0, f64::NAN]).is_nan());
        assert_eq!(sum_of(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert!(sum_of(&[f64::INFINITY, f64::NEG_INFINITY]).is_nan());
    }

    #[test]
    fn removing_everything_leaves_zero() {
        let values = [1e300, -2.5, 7e-310, 3.25, -1e-5, 42.0];
        let mut sum = ExactSum::default();
        values.iter().for_each(|value| sum.add(*value));
        values.iter().rev().for_each(|value| sum.remove(*value));
        assert_eq!(sum.value().to_bits(), 0.0f64.to_bits());
        sum.add(f64::INFINITY);
        sum.remove(f64::INFINITY);
        sum.add(2.0);
        assert_eq!(sum.value(), 2.0);
    }
}
