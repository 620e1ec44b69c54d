//! Pure text novelty detection: messages are tokenised, weighted with TF-IDF over a bounded
//! sample, clustered with DBSCAN (linfa-clustering, cosine distance via the L2 distance of
//! normalised vectors), and each cluster becomes an "error family". A message farther than
//! `eps` from every core point of every family is novel.
//!
//! Every cost is bounded whatever the messages look like:
//! - a message is cut to `max_message_bytes` (at a character boundary) before anything else,
//!   and at most `max_tokens` of its tokens are used;
//! - tokens are hashed into `dimensions` buckets (the "hashing trick"), so the vocabulary is a
//!   fixed array of `dimensions` inverse document frequencies and cannot grow;
//! - checking a message is one sort of at most `max_tokens` buckets plus sparse dot products
//!   against at most `cores_per_family` core vectors per family;
//! - a refit deduplicates the sample by bucket list first (repeats of a template collapse to
//!   at most `min_points` rows, which gives DBSCAN the same core points and clusters), then
//!   clusters at most `sample_size` dense rows of `dimensions` columns.
//!
//! No timely, no clock: times come in with each message. Nothing here fails; an empty or
//! unparseable message is a message with no tokens (and is novel until it repeats).

use linfa::traits::Transformer;
use linfa::ParamGuard;
use linfa_clustering::Dbscan;
use linfa_nn::distance::L2Dist;
use linfa_nn::LinearSearch;
use ndarray::{Array2, ArrayView2};
use rustc_hash::FxHashMap;
use serde::Serialize;

/// Settings for the text detector.
#[derive(Debug, Clone, PartialEq)]
pub struct NoveltyConfig {
    /// Messages kept in the sliding sample that DBSCAN clusters (oldest replaced first).
    pub sample_size: usize,
    /// Cosine distance within which two messages are neighbours.
    pub eps: f64,
    /// Neighbours (including itself) a message needs to be a core point.
    pub min_points: usize,
    /// The sample is reclustered after this many new messages.
    pub refit_every: usize,
    /// Messages before the first clustering (cold start: no verdicts).
    pub min_sample: usize,
    /// Core points kept per family for scoring (closest to the centroid first).
    pub cores_per_family: usize,
    /// Examples kept per family.
    pub examples_per_family: usize,
    /// Families kept (largest first); the rest are forgotten at the next refit.
    pub max_families: usize,
    /// Bytes of a message that are read; the rest is ignored (and the message counted as
    /// truncated). Stored samples and examples are cut the same way.
    pub max_message_bytes: usize,
    /// Tokens of a message that are used.
    pub max_tokens: usize,
    /// Hash buckets of the TF-IDF vectors (the vocabulary's fixed size).
    pub dimensions: usize,
}

impl Default for NoveltyConfig {
    fn default() -> Self {
        Self {
            sample_size: 256,
            eps: 0.35,
            min_points: 3,
            refit_every: 64,
            min_sample: 16,
            cores_per_family: 8,
            examples_per_family: 3,
            max_families: 256,
            max_message_bytes: 512,
            max_tokens: 48,
            dimensions: 256,
        }
    }
}

/// The first `max_bytes` bytes of `message`, cut back to a character boundary.
pub fn bounded(message: &str, max_bytes: usize) -> &str {
    if message.len() <= max_bytes {
        return message;
    }
    let mut end = max_bytes;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Splits a message into lowercase word tokens; tokens containing a digit become `<num>`,
/// so ids, counts and addresses do not make every message unique.
pub fn tokens(message: &str) -> impl Iterator<Item = std::borrow::Cow<'_, str>> {
    message
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|token| !token.is_empty())
        .map(|token| {
            if token.chars().any(|c| c.is_ascii_digit()) {
                std::borrow::Cow::Borrowed("<num>")
            } else if token.chars().any(char::is_uppercase) {
                std::borrow::Cow::Owned(token.to_lowercase())
            } else {
                std::borrow::Cow::Borrowed(token)
            }
        })
}

/// The template of a message: its tokens joined by spaces.
pub fn template(message: &str) -> String {
    let mut out = String::new();
    for token in tokens(message) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&token);
    }
    out
}

/// The hash bucket of a token (FNV-1a).
fn bucket(token: &str, dimensions: usize) -> u32 {
    let hash = token.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % dimensions.max(1) as u64) as u32
}

/// The sorted buckets (with repeats) of the first `max_tokens` tokens of `message`, which
/// must already be cut to `max_message_bytes`. `out` is reused.
fn hashed(message: &str, config: &NoveltyConfig, out: &mut Vec<u32>) {
    out.clear();
    out.extend(
        tokens(message)
            .take(config.max_tokens)
            .map(|token| bucket(&token, config.dimensions)),
    );
    out.sort_unstable();
}

/// A sparse L2-normalised vector: `(bucket, weight)` sorted by bucket.
type Sparse = Vec<(u32, f32)>;

fn dot(a: &[(u32, f32)], b: &[(u32, f32)]) -> f64 {
    let (mut i, mut j, mut sum) = (0, 0, 0.0f64);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                sum += f64::from(a[i].1) * f64::from(b[j].1);
                i += 1;
                j += 1;
            }
        }
    }
    sum
}

/// Inverse document frequency of each bucket over `lists` (sorted bucket lists).
fn inverse_document_frequencies(lists: &[Vec<u32>], dimensions: usize) -> Vec<f32> {
    let mut df = vec![0u32; dimensions.max(1)];
    for list in lists {
        let mut previous = None;
        for &b in list {
            if previous != Some(b) {
                df[b as usize] += 1;
                previous = Some(b);
            }
        }
    }
    let n = lists.len() as f32;
    df.iter()
        .map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0)
        .collect()
}

/// TF-IDF of a sorted bucket list, L2-normalised. `out` is reused.
fn vectorise(buckets: &[u32], idf: &[f32], out: &mut Sparse) {
    out.clear();
    for &b in buckets {
        let weight = idf.get(b as usize).copied().unwrap_or(1.0);
        match out.last_mut() {
            Some(last) if last.0 == b => last.1 += weight,
            _ => out.push((b, weight)),
        }
    }
    let norm = out.iter().map(|&(_, w)| w * w).sum::<f32>().sqrt();
    if norm > 0.0 {
        for entry in out.iter_mut() {
            entry.1 /= norm;
        }
    }
}

/// One error family, as exposed to users.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorFamily {
    /// Stable id: a hash of the representative template.
    pub id: String,
    /// The template of the member closest to the centroid.
    pub template: String,
    /// Messages assigned to this family since it was first clustered.
    pub count: u64,
    /// A few recent member messages.
    pub examples: Vec<String>,
    /// Event time of the earliest member seen, ms.
    pub first_seen: u64,
    /// Event time of the latest member seen, ms.
    pub last_seen: u64,
}

/// The verdict on one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoveltyVerdict {
    /// No clustering yet: no verdict.
    pub cold_start: bool,
    /// In no family.
    pub novel: bool,
    /// The closest family, if within `eps`.
    pub family: Option<String>,
    /// Cosine distance to the closest core point (1 when there is none).
    pub distance: f64,
}

#[derive(Debug, Clone)]
struct FamilyState {
    public: ErrorFamily,
    cores: Vec<Sparse>,
}

/// The text detector: a bounded sample, the last fit, and the families.
///
/// Memory: `sample_size` messages of at most `max_message_bytes`, `dimensions` weights, at
/// most `max_families` families each holding `cores_per_family` vectors of at most
/// `max_tokens` entries and `examples_per_family` examples, and the vectors of the novel
/// messages since the last fit (at most `refit_every`).
#[derive(Debug, Clone, Default)]
pub struct NoveltyDetector {
    sample: Vec<(String, u64)>,
    sample_next: usize,
    since_fit: usize,
    novel_since_fit: Vec<Sparse>,
    idf: Vec<f32>,
    families: Vec<FamilyState>,
    fitted: bool,
    refits: u64,
    truncated: u64,
    buckets: Vec<u32>,
    scratch: Sparse,
}

fn family_id(template: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in template.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:012x}", hash & 0xffff_ffff_ffff)
}

/// A distinct bucket list of the sample at refit time, with the sample positions using it.
struct Distinct {
    vector: Sparse,
    members: Vec<usize>,
}

impl NoveltyDetector {
    /// An empty detector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of DBSCAN refits so far.
    pub fn refits(&self) -> u64 {
        self.refits
    }

    /// Messages longer than `max_message_bytes` seen so far.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// The current families, largest first.
    pub fn families(&self) -> Vec<ErrorFamily> {
        self.families.iter().map(|f| f.public.clone()).collect()
    }

    /// Messages in the sample and the longest of them in bytes (for the memory bound).
    pub fn sample_stats(&self) -> (usize, usize) {
        let longest = self.sample.iter().map(|(m, _)| m.len()).max().unwrap_or(0);
        (self.sample.len(), longest)
    }

    /// Judges `message` against the current families without changing them. Only the first
    /// `max_message_bytes` bytes and `max_tokens` tokens are read.
    pub fn check(&mut self, message: &str, config: &NoveltyConfig) -> NoveltyVerdict {
        if !self.fitted {
            return NoveltyVerdict {
                cold_start: true,
                novel: false,
                family: None,
                distance: 1.0,
            };
        }
        let text = bounded(message, config.max_message_bytes);
        let mut buckets = std::mem::take(&mut self.buckets);
        let mut vector = std::mem::take(&mut self.scratch);
        hashed(text, config, &mut buckets);
        vectorise(&buckets, &self.idf, &mut vector);
        let (best, distance) = self.nearest(&vector, config.eps);
        self.buckets = buckets;
        self.scratch = vector;
        NoveltyVerdict {
            cold_start: false,
            novel: best.is_none(),
            family: best.map(|i| self.families[i].public.id.clone()),
            distance,
        }
    }

    fn nearest(&self, vector: &[(u32, f32)], eps: f64) -> (Option<usize>, f64) {
        let mut best = (None, 1.0f64);
        for (index, family) in self.families.iter().enumerate() {
            for core in &family.cores {
                let distance = 1.0 - dot(vector, core);
                if distance < best.1 {
                    best = (Some(index), distance);
                }
            }
        }
        match best {
            (Some(index), distance) if distance <= eps => (Some(index), distance),
            (_, distance) => (None, distance.max(0.0)),
        }
    }

    /// Judges `message` (as [`Self::check`]), counts it into its family, adds it (cut to
    /// `max_message_bytes`) to the sample and reclusters when the schedule says so: every
    /// `refit_every` messages, or early when `min_points` novel messages since the last fit
    /// are within `eps` of each other (a new family may have appeared). Novel messages that
    /// resemble nothing else do not trigger refits.
    pub fn observe(&mut self, message: &str, ts: u64, config: &NoveltyConfig) -> NoveltyVerdict {
        let text = bounded(message, config.max_message_bytes);
        if text.len() < message.len() {
            self.truncated += 1;
        }
        let verdict = self.check(text, config);
        if let Some(id) = &verdict.family {
            if let Some(family) = self.families.iter_mut().find(|f| &f.public.id == id) {
                family.public.count += 1;
                family.public.first_seen = family.public.first_seen.min(ts);
                family.public.last_seen = family.public.last_seen.max(ts);
                if family.public.examples.len() >= config.examples_per_family {
                    family.public.examples.remove(0);
                }
                if config.examples_per_family > 0 {
                    family.public.examples.push(text.to_owned());
                }
            }
        }
        let mut early = false;
        if verdict.novel && self.novel_since_fit.len() < config.refit_every.max(1) {
            let vector = self.scratch.clone();
            let close = self
                .novel_since_fit
                .iter()
                .filter(|other| 1.0 - dot(&vector, other) <= config.eps)
                .count();
            early = close + 1 >= config.min_points;
            self.novel_since_fit.push(vector);
        }
        if self.sample.len() < config.sample_size {
            self.sample.push((text.to_owned(), ts));
        } else if config.sample_size > 0 {
            self.sample[self.sample_next] = (text.to_owned(), ts);
        }
        self.sample_next = (self.sample_next + 1) % config.sample_size.max(1);
        self.since_fit += 1;
        let due = if self.fitted {
            self.since_fit >= config.refit_every || early
        } else {
            self.sample.len() >= config.min_sample
        };
        if due {
            self.refit(config);
        }
        verdict
    }

    /// Reclusters the sample: TF-IDF over hashed tokens, DBSCAN (linfa) with cosine
    /// distance on the distinct bucket lists, families from clusters. Cost is
    /// O(distinct² × dimensions), bounded by `sample_size`.
    pub fn refit(&mut self, config: &NoveltyConfig) {
        self.refits += 1;
        self.fitted = true;
        self.since_fit = 0;
        self.novel_since_fit.clear();
        let dimensions = config.dimensions.max(1);
        let lists: Vec<Vec<u32>> = self
            .sample
            .iter()
            .map(|(message, _)| {
                let mut list = Vec::new();
                hashed(message, config, &mut list);
                list
            })
            .collect();
        self.idf = inverse_document_frequencies(&lists, dimensions);
        // Distinct bucket lists, in order of first occurrence (deterministic).
        let mut index: FxHashMap<&[u32], usize> = FxHashMap::default();
        let mut distinct: Vec<Distinct> = Vec::new();
        for (position, list) in lists.iter().enumerate() {
            let next = distinct.len();
            let at = *index.entry(list.as_slice()).or_insert(next);
            if at == next {
                let mut vector = Vec::new();
                vectorise(list, &self.idf, &mut vector);
                distinct.push(Distinct {
                    vector,
                    members: Vec::new(),
                });
            }
            distinct[at].members.push(position);
        }
        // Rows for DBSCAN: each distinct list repeated min(count, min_points) times, which
        // keeps every point's core status and so the clusters of the full sample.
        let min_points = config.min_points.max(1);
        let copies = |d: &Distinct| d.members.len().min(min_points);
        let rows: usize = distinct.iter().map(copies).sum();
        let mut matrix = Array2::<f32>::zeros((rows, dimensions));
        let mut first_row = Vec::with_capacity(distinct.len());
        let mut row = 0;
        for d in &distinct {
            first_row.push(row);
            for _ in 0..copies(d) {
                for &(b, w) in &d.vector {
                    matrix[[row, b as usize]] = w;
                }
                row += 1;
            }
        }
        let labels = dbscan(matrix.view(), config.eps, min_points);
        drop(matrix);
        let cluster_of: Vec<Option<usize>> = first_row.iter().map(|&r| labels[r]).collect();
        let clusters = cluster_of
            .iter()
            .filter_map(|l| *l)
            .max()
            .map_or(0, |m| m + 1);
        // Core status on the distinct lists, with the same capped weights.
        let is_core = |d: usize| {
            distinct
                .iter()
                .filter(|other| 1.0 - dot(&distinct[d].vector, &other.vector) <= config.eps)
                .map(copies)
                .sum::<usize>()
                >= min_points
        };
        let mut previous: FxHashMap<String, ErrorFamily> = self
            .families
            .drain(..)
            .map(|f| (f.public.id.clone(), f.public))
            .collect();
        let mut families = Vec::with_capacity(clusters);
        for cluster in 0..clusters {
            let members: Vec<usize> = (0..distinct.len())
                .filter(|&d| cluster_of[d] == Some(cluster))
                .collect();
            if members.is_empty() {
                continue;
            }
            // Centroid (weighted by repeats), then members ordered by closeness to it.
            let mut centroid: FxHashMap<u32, f32> = FxHashMap::default();
            for &d in &members {
                let weight = distinct[d].members.len() as f32;
                for &(term, value) in &distinct[d].vector {
                    *centroid.entry(term).or_insert(0.0) += weight * value;
                }
            }
            let mut centroid: Sparse = centroid.into_iter().collect();
            centroid.sort_unstable_by_key(|&(t, _)| t);
            let mut ranked: Vec<(f64, usize)> = members
                .iter()
                .map(|&d| (-dot(&distinct[d].vector, &centroid), d))
                .collect();
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let representative = distinct[ranked[0].1].members[0];
            let template = template(&self.sample[representative].0);
            let id = family_id(&template);
            let core_points: Vec<Sparse> = ranked
                .iter()
                .filter(|(_, d)| is_core(*d))
                .take(config.cores_per_family.max(1))
                .map(|(_, d)| distinct[*d].vector.clone())
                .collect();
            let positions = || members.iter().flat_map(|&d| distinct[d].members.iter());
            let first_seen = positions().map(|&m| self.sample[m].1).min().unwrap_or(0);
            let last_seen = positions().map(|&m| self.sample[m].1).max().unwrap_or(0);
            let public = match previous.remove(&id) {
                Some(mut old) => {
                    old.first_seen = old.first_seen.min(first_seen);
                    old.last_seen = old.last_seen.max(last_seen);
                    old.template = template;
                    old
                }
                None => ErrorFamily {
                    id,
                    template,
                    count: positions().count() as u64,
                    examples: ranked
                        .iter()
                        .flat_map(|(_, d)| distinct[*d].members.iter())
                        .take(config.examples_per_family)
                        .map(|&m| self.sample[m].0.clone())
                        .collect(),
                    first_seen,
                    last_seen,
                },
            };
            families.push(FamilyState {
                public,
                cores: core_points,
            });
        }
        families.sort_by(|a, b| {
            b.public
                .count
                .cmp(&a.public.count)
                .then_with(|| a.public.id.cmp(&b.public.id))
        });
        families.truncate(config.max_families);
        self.families = families;
    }
}

/// DBSCAN (linfa-clustering, linear neighbour search) over L2-normalised rows with cosine
/// distance `eps`: for unit vectors `‖a − b‖² = 2 (1 − cos)`, so the L2 tolerance is
/// `√(2 eps)` (a hair above, because linfa's range test is strict). Returns each row's
/// cluster (numbered in order of discovery) or `None` for noise; deterministic.
pub fn dbscan(rows: ArrayView2<'_, f32>, eps: f64, min_points: usize) -> Vec<Option<usize>> {
    if rows.nrows() == 0 || rows.ncols() == 0 {
        return vec![None; rows.nrows()];
    }
    let tolerance = ((2.0 * eps.max(0.0)).sqrt() * (1.0 + 1e-5)) as f32;
    match Dbscan::params_with(min_points.max(1), L2Dist, LinearSearch::new())
        .tolerance(tolerance.max(f32::MIN_POSITIVE))
        .check()
    {
        Ok(params) => params.transform(&rows).to_vec(),
        Err(_) => vec![None; rows.nrows()],
    }
}

/// [`dbscan`] on rows given as one flat row-major slice of `columns` columns (a trailing
/// partial row is ignored).
pub fn dbscan_flat(
    values: &[f32],
    columns: usize,
    eps: f64,
    min_points: usize,
) -> Vec<Option<usize>> {
    let rows = values.len().checked_div(columns).unwrap_or(0);
    match ArrayView2::from_shape((rows, columns), &values[..rows * columns]) {
        Ok(view) => dbscan(view, eps, min_points),
        Err(_) => Vec::new(),
    }
}
