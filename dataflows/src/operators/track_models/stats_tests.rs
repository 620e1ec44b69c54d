//! Unit tests of the pure statistics. Expected values were computed with scikit-learn
//! 1.9.1, scipy 1.17.1 and River 0.26.1 on the same inputs (the script is quoted in
//! each test's comment).

use super::*;

fn close(actual: f64, expected: f64, tolerance: f64) {
    assert!(
        (actual - expected).abs() <= tolerance,
        "{actual} differs from {expected} by more than {tolerance}"
    );
}

#[test]
fn wilson_matches_scipy_binomtest() {
    // scipy.stats.binomtest(37, 50).proportion_ci(0.95, method='wilson')
    let (low, high) = wilson(37, 50, Z95).unwrap();
    close(low, 0.604_468_427_351_511_5, 1e-12);
    close(high, 0.841_284_725_064_476_2, 1e-12);
    assert_eq!(wilson(0, 0, Z95), None);
    let (low, high) = wilson(0, 10, Z95).unwrap();
    assert_eq!(low, 0.0);
    assert!(high > 0.0 && high < 1.0);
}

#[test]
fn class_scores_match_scikit_learn() {
    // precision_recall_fscore_support(yt, yp, labels=["a","b","c"], zero_division=0.0)
    let truth = ["a", "b", "c", "a", "b", "c", "a", "a", "c", "b", "b", "a"];
    let predicted = ["a", "c", "c", "a", "b", "b", "a", "b", "c", "b", "a", "a"];
    let index = |label: &str| ["a", "b", "c"].iter().position(|l| *l == label).unwrap();
    let mut matrix = vec![vec![0u64; 3]; 3];
    for (t, p) in truth.iter().zip(predicted) {
        matrix[index(t)][index(p)] += 1;
    }
    let scores = class_scores(&matrix);
    let expected = [0.8, 0.5, 0.666_666_666_666_666_6];
    for (class, value) in expected.iter().enumerate() {
        close(scores.per_class[class].precision, *value, 1e-12);
        close(scores.per_class[class].recall, *value, 1e-12);
        close(scores.per_class[class].f1, *value, 1e-12);
    }
    assert_eq!(
        scores
            .per_class
            .iter()
            .map(|c| c.support)
            .collect::<Vec<_>>(),
        [5, 4, 3]
    );
    close(scores.macro_avg.f1, 0.655_555_555_555_555_6, 1e-12);
    close(
        scores.weighted_avg.precision,
        0.666_666_666_666_666_6,
        1e-12,
    );
    close(scores.accuracy.unwrap(), 8.0 / 12.0, 1e-12);
}

#[test]
fn zero_division_is_zero() {
    // Class 1 is never predicted and never occurs.
    let scores = class_scores(&[vec![3, 0], vec![0, 0]]);
    assert_eq!(scores.per_class[1].precision, 0.0);
    assert_eq!(scores.per_class[1].f1, 0.0);
    close(scores.macro_avg.precision, 0.5, 1e-12);
}

#[test]
fn calibration_error_of_a_perfectly_calibrated_bin_is_zero() {
    let mut calibration = Calibration::new(10);
    for index in 0..10 {
        calibration.record(0.75, index < 7);
        calibration.record(0.75, index < 8);
    }
    // 15/20 correct at confidence 0.75.
    close(
        calibration.expected_calibration_error().unwrap(),
        0.0,
        1e-12,
    );
    calibration.record(1.0, false);
    assert_eq!(calibration.bins()[9].count, 1);
    assert!(Calibration::new(5).expected_calibration_error().is_none());
}

#[test]
fn psi_is_zero_for_the_same_sample_and_grows_with_a_shift() {
    let reference: Vec<f64> = (0..1000).map(|i| f64::from(i) / 1000.0).collect();
    close(psi(&reference, &reference, 10).unwrap(), 0.0, 1e-12);
    let shifted: Vec<f64> = reference.iter().map(|v| v + 0.3).collect();
    assert!(psi(&reference, &shifted, 10).unwrap() > 0.2);
    assert_eq!(psi(&[], &reference, 10), None);
}

fn ks_first() -> Vec<f64> {
    (0..60).map(|i| f64::from(i * 37 % 101) / 101.0).collect()
}

#[test]
fn ks_matches_scipy_for_unequal_sizes() {
    // a = [(i*37%101)/101 for i in range(60)]; b = [((i*53%97)/97)**1.5 for i in range(45)]
    let second: Vec<f64> = (0..45)
        .map(|i| (f64::from(i * 53 % 97) / 97.0).powf(1.5))
        .collect();
    let (statistic, p_value) = ks_2samp(&ks_first(), &second).unwrap();
    close(statistic, 0.205_555_555_555_555_55, 1e-12);
    close(p_value, 0.202_491_895_092_375_7, 1e-9);
}

#[test]
fn ks_matches_scipy_for_equal_sizes_and_ties() {
    let c: Vec<f64> = (0..40).map(|i| f64::from(i * 29 % 83) / 83.0).collect();
    let d: Vec<f64> = (0..40)
        .map(|i| (f64::from(i * 31 % 89) / 89.0).powf(0.7))
        .collect();
    let (statistic, p_value) = ks_2samp(&c, &d).unwrap();
    close(statistic, 0.125, 1e-12);
    close(p_value, 0.918_805_221_412_116_7, 1e-9);
    let e: Vec<f64> = (0..30).map(|i| f64::from(i % 5)).collect();
    let f: Vec<f64> = (0..25).map(|i| f64::from(i % 7)).collect();
    let (statistic, p_value) = ks_2samp(&e, &f).unwrap();
    close(statistic, 0.24, 1e-12);
    close(p_value, 0.352_807_596_169_082_6, 1e-9);
    assert_eq!(ks_2samp(&e, &e), Some((0.0, 1.0)));
}

#[test]
fn chi_squared_matches_scipy() {
    // chi2_contingency([[30,20,10],[25,30,5]])
    let result = chi2_contingency(&[30, 20, 10], &[25, 30, 5]).unwrap();
    close(result.statistic, 4.121_212_121_212_121, 1e-12);
    close(result.p_value, 0.127_376_748_467_377_76, 1e-12);
    assert_eq!(result.dof, 2);
    // One degree of freedom: Yates' correction, as scipy applies by default.
    let result = chi2_contingency(&[30, 20, 0], &[20, 35, 0]).unwrap();
    close(result.statistic, 4.956_780_991_735_536_5, 1e-12);
    close(result.p_value, 0.025_988_542_266_326_364, 1e-12);
    assert_eq!(result.dof, 1);
    assert_eq!(chi2_contingency(&[5, 0], &[7, 0]), None);
}

/// The stream of the ADWIN oracle: Bernoulli errors with rate 0.1, then 0.5, then 0.2,
/// drawn with a 64-bit LCG so Python can draw the same.
fn error_stream() -> Vec<f64> {
    let mut state: u64 = 12345;
    (0..3000)
        .map(|i| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let uniform = (state >> 11) as f64 / (1u64 << 53) as f64;
            let rate = if i < 1000 {
                0.1
            } else if i < 2000 {
                0.5
            } else {
                0.2
            };
            if uniform < rate {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

#[test]
fn adwin_detects_the_changes_river_detects() {
    // river.drift.ADWIN(delta=0.002) on this stream detects at 1055 and 2079 and ends
    // with width 920.
    let mut adwin = Adwin::new(0.002);
    let detections: Vec<usize> = error_stream()
        .into_iter()
        .enumerate()
        .filter_map(|(index, value)| adwin.update(value).then_some(index))
        .collect();
    assert_eq!(detections, [1055, 2079], "width {}", adwin.width());
    assert_eq!(adwin.width(), 920);
}

/// The p-value by the full O(n·m) sweep of every cell (what `ks_2samp` computed before
/// it visited only the band): the banded sweep must give the very same bits.
fn ks_p_full_sweep(n: usize, m: usize, widest: i128) -> f64 {
    let inside =
        |i: usize, j: usize| (i as i128 * m as i128 - j as i128 * n as i128).abs() < widest;
    let mut column = vec![0.0f64; m + 1];
    let mut open = true;
    for (j, cell) in column.iter_mut().enumerate() {
        open = open && inside(0, j);
        *cell = if open { 1.0 } else { 0.0 };
    }
    for i in 1..=n {
        let mut below = 0.0f64;
        for j in 0..=m {
            let value = if !inside(i, j) {
                0.0
            } else if j == 0 {
                column[0]
            } else {
                (i as f64 * column[j] + j as f64 * below) / (i + j) as f64
            };
            column[j] = value;
            below = value;
        }
    }
    (1.0 - column[m]).clamp(0.0, 1.0)
}

/// Uniform values in [0, 1) from a xorshift generator seeded with `seed`.
fn uniform_source(mut state: u64) -> impl FnMut() -> f64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn the_banded_ks_sweep_equals_the_full_sweep() {
    let mut uniform = uniform_source(0x2545_F491_4F6C_DD1D);
    for (n, m, shift) in [
        (50, 50, 0.0),
        (40, 70, 0.1),
        (200, 150, 0.3),
        (7, 300, 0.05),
    ] {
        for _ in 0..5 {
            let a: Vec<f64> = (0..n).map(|_| uniform()).collect();
            let b: Vec<f64> = (0..m).map(|_| uniform() + shift).collect();
            let (statistic, p_value) = ks_2samp(&a, &b).unwrap();
            let widest = (statistic * n as f64 * m as f64).round() as i128;
            assert_eq!(p_value.to_bits(), ks_p_full_sweep(n, m, widest).to_bits());
        }
    }
}

#[test]
fn remembered_ks_p_values_are_the_computed_ones() {
    let mut uniform = uniform_source(0x9E37_79B9_7F4A_7C15);
    // Coarse values, so statistics repeat and the memo answers; more distinct statistics
    // than it holds, so it also forgets.
    let mut known = KsPValues::default();
    let mut remembered = 0;
    for round in 0..400 {
        let (n, m) = if round % 2 == 0 { (60, 60) } else { (45, 80) };
        let shift = (round % 9) as f64 * 0.03;
        let a: Vec<f64> = (0..n).map(|_| (uniform() * 20.0).floor()).collect();
        let b: Vec<f64> = (0..m)
            .map(|_| ((uniform() + shift) * 20.0).floor())
            .collect();
        let fresh = ks_2samp(&a, &b).unwrap();
        let widest = (fresh.0 * n as f64 * m as f64).round() as i64;
        if known.known.iter().any(|(key, _)| *key == (n, m, widest)) {
            remembered += 1;
        }
        let memo = ks_2samp_remembering(&a, &b, &mut known).unwrap();
        assert_eq!(memo.0.to_bits(), fresh.0.to_bits());
        assert_eq!(memo.1.to_bits(), fresh.1.to_bits());
        assert!(known.known.len() <= KsPValues::CAPACITY);
    }
    assert!(remembered > 100, "{remembered}");
}

#[test]
fn fixed_point_takes_the_short_conversion_only_where_it_is_exact() {
    let values = [
        0.0,
        -0.0,
        -1.5,
        1e-300,
        0.5,
        1.0,
        2_047.999_999,
        2048.0,
        2_048.000_001,
        3.6e6,
        1e300,
        f64::INFINITY,
        f64::NAN,
    ];
    for value in values {
        let wide = (value * CONFIDENCE_SCALE).round().max(0.0) as u128;
        assert_eq!(fixed(value), wide, "{value}");
    }
}
