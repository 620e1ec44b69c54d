//! `megamind nab`: runs the numeric anomaly detectors over series in the Numenta Anomaly
//! Benchmark (NAB) format and scores them the way NAB does.
//!
//! # Input
//!
//! * `--data DIR`: every `*.csv` file under `DIR` (recursively) is one series, with the
//!   header `timestamp,value` and rows `YYYY-MM-DD HH:MM:SS[.ffffff],<number>`, taken in
//!   file order (NAB's own `machine_temperature_system_failure.csv` steps back an hour once).
//! * `--labels FILE.json`: an object mapping a file (its path relative to `DIR` with `/`
//!   separators, as in NAB's `combined_windows.json`; a key that ends with `/<that path>`
//!   when only one does, so `--data` may be a NAB category folder; or just its file name) to a list of
//!   `[start, end]` anomaly windows, both timestamps in the same format, inclusive.
//!
//! # Scoring (our reading of NAB's `sweeper.py` and `scorer.py`)
//!
//! Each row gets a detection when the detectors' verdict is anomalous (the combined score
//! reached its decision boundary; cold start never detects). Per file:
//!
//! 1. The first `min(floor(0.15 n), 750)` rows are the *probationary period*: rows there are
//!    not scored at all, and a window with no row after it is not counted.
//! 2. A window covers the rows whose timestamps lie in `[start, end]`; its width `w` is its
//!    row count. A detection on row `i` inside a window whose last row is `r` sits at
//!    relative position `p = -(r - i + 1) / w` (−1 on the first row, close to 0 on the
//!    last) and is worth `A_TP · σ(p) / σ(-1)`, where `σ(x) = 2 / (1 + e^{5x}) − 1` is the
//!    scaled sigmoid (and `σ(x) = −1` for `x > 3`). Only the best (earliest) detection of a
//!    window counts; a counted window without any detection is worth `−A_FN`.
//! 3. A detection outside every window is a false positive worth `A_FP · σ(p)` with
//!    `p = |i − r_prev| / (w_prev − 1)` measured from the last row `r_prev` of the preceding
//!    window (width `w_prev`); with no preceding window (or a one-row one) `σ = −1`. Every
//!    false positive counts. So a detection just after a window costs little, one far
//!    away costs the full `A_FP`.
//! 4. The raw score is the sum. NAB normalises the corpus total between the *null*
//!    detector (never detects: `−A_FN` per counted window) and the *perfect* detector
//!    (detects the first scored row of every counted window):
//!    `100 · (raw − null) / (perfect − null)`. The same normalisation is printed per file
//!    (absent for a file without counted windows).
//!
//! Profiles (weights `A_TP`, `A_FP`, `A_FN`, the FP and FN weights given as costs):
//! `standard` 1.0 / 0.11 / 1.0, `reward_low_fp` 1.0 / 0.22 / 1.0, `reward_low_fn`
//! 1.0 / 0.11 / 2.0.
//!
//! Unlike NAB we do not sweep the threshold for the best score: the detectors' own
//! decision (the configured thresholds) is scored, which is what a deployment sees.
//!
//! Each file gets its own detector, seeded from the configured seed and a hash of the
//! file's relative path, so a run is deterministic.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use megamind_dataflows::operators::score_anomalies::detectors::{
    DetectorConfig, SeriesDetector, Verdict,
};
use serde::Serialize;

/// Rows of the probationary period: `min(floor(0.15 n), 0.15 · 5000)`.
pub fn probationary_length(rows: usize) -> usize {
    let percent = 0.15;
    let by_length = (percent * rows as f64).floor();
    by_length.min(percent * 5000.0) as usize
}

/// NAB's scaled sigmoid: `2 / (1 + e^{5x}) − 1` for `x ≤ 3`, else −1.
pub fn scaled_sigmoid(x: f64) -> f64 {
    if x > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

/// A NAB cost profile.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// `A_TP` 1.0, `A_FP` −0.11, `A_FN` −1.0.
    Standard,
    /// `A_TP` 1.0, `A_FP` −0.22, `A_FN` −1.0.
    RewardLowFp,
    /// `A_TP` 1.0, `A_FP` −0.11, `A_FN` −2.0.
    RewardLowFn,
}

/// The weights of a profile (FP and FN as positive costs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Weights {
    /// Reward of a detection on a window's first row.
    pub tp: f64,
    /// Cost of a false positive far from any window.
    pub fp: f64,
    /// Cost of a missed window.
    pub fn_: f64,
}

impl Profile {
    /// The profile's weights.
    pub fn weights(self) -> Weights {
        match self {
            Self::Standard => Weights {
                tp: 1.0,
                fp: 0.11,
                fn_: 1.0,
            },
            Self::RewardLowFp => Weights {
                tp: 1.0,
                fp: 0.22,
                fn_: 1.0,
            },
            Self::RewardLowFn => Weights {
                tp: 1.0,
                fp: 0.11,
                fn_: 2.0,
            },
        }
    }
}

/// A window as an inclusive range of row indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RowWindow {
    /// First row.
    pub first: usize,
    /// Last row.
    pub last: usize,
}

/// The score of one file's detections.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FileScore {
    /// Raw weighted score.
    pub raw: f64,
    /// Counted windows with a detection.
    pub tp: u64,
    /// Detections outside every window (after the probationary period).
    pub fp: u64,
    /// Counted windows without a detection.
    pub fn_: u64,
    /// Windows counted (with at least one row after the probationary period).
    pub windows: u64,
}

/// Scores one file's detections (`detections[i]`: row `i` detected) against its windows
/// (sorted, not overlapping), as described in the module documentation.
pub fn score_detections(detections: &[bool], windows: &[RowWindow], weights: Weights) -> FileScore {
    let probation = probationary_length(detections.len());
    let max_tp = scaled_sigmoid(-1.0);
    let mut score = FileScore {
        raw: 0.0,
        tp: 0,
        fp: 0,
        fn_: 0,
        windows: 0,
    };
    let mut next_window = 0usize;
    // (last row, width) of the window most recently left.
    let mut previous: Option<(usize, usize)> = None;
    // Best detection value of the current window, when it is counted.
    let mut current: Option<(RowWindow, Option<f64>)> = None;
    for (row, &detected) in detections.iter().enumerate() {
        if current.is_none() {
            if let Some(window) = windows.get(next_window) {
                if row >= window.first {
                    next_window += 1;
                    current = Some((*window, None));
                }
            }
        }
        if let Some((window, best)) = current.as_mut() {
            if detected && row >= probation {
                let width = (window.last - window.first + 1) as f64;
                let position = -((window.last - row + 1) as f64) / width;
                let value = scaled_sigmoid(position) * weights.tp / max_tp;
                *best = Some(best.map_or(value, |old: f64| old.max(value)));
            }
            if row == window.last {
                let counted = window.last >= probation;
                if counted {
                    score.windows += 1;
                    match best {
                        Some(value) => {
                            score.tp += 1;
                            score.raw += *value;
                        }
                        None => {
                            score.fn_ += 1;
                            score.raw -= weights.fn_;
                        }
                    }
                }
                previous = Some((window.last, window.last - window.first + 1));
                current = None;
            }
        } else if detected && row >= probation {
            let unweighted = match previous {
                Some((last, width)) if width > 1 => {
                    scaled_sigmoid((row - last) as f64 / (width - 1) as f64)
                }
                _ => -1.0,
            };
            score.fp += 1;
            score.raw += unweighted * weights.fp;
        }
    }
    score
}

/// The null and perfect detectors' scores for the same windows.
pub fn bounds(rows: usize, windows: &[RowWindow], weights: Weights) -> (f64, f64) {
    let null = score_detections(&vec![false; rows], windows, weights).raw;
    let probation = probationary_length(rows);
    let mut perfect = vec![false; rows];
    for window in windows {
        let first = window.first.max(probation);
        if first <= window.last && first < rows {
            perfect[first] = true;
        }
    }
    (null, score_detections(&perfect, windows, weights).raw)
}

/// `100 · (raw − null) / (perfect − null)`, absent when the bounds coincide.
pub fn normalised(raw: f64, null: f64, perfect: f64) -> Option<f64> {
    let span = perfect - null;
    (span.abs() > f64::EPSILON).then(|| 100.0 * (raw - null) / span)
}

/// Why a NAB run failed: always names the file and, for data, the line and field.
#[derive(Debug, thiserror::Error)]
pub enum NabError {
    /// A file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The labels file is not the expected JSON object.
    #[error("labels {path}: {reason}")]
    Labels {
        /// The labels file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A data row is malformed.
    #[error("{file}:{line}: field `{field}`: {reason}")]
    Row {
        /// The data file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// `timestamp` or `value`.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A data file has no entry in the labels.
    #[error(
        "{file}: no entry in the labels file (keys are paths relative to --data, or end with them)"
    )]
    Unlabelled {
        /// The data file.
        file: String,
    },
    /// No data file was found.
    #[error("no *.csv file under {0}")]
    NoData(PathBuf),
}

/// Parses `YYYY-MM-DD HH:MM:SS[.ffffff]` (or with `T`) into microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let bytes = text.as_bytes();
    let bad = || format!("{text:?} is not YYYY-MM-DD HH:MM:SS[.ffffff]");
    if bytes.len() < 19
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || !(bytes[10] == b' ' || bytes[10] == b'T')
        || bytes[13] != b':'
        || bytes[16] != b':'
    {
        return Err(bad());
    }
    let number = |range: std::ops::Range<usize>| -> Result<i64, String> {
        let part = text.get(range).ok_or_else(bad)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        part.parse::<i64>().map_err(|_| bad())
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(format!("{text:?} has a field out of range"));
    }
    let mut micros = 0i64;
    if bytes.len() > 19 {
        if bytes[19] != b'.' || bytes.len() == 20 {
            return Err(bad());
        }
        let fraction = &text[20..];
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let mut digits = fraction.bytes().take(6).map(|b| i64::from(b - b'0'));
        for _ in 0..6 {
            micros = micros * 10 + digits.next().unwrap_or(0);
        }
    }
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 24 + hour) * 60 + minute) * 60_000_000 + second * 1_000_000 + micros)
}

/// One NAB series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Timestamps, µs since the epoch.
    pub timestamps: Vec<i64>,
    /// Values.
    pub values: Vec<f64>,
}

/// Parses a NAB CSV file; `name` is used in errors.
pub fn parse_series(name: &str, text: &str) -> Result<Series, NabError> {
    let mut series = Series {
        timestamps: Vec::new(),
        values: Vec::new(),
    };
    let row_error = |line: usize, field: &'static str, reason: String| NabError::Row {
        file: name.to_owned(),
        line,
        field,
        reason,
    };
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || (index == 0 && line.starts_with("timestamp")) {
            continue;
        }
        let Some((timestamp, value)) = line.split_once(',') else {
            return Err(row_error(
                number,
                "value",
                "missing (expected timestamp,value)".into(),
            ));
        };
        let ts =
            parse_timestamp(timestamp).map_err(|reason| row_error(number, "timestamp", reason))?;
        let value = value.trim();
        let value: f64 = value
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| {
                row_error(number, "value", format!("{value:?} is not a finite number"))
            })?;
        series.timestamps.push(ts);
        series.values.push(value);
    }
    Ok(series)
}

/// Parses the labels JSON: file → list of `[start, end]` windows in µs.
pub fn parse_labels(
    path: &Path,
    text: &str,
) -> Result<BTreeMap<String, Vec<(i64, i64)>>, NabError> {
    let error = |reason: String| NabError::Labels {
        path: path.to_owned(),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| error(format!("not JSON: {e}")))?;
    let object = value
        .as_object()
        .ok_or_else(|| error("expected an object mapping files to windows".into()))?;
    let mut labels = BTreeMap::new();
    for (file, windows) in object {
        let list = windows
            .as_array()
            .ok_or_else(|| error(format!("{file}: expected a list of [start, end] windows")))?;
        let mut parsed = Vec::with_capacity(list.len());
        for (index, window) in list.iter().enumerate() {
            let pair = window.as_array().filter(|pair| pair.len() == 2);
            let bounds = pair.and_then(|pair| Some((pair[0].as_str()?, pair[1].as_str()?)));
            let Some((start, end)) = bounds else {
                return Err(error(format!("{file}: window {index} is not [start, end]")));
            };
            let start = parse_timestamp(start)
                .map_err(|reason| error(format!("{file}: window {index} start: {reason}")))?;
            let end = parse_timestamp(end)
                .map_err(|reason| error(format!("{file}: window {index} end: {reason}")))?;
            if end < start {
                return Err(error(format!(
                    "{file}: window {index} ends before it starts"
                )));
            }
            parsed.push((start, end));
        }
        parsed.sort_unstable();
        if parsed.windows(2).any(|pair| pair[1].0 <= pair[0].1) {
            return Err(error(format!("{file}: windows overlap")));
        }
        labels.insert(file.clone(), parsed);
    }
    Ok(labels)
}

/// Maps time windows to row windows, scanning rows in file order as NAB does: a window
/// starts at the first row (after the previous window) at or after its start and runs while
/// rows stay at or before its end. Windows covering no row are dropped.
pub fn row_windows(timestamps: &[i64], windows: &[(i64, i64)]) -> Vec<RowWindow> {
    let mut rows = Vec::with_capacity(windows.len());
    let mut next = 0usize;
    for &(start, end) in windows {
        let Some(offset) = timestamps[next.min(timestamps.len())..]
            .iter()
            .position(|t| *t >= start)
        else {
            break;
        };
        let first = next + offset;
        let run = timestamps[first..]
            .iter()
            .take_while(|t| **t <= end)
            .count();
        if run > 0 {
            rows.push(RowWindow {
                first,
                last: first + run - 1,
            });
            next = first + run;
        } else {
            next = first + 1;
        }
    }
    rows
}

/// Runs one detector over a series (`timestamps` in µs, as parsed); `true` where the verdict
/// is anomalous.
pub fn detect(
    timestamps: &[i64],
    values: &[f64],
    config: &DetectorConfig,
    key_hash: u64,
) -> Vec<bool> {
    let mut detector = SeriesDetector::new(config, key_hash);
    values
        .iter()
        .zip(timestamps)
        .map(|(value, ts)| {
            let ts_ms = u64::try_from(ts / 1_000).unwrap_or(0);
            detector.observe(*value, ts_ms, config).verdict == Verdict::Anomalous
        })
        .collect()
}

/// FNV-1a of a file's relative path: the per-file part of the detector seed.
pub fn file_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One file's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileReport {
    /// Path relative to `--data`.
    pub file: String,
    /// Rows.
    pub rows: usize,
    /// Rows in the probationary period.
    pub probationary: usize,
    /// The score.
    #[serde(flatten)]
    pub score: FileScore,
    /// Null detector's raw score.
    pub null: f64,
    /// Perfect detector's raw score.
    pub perfect: f64,
    /// Normalised score (absent without counted windows).
    pub normalised: Option<f64>,
    /// Rows with a detection (all of them, probationary ones included).
    pub detections: Vec<usize>,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NabReport {
    /// The profile.
    pub profile: Profile,
    /// Its weights.
    pub weights: Weights,
    /// Per file, in path order.
    pub files: Vec<FileReport>,
    /// Sum of the raw scores.
    pub raw: f64,
    /// Sum of the null detector's raw scores.
    pub null: f64,
    /// Sum of the perfect detector's raw scores.
    pub perfect: f64,
    /// The NAB score of the corpus, 0 = null detector, 100 = perfect.
    pub normalised: Option<f64>,
}

fn csv_files(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), NabError> {
    let read = |source| NabError::Read {
        path: dir.to_owned(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()
        .map_err(read)?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            csv_files(&path, found)?;
        } else if path.extension().is_some_and(|ext| ext == "csv") {
            found.push(path);
        }
    }
    Ok(())
}

/// Runs the detectors over every file under `data` and scores them against `labels`.
pub fn run(
    data: &Path,
    labels: &Path,
    profile: Profile,
    config: &DetectorConfig,
) -> Result<NabReport, NabError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| NabError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let labels_map = parse_labels(labels, &read(labels)?)?;
    let mut paths = Vec::new();
    csv_files(data, &mut paths)?;
    if paths.is_empty() {
        return Err(NabError::NoData(data.to_owned()));
    }
    let weights = profile.weights();
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let relative = path.strip_prefix(data).unwrap_or(&path);
        let name = relative
            .components()
            .map(|part| part.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let base = relative
            .file_name()
            .map(|base| base.to_string_lossy().into_owned())
            .unwrap_or_default();
        let suffix = format!("/{name}");
        let mut by_suffix = labels_map.iter().filter(|(key, _)| key.ends_with(&suffix));
        let unique_suffix = match (by_suffix.next(), by_suffix.next()) {
            (Some((_, windows)), None) => Some(windows),
            _ => None,
        };
        let windows = labels_map
            .get(&name)
            .or(unique_suffix)
            .or_else(|| labels_map.get(&base))
            .ok_or_else(|| NabError::Unlabelled { file: name.clone() })?;
        let series = parse_series(&name, &read(&path)?)?;
        let rows = series.values.len();
        let row_windows = row_windows(&series.timestamps, windows);
        let detected = detect(&series.timestamps, &series.values, config, file_hash(&name));
        let score = score_detections(&detected, &row_windows, weights);
        let (null, perfect) = bounds(rows, &row_windows, weights);
        files.push(FileReport {
            file: name,
            rows,
            probationary: probationary_length(rows),
            score,
            null,
            perfect,
            normalised: normalised(score.raw, null, perfect),
            detections: detected
                .iter()
                .enumerate()
                .filter_map(|(row, hit)| hit.then_some(row))
                .collect(),
        });
    }
    let raw = files.iter().map(|f| f.score.raw).sum();
    let null = files.iter().map(|f| f.null).sum();
    let perfect = files.iter().map(|f| f.perfect).sum();
    Ok(NabReport {
        profile,
        weights,
        files,
        raw,
        null,
        perfect,
        normalised: normalised(raw, null, perfect),
    })
}

/// The report as a text table.
pub fn render(report: &NabReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<48} {:>7} {:>4} {:>4} {:>4} {:>9} {:>10}",
        "file", "rows", "tp", "fp", "fn", "raw", "normalised"
    );
    let cell = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    for file in &report.files {
        let _ = writeln!(
            out,
            "{:<48} {:>7} {:>4} {:>4} {:>4} {:>9.3} {:>10}",
            file.file,
            file.rows,
            file.score.tp,
            file.score.fp,
            file.score.fn_,
            file.score.raw,
            cell(file.normalised)
        );
    }
    let _ = writeln!(
        out,
        "total ({:?}): raw {:.3}, null {:.3}, perfect {:.3}, NAB score {}",
        report.profile,
        report.raw,
        report.null,
        report.perfect,
        cell(report.normalised)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Weights = Weights {
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    };

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn scaled_sigmoid_matches_hand_values() {
        // 2 / (1 + e^-5) - 1 = 0.98661429815...
        assert!((scaled_sigmoid(-1.0) - 0.986_614_298_151_430_3).abs() < 1e-12);
        assert!(close(scaled_sigmoid(0.0), 0.0));
        assert!(close(scaled_sigmoid(3.5), -1.0));
        assert!(scaled_sigmoid(1.0) < -0.98);
    }

    #[test]
    fn probation_is_fifteen_percent_capped_at_750() {
        assert_eq!(probationary_length(100), 15);
        assert_eq!(probationary_length(10), 1);
        assert_eq!(probationary_length(20_000), 750);
    }

    #[test]
    fn hand_derived_scores() {
        // 100 rows, probation 15 rows, one window of 10 rows at 40..=49.
        let windows = [RowWindow {
            first: 40,
            last: 49,
        }];
        let mut hits = vec![false; 100];
        // Nothing detected: one missed window.
        let none = score_detections(&hits, &windows, STANDARD);
        assert_eq!((none.tp, none.fp, none.fn_, none.windows), (0, 0, 1, 1));
        assert!(close(none.raw, -1.0));
        // Detection on the window's first row: exactly A_TP.
        hits[40] = true;
        assert!(close(score_detections(&hits, &windows, STANDARD).raw, 1.0));
        // A later detection in the same window does not add.
        hits[45] = true;
        assert!(close(score_detections(&hits, &windows, STANDARD).raw, 1.0));
        // Only the row at 45: p = -(49-45+1)/10 = -0.5.
        hits[40] = false;
        let expected = scaled_sigmoid(-0.5) / scaled_sigmoid(-1.0);
        assert!(close(
            score_detections(&hits, &windows, STANDARD).raw,
            expected
        ));
        // A false positive before any window costs the full 0.11; one in probation is free.
        hits[20] = true;
        hits[3] = true;
        let score = score_detections(&hits, &windows, STANDARD);
        assert_eq!((score.tp, score.fp), (1, 1));
        assert!(close(score.raw, expected - 0.11));
        // A false positive 3 rows after the window: p = 3 / 9.
        hits[52] = true;
        let score = score_detections(&hits, &windows, STANDARD);
        assert!(close(
            score.raw,
            expected - 0.11 + 0.11 * scaled_sigmoid(3.0 / 9.0)
        ));
        let (null, perfect) = bounds(100, &windows, STANDARD);
        assert!(close(null, -1.0) && close(perfect, 1.0));
        assert!(close(
            normalised(perfect, null, perfect).unwrap_or(0.0),
            100.0
        ));
        assert!(close(normalised(null, null, perfect).unwrap_or(1.0), 0.0));
    }

    #[test]
    fn timestamps_parse_to_epoch_micros() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Ok(0));
        assert_eq!(
            parse_timestamp("2014-02-19 10:50:00.000000"),
            Ok(1_392_807_000_000_000)
        );
        assert_eq!(
            parse_timestamp("2000-03-01 00:00:01.5"),
            Ok(951_868_801_500_000)
        );
        assert!(parse_timestamp("2014-13-01 00:00:00").is_err());
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn bad_rows_name_the_line_and_field() {
        let text = "timestamp,value\n2014-01-01 00:00:00,1.5\n2014-01-01 00:05:00,abc\n";
        let error = parse_series("a.csv", text).err().map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("a.csv:3: field `value`: \"abc\" is not a finite number")
        );
        let text = "timestamp,value\n2014-01-01 00:0:00,1.5\n";
        let error = parse_series("b.csv", text).err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.starts_with("b.csv:2: field `timestamp`")));
    }

    #[test]
    fn windows_map_to_rows() {
        let ts = [0, 10, 20, 30, 40];
        assert_eq!(
            row_windows(&ts, &[(5, 30), (41, 50)]),
            vec![RowWindow { first: 1, last: 3 }]
        );
        // File order, as NAB: a step back inside a window stays in it.
        let ts = [0, 10, 20, 15, 30, 40];
        assert_eq!(
            row_windows(&ts, &[(10, 30)]),
            vec![RowWindow { first: 1, last: 4 }]
        );
    }
}
