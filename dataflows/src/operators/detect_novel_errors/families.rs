//! Pure text novelty detection: messages are tokenised, weighted with TF-IDF over a bounded
//! sample, clustered with DBSCAN (cosine distance), and each cluster becomes an "error
//! family". A message farther than `eps` from every core point of every family is novel.
//!
//! No timely, no clock: times come in with each message. Nothing here fails; an empty or
//! unparseable message is a message with no tokens (and is novel until it repeats).

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
}

impl Default for NoveltyConfig {
    fn default() -> Self {
        Self {
            sample_size: 512,
            eps: 0.35,
            min_points: 3,
            refit_every: 64,
            min_sample: 16,
            cores_per_family: 8,
            examples_per_family: 3,
            max_families: 256,
        }
    }
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

/// A sparse L2-normalised vector: `(term, weight)` sorted by term.
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

/// The vocabulary and inverse document frequencies of one fit.
#[derive(Debug, Clone, Default)]
struct Vocabulary {
    ids: FxHashMap<String, u32>,
    idf: Vec<f32>,
    /// Weight of a token that never occurred in the sample (the largest idf).
    unseen_idf: f32,
}

impl Vocabulary {
    fn build(messages: &[String]) -> Self {
        let mut ids: FxHashMap<String, u32> = FxHashMap::default();
        let mut df: Vec<u32> = Vec::new();
        let mut seen: Vec<u32> = Vec::new();
        for message in messages {
            seen.clear();
            for token in tokens(message) {
                let next = ids.len() as u32;
                let id = *ids.entry(token.into_owned()).or_insert(next);
                if id as usize == df.len() {
                    df.push(0);
                }
                if !seen.contains(&id) {
                    seen.push(id);
                    df[id as usize] += 1;
                }
            }
        }
        let n = messages.len() as f32;
        let idf = df
            .iter()
            .map(|&d| ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0)
            .collect();
        Self {
            ids,
            idf,
            unseen_idf: (1.0 + n).ln() + 1.0,
        }
    }

    /// TF-IDF of `message`; unseen tokens get ids past the vocabulary so they count in the
    /// norm (a message made of new words is far from everything). `out` is reused.
    fn vectorise(&self, message: &str, out: &mut Sparse) {
        out.clear();
        let mut unseen = 0u32;
        for token in tokens(message) {
            let (id, weight) = match self.ids.get(token.as_ref()) {
                Some(&id) => (id, self.idf[id as usize]),
                None => {
                    unseen += 1;
                    (u32::MAX - unseen, self.unseen_idf)
                }
            };
            match out.iter_mut().find(|(term, _)| *term == id) {
                Some(entry) => entry.1 += weight,
                None => out.push((id, weight)),
            }
        }
        out.sort_unstable_by_key(|&(term, _)| term);
        let norm = out.iter().map(|&(_, w)| w * w).sum::<f32>().sqrt();
        if norm > 0.0 {
            for entry in out.iter_mut() {
                entry.1 /= norm;
            }
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
/// Memory: `sample_size` messages, at most `max_families` families each holding
/// `cores_per_family` vectors and `examples_per_family` examples.
#[derive(Debug, Clone, Default)]
pub struct NoveltyDetector {
    sample: Vec<(String, u64)>,
    sample_next: usize,
    since_fit: usize,
    novel_since_fit: usize,
    vocabulary: Vocabulary,
    families: Vec<FamilyState>,
    fitted: bool,
    refits: u64,
    eps: f64,
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

impl NoveltyDetector {
    /// An empty detector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of DBSCAN refits so far.
    pub fn refits(&self) -> u64 {
        self.refits
    }

    /// The current families, largest first.
    pub fn families(&self) -> Vec<ErrorFamily> {
        self.families.iter().map(|f| f.public.clone()).collect()
    }

    /// Judges `message` against the current families without changing anything.
    pub fn check(&mut self, message: &str) -> NoveltyVerdict {
        if !self.fitted {
            return NoveltyVerdict {
                cold_start: true,
                novel: false,
                family: None,
                distance: 1.0,
            };
        }
        let mut vector = std::mem::take(&mut self.scratch);
        self.vocabulary.vectorise(message, &mut vector);
        let (best, distance) = self.nearest(&vector);
        self.scratch = vector;
        NoveltyVerdict {
            cold_start: false,
            novel: best.is_none(),
            family: best.map(|i| self.families[i].public.id.clone()),
            distance,
        }
    }

    fn nearest(&self, vector: &[(u32, f32)]) -> (Option<usize>, f64) {
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
            (Some(index), distance) if distance <= self.eps_hint() => (Some(index), distance),
            (_, distance) => (None, distance.max(0.0)),
        }
    }

    fn eps_hint(&self) -> f64 {
        self.eps
    }

    /// Judges `message` (as [`Self::check`]), counts it into its family, adds it to the
    /// sample and reclusters when the schedule says so.
    pub fn observe(&mut self, message: &str, ts: u64, config: &NoveltyConfig) -> NoveltyVerdict {
        self.eps = config.eps;
        let verdict = self.check(message);
        if let Some(id) = &verdict.family {
            if let Some(family) = self.families.iter_mut().find(|f| &f.public.id == id) {
                family.public.count += 1;
                family.public.first_seen = family.public.first_seen.min(ts);
                family.public.last_seen = family.public.last_seen.max(ts);
                if family.public.examples.len() >= config.examples_per_family {
                    family.public.examples.remove(0);
                }
                if config.examples_per_family > 0 {
                    family.public.examples.push(message.to_owned());
                }
            }
        }
        if verdict.novel {
            self.novel_since_fit += 1;
        }
        if self.sample.len() < config.sample_size {
            self.sample.push((message.to_owned(), ts));
        } else if config.sample_size > 0 {
            self.sample[self.sample_next] = (message.to_owned(), ts);
        }
        self.sample_next = (self.sample_next + 1) % config.sample_size.max(1);
        self.since_fit += 1;
        let due = if self.fitted {
            self.since_fit >= config.refit_every || self.novel_since_fit >= config.min_points
        } else {
            self.sample.len() >= config.min_sample
        };
        if due {
            self.refit(config);
        }
        verdict
    }

    /// Reclusters the sample: TF-IDF, DBSCAN with cosine distance, families from clusters.
    /// Cost is O(sample_size²) sparse dot products, bounded by the sample cap.
    pub fn refit(&mut self, config: &NoveltyConfig) {
        self.refits += 1;
        self.fitted = true;
        self.since_fit = 0;
        self.novel_since_fit = 0;
        let messages: Vec<String> = self.sample.iter().map(|(m, _)| m.clone()).collect();
        self.vocabulary = Vocabulary::build(&messages);
        let vectors: Vec<Sparse> = messages
            .iter()
            .map(|m| {
                let mut v = Vec::new();
                self.vocabulary.vectorise(m, &mut v);
                v
            })
            .collect();
        let labels = dbscan(&vectors, config.eps, config.min_points);
        let clusters = labels.iter().filter_map(|l| *l).max().map_or(0, |m| m + 1);
        let mut previous: FxHashMap<String, ErrorFamily> = self
            .families
            .drain(..)
            .map(|f| (f.public.id.clone(), f.public))
            .collect();
        let mut families = Vec::with_capacity(clusters);
        for cluster in 0..clusters {
            let members: Vec<usize> = (0..vectors.len())
                .filter(|&i| labels[i] == Some(cluster))
                .collect();
            // Centroid, then members ordered by closeness to it.
            let mut centroid: FxHashMap<u32, f32> = FxHashMap::default();
            for &m in &members {
                for &(term, weight) in &vectors[m] {
                    *centroid.entry(term).or_insert(0.0) += weight;
                }
            }
            let mut centroid: Sparse = centroid.into_iter().collect();
            centroid.sort_unstable_by_key(|&(t, _)| t);
            let mut ranked: Vec<(f64, usize)> = members
                .iter()
                .map(|&m| (-dot(&vectors[m], &centroid), m))
                .collect();
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let representative = ranked[0].1;
            let template = template(&messages[representative]);
            let id = family_id(&template);
            let core_points: Vec<Sparse> = ranked
                .iter()
                .filter(|(_, m)| is_core(&vectors, *m, config.eps, config.min_points))
                .take(config.cores_per_family.max(1))
                .map(|(_, m)| vectors[*m].clone())
                .collect();
            let first_seen = members.iter().map(|&m| self.sample[m].1).min().unwrap_or(0);
            let last_seen = members.iter().map(|&m| self.sample[m].1).max().unwrap_or(0);
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
                    count: members.len() as u64,
                    examples: ranked
                        .iter()
                        .take(config.examples_per_family)
                        .map(|(_, m)| messages[*m].clone())
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

fn is_core(vectors: &[Sparse], index: usize, eps: f64, min_points: usize) -> bool {
    vectors
        .iter()
        .filter(|other| 1.0 - dot(&vectors[index], other) <= eps)
        .count()
        >= min_points
}

/// DBSCAN with cosine distance over L2-normalised sparse vectors. Returns each point's
/// cluster (numbered in order of discovery) or `None` for noise. Deterministic: points are
/// visited in index order.
pub fn dbscan(vectors: &[Sparse], eps: f64, min_points: usize) -> Vec<Option<usize>> {
    let n = vectors.len();
    let neighbours: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| 1.0 - dot(&vectors[i], &vectors[j]) <= eps)
                .collect()
        })
        .collect();
    let mut labels: Vec<Option<usize>> = vec![None; n];
    let mut visited = vec![false; n];
    let mut cluster = 0;
    for start in 0..n {
        if visited[start] || neighbours[start].len() < min_points {
            continue;
        }
        let mut stack = vec![start];
        visited[start] = true;
        while let Some(point) = stack.pop() {
            labels[point] = Some(cluster);
            if neighbours[point].len() < min_points {
                continue; // border point: joins, does not expand
            }
            for &next in &neighbours[point] {
                if labels[next].is_none() {
                    labels[next] = Some(cluster);
                }
                if !visited[next] {
                    visited[next] = true;
                    stack.push(next);
                }
            }
        }
        cluster += 1;
    }
    labels
}
