//! Kafka, end to end against a real Kafka-protocol broker (Tansu, SQLite storage) with an
//! independent client (Python `confluent-kafka`) producing and reading topics:
//!
//! - workload P1 over 4 partitions and 2 workers, one partition never written (idle): the
//!   windows and breaches in the results store equal the Python reference, malformed
//!   messages reach the dead-letter topic with their reason, every window reaches the
//!   windows topic once;
//! - crash test: the same stream consumed by a server killed with SIGKILL at several
//!   points and restarted gives exactly the windows, breaches and alert transitions of a
//!   run that never crashed (nothing missing, nothing twice), and its alerts topic holds
//!   the same distinct breaches and transitions;
//! - a two-process timely cluster consuming the topic computes what one process computes.
//!
//! Peers: the broker binary (`MEGAMIND_TEST_TANSU`, else `tansu` on PATH) and a Python with
//! `confluent_kafka` (`MEGAMIND_TEST_PYTHON`). `bash .ci/run` installs both; a missing peer
//! fails the test and says how to install it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use megamind_connectors::store::results::{ResultRow, ResultsStore};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::{
    eventually, generate_p1, p1_reference, reference_windows, run, spawn, Running, Server,
    WindowKey, WindowValues,
};

const INSTALL: &str = "`bash .ci/run` installs them: the broker with `cargo install tansu@0.6.0 \
     --locked --features libsql --root ~/.cache/megamind-tansu` (exported as \
     MEGAMIND_TEST_TANSU=~/.cache/megamind-tansu/bin/tansu) and `confluent-kafka` in the venv \
     .ci/.venv (exported as MEGAMIND_TEST_PYTHON)";

/// The Tansu binary; panics with how to install it when it is missing.
fn tansu() -> &'static str {
    static TANSU: OnceLock<Result<String, String>> = OnceLock::new();
    let found = TANSU.get_or_init(|| {
        let binary = std::env::var("MEGAMIND_TEST_TANSU").unwrap_or_else(|_| "tansu".to_owned());
        match Command::new(&binary).arg("--version").output() {
            Ok(output) if output.status.success() => Ok(binary),
            other => Err(format!(
                "the Kafka tests need the Tansu broker ({binary:?}: {other:?}); {INSTALL}"
            )),
        }
    });
    match found {
        Ok(binary) => binary,
        Err(problem) => panic!("{problem}"),
    }
}

/// The Python with `confluent_kafka`; panics with how to install it when it is missing.
fn kafka_python() -> &'static str {
    static PYTHON: OnceLock<Result<String, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let python = std::env::var("MEGAMIND_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        match Command::new(&python)
            .args(["-c", "import confluent_kafka"])
            .output()
        {
            Ok(output) if output.status.success() => Ok(python),
            other => Err(format!(
                "the Kafka tests need Python with confluent-kafka ({python:?}: {other:?}); {INSTALL}"
            )),
        }
    });
    match found {
        Ok(python) => python,
        Err(problem) => panic!("{problem}"),
    }
}

fn peer_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("kafka")
        .join("kafka_peer.py")
}

/// A Tansu broker on a free loopback port with SQLite storage in its own directory.
struct Broker {
    /// Where clients connect (the TLS proxy's address for [`Broker::start_tls`]).
    address: String,
    /// The CA certificate clients must trust (TLS only).
    tls_ca: Option<PathBuf>,
    /// The TLS proxy in front of the broker (TLS only).
    proxy: Option<Running>,
    _process: Running,
    _dir: TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("free port")
        .port()
}

impl Broker {
    fn start() -> Broker {
        let port = free_port();
        Self::launch(port, port)
    }

    /// Tansu listening on `port` and advertising `advertised` (where clients connect).
    fn launch(port: u16, advertised: u16) -> Broker {
        let dir = tempfile::tempdir().expect("broker directory");
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised_url = format!("tcp://127.0.0.1:{advertised}");
        let process = spawn(
            "tansu broker",
            Command::new(tansu())
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &advertised_url,
                    "--storage-engine",
                    "sqlite://tansu.db",
                ])
                .current_dir(dir.path()),
        );
        let listening = format!("127.0.0.1:{port}");
        eventually("the broker to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&listening)
                .map(|_| ())
                .map_err(|error| error.to_string())
        });
        Broker {
            address: format!("127.0.0.1:{advertised}"),
            tls_ca: None,
            proxy: None,
            _process: process,
            _dir: dir,
        }
    }

    /// The broker behind a TLS-terminating proxy (tests/kafka/tls_proxy.py) with a fresh
    /// self-signed certificate: the broker advertises the proxy, so every connection a
    /// client makes, bootstrap and partition leaders alike, is TLS.
    fn start_tls() -> Broker {
        let (port, advertised) = (free_port(), free_port());
        let mut broker = Self::launch(port, advertised);
        let certificate = broker._dir.path().join("cert.pem");
        let key = broker._dir.path().join("key.pem");
        let made = run(
            "openssl req",
            Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                ])
                .args(["-subj", "/CN=127.0.0.1"])
                .args(["-addext", "subjectAltName=IP:127.0.0.1"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&certificate),
            Duration::from_secs(60),
        );
        made.assert_success("openssl req (a self-signed certificate)");
        let script = peer_script().with_file_name("tls_proxy.py");
        let mut proxy = spawn(
            "tls_proxy.py",
            Command::new(kafka_python())
                .arg(script)
                .arg(advertised.to_string())
                .arg(format!("127.0.0.1:{port}"))
                .arg(&certificate)
                .arg(&key),
        );
        eventually("the TLS proxy to listen", Duration::from_secs(30), || {
            let out = proxy.stdout_so_far();
            if out.contains("listening") {
                Ok(())
            } else {
                Err(out)
            }
        });
        broker.tls_ca = Some(certificate);
        broker.proxy = Some(proxy);
        broker
    }

    /// TLS handshakes the proxy completed so far.
    fn tls_handshakes(&mut self) -> usize {
        self.proxy.as_mut().map_or(0, |proxy| {
            proxy.stdout_so_far().matches("handshake TLS").count()
        })
    }

    fn peer(&self, args: &[&str]) -> String {
        let mut command = Command::new(kafka_python());
        command
            .arg(peer_script())
            .arg(args[0])
            .arg(&self.address)
            .args(&args[1..])
            .stdin(Stdio::null());
        if let Some(ca) = &self.tls_ca {
            command.env("KAFKA_PEER_SSL_CA", ca);
        }
        let finished = run("kafka_peer.py", &mut command, Duration::from_secs(180));
        finished.assert_success(&format!("kafka_peer.py {}", args[0]));
        finished.stdout
    }

    fn create(&self, topic: &str, partitions: usize) {
        self.peer(&["create", topic, &partitions.to_string()]);
    }

    /// Every record of `topic` up to each partition's end at the time of the call.
    fn consume_to_end(&self, topic: &str) -> Vec<Value> {
        self.peer(&["consume", topic, "end", "--timeout", "60"])
            .lines()
            .map(|line| serde_json::from_str(line).expect("peer output line"))
            .collect()
    }

    fn consume(&self, topic: &str, count: usize) -> Vec<Value> {
        self.peer(&["consume", topic, &count.to_string(), "--timeout", "60"])
            .lines()
            .map(|line| serde_json::from_str(line).expect("peer output line"))
            .collect()
    }
}

/// Environment for a server consuming `topic` as `group` with workload P1's job.
fn kafka_env(
    broker: &Broker,
    topic: &str,
    group: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("MEGAMIND__KAFKA__ENABLED", "true"),
        ("MEGAMIND__KAFKA__BROKERS", broker.address.as_str()),
        ("MEGAMIND__KAFKA__TOPICS", &format!("[\"{topic}\"]")),
        ("MEGAMIND__KAFKA__GROUP_ID", group),
        ("MEGAMIND__KAFKA__COMMIT_INTERVAL", "200ms"),
        ("MEGAMIND__WINDOWS__LENGTH", "5m"),
        ("MEGAMIND__WINDOWS__SLIDE", "10s"),
        ("MEGAMIND__INGEST__ALLOWED_LATENESS", "2s"),
        // The reference covers P1's own series; `anomaly_score` series are derived from
        // scorer state that a restart rebuilds only from the rewind horizon.
        ("MEGAMIND__ANOMALY__ENABLED", "false"),
        (
            "MEGAMIND__KAFKA__CLIENT",
            "{ \"session.timeout.ms\" = \"6000\" }",
        ),
    ]
    .iter()
    .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
    .collect();
    env.extend(
        extra
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
    );
    env
}

fn start(dir: TempDir, env: &[(String, String)]) -> Server {
    let pairs: Vec<(&str, &str)> = env
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    Server::start_in(dir, &pairs)
}

fn results_path(dir: &Path) -> PathBuf {
    dir.join("megamind-data").join("megamind-results.db")
}

fn kafka_status(server: &Server) -> Value {
    let (code, status) = server.get("/v1/status");
    assert_eq!(code, 200, "{status}");
    status["kafka"].clone()
}

/// Waits until every partition is read to its end and the durable frontier reached `at_least`.
fn wait_consumed(server: &Server, expected_messages: u64, at_least: u64) -> Value {
    eventually(
        "the server to consume every message and make its results durable",
        Duration::from_secs(120),
        || {
            let kafka = kafka_status(server);
            let consumed: u64 = kafka["partitions"]
                .as_array()
                .map(|partitions| {
                    partitions
                        .iter()
                        .map(|partition| {
                            // Applied by the worker, not just fetched.
                            partition["processed_offset"].as_u64().unwrap_or(0)
                        })
                        .sum()
                })
                .unwrap_or(0);
            let durable = kafka["durable_frontier_ms"].as_u64().unwrap_or(0);
            if consumed >= expected_messages && durable >= at_least {
                Ok(kafka)
            } else {
                Err(format!("consumed {consumed}/{expected_messages}, durable {durable} < {at_least}: {kafka}"))
            }
        },
    )
}

fn window_rows(rows: &[ResultRow]) -> std::collections::BTreeMap<WindowKey, WindowValues> {
    let mut windows = std::collections::BTreeMap::new();
    for row in rows.iter().filter(|row| row.kind == "window") {
        let body: Value = serde_json::from_str(&row.body).expect("window body");
        let key = (
            body["key"]["session_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body["key"]["name"].as_str().expect("name").to_owned(),
            body["end"].as_u64().expect("end"),
        );
        let values = WindowValues {
            count: body["count"].as_u64().expect("count"),
            mean: body["mean"].as_f64().expect("mean"),
            max: body["max"].as_f64().expect("max"),
        };
        assert!(
            windows.insert(key.clone(), values).is_none(),
            "window {key:?} stored twice with different contents"
        );
    }
    windows
}

#[test]
fn p1_over_four_partitions_matches_the_reference_with_dead_letters_and_an_idle_partition() {
    let broker = Broker::start();
    let work = tempfile::tempdir().expect("work directory");
    let events = generate_p1(work.path(), 40_000);
    broker.create("p1-events", 4);
    broker.create("p1-dead", 1);
    broker.create("p1-windows", 4);
    // Sessions spread over partitions 0..3; partition 3 never gets a message.
    let produced: Value = serde_json::from_str(
        broker
            .peer(&[
                "produce",
                "p1-events",
                events.to_str().expect("path"),
                "3",
                "--malformed-every",
                "5000",
            ])
            .trim(),
    )
    .expect("produce report");
    let malformed = produced["malformed"].as_u64().expect("malformed count");
    assert_eq!(malformed, 8);
    let reference = p1_reference(&events, &work.path().join("reference.jsonl"));
    let expected = reference_windows(&work.path().join("reference.jsonl"));

    let env = kafka_env(
        &broker,
        "p1-events",
        "p1-group",
        &[
            ("MEGAMIND__KAFKA__DEAD_LETTER_TOPIC", "p1-dead"),
            ("MEGAMIND__KAFKA__WINDOWS_TOPIC", "p1-windows"),
            ("MEGAMIND__KAFKA__IDLE_AFTER", "1s"),
        ],
    );
    let dir = tempfile::tempdir().expect("server directory");
    let server = start(dir, &env);
    // Everything consumed; once every partition is idle the watermark follows the wall
    // clock, closing every window of the (2023) stream.
    let kafka = wait_consumed(&server, 40_000 + malformed, 1_700_000_000_000 + 3_600_000);
    let partitions = kafka["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 4, "{kafka}");
    let idle = partitions
        .iter()
        .find(|partition| partition["partition"] == 3)
        .expect("partition 3");
    assert_eq!(idle["consumed"], 0);
    assert_eq!(
        partitions
            .iter()
            .map(|p| p["malformed"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        malformed,
        "{kafka}"
    );
    assert!(partitions.iter().all(|p| p["lag"] == 0), "{kafka}");
    assert_eq!(
        partitions
            .iter()
            .map(|p| p["consumed"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        40_000 + malformed,
        "every message read exactly once: {kafka}"
    );
    let (_, status) = server.get("/v1/status");
    assert_eq!(status["events_accepted"], 40_000, "{status}");
    let (_, metrics) = server.get_text("/metrics");
    assert!(
        metrics.contains("megamind_kafka_lag_messages{topic=\"p1-events\",partition=\"0\"} 0"),
        "{metrics}"
    );

    let path = results_path(server.dir());
    let rows = ResultsStore::read(&path, None).expect("results");
    let windows = window_rows(&rows);
    assert_eq!(windows.len() as u64, reference.windows, "window count");
    assert_eq!(
        windows.values().map(|values| values.count).sum::<u64>(),
        reference.count_sum
    );
    for (key, want) in &expected {
        let got = windows
            .get(key)
            .unwrap_or_else(|| panic!("window {key:?} missing"));
        assert_eq!(got.count, want.count, "{key:?}");
        assert!(
            crate::support::close(got.mean, want.mean),
            "{key:?}: {got:?} vs {want:?}"
        );
        assert!(
            crate::support::close(got.max, want.max),
            "{key:?}: {got:?} vs {want:?}"
        );
    }
    let breaches = rows.iter().filter(|row| row.kind == "breach").count() as u64;
    assert_eq!(breaches, reference.breaches, "breaching windows");

    // Dead letters: the original value, the reason in a header.
    let letters = broker.consume("p1-dead", malformed as usize);
    assert_eq!(letters.len() as u64, malformed, "{letters:?}");
    let reasons: BTreeSet<&str> = letters
        .iter()
        .map(|letter| {
            letter["headers"]["megamind.error.reason"]
                .as_str()
                .expect("reason header")
        })
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["malformed_json", "missing_field", "invalid_type"]),
        "{letters:?}"
    );
    for letter in &letters {
        assert_eq!(letter["headers"]["megamind.source.topic"], "p1-events");
        assert!(letter["headers"]["megamind.error.message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Every window on the windows topic once, keyed `series|end` (the stream has too few
    // events to breach; the alerts topic goes through the same producer but no test reads it).
    let published = broker.consume("p1-windows", windows.len());
    let keys: BTreeSet<&str> = published
        .iter()
        .map(|record| record["key"].as_str().expect("window key"))
        .collect();
    assert_eq!(published.len(), windows.len(), "windows on the topic");
    assert_eq!(keys.len(), windows.len(), "a window published twice");
    assert!(published.iter().all(|record| record["value"]
        .as_str()
        .is_some_and(|value| value.contains("\"kind\":\"window\""))));
    server.stop();
}

#[test]
fn consumes_over_tls_with_the_security_settings_passed_to_librdkafka() {
    const EVENTS: usize = 5_000;
    let mut broker = Broker::start_tls();
    let work = tempfile::tempdir().expect("work directory");
    let events = generate_p1(work.path(), EVENTS);
    broker.create("tls-events", 2);
    broker.peer(&["produce", "tls-events", events.to_str().expect("path"), "2"]);
    p1_reference(&events, &work.path().join("reference.jsonl"));
    let expected = reference_windows(&work.path().join("reference.jsonl"));
    let before = broker.tls_handshakes();
    assert!(before > 0, "the independent client spoke TLS to the proxy");

    let ca = broker.tls_ca.clone().expect("CA");
    let client = format!(
        "{{ \"session.timeout.ms\" = \"6000\", \"security.protocol\" = \"ssl\", \
         \"ssl.ca.location\" = {:?} }}",
        ca.to_str().expect("CA path")
    );
    let mut env = kafka_env(
        &broker,
        "tls-events",
        "tls-group",
        &[("MEGAMIND__KAFKA__IDLE_AFTER", "1s")],
    );
    env.retain(|(key, _)| key != "MEGAMIND__KAFKA__CLIENT");
    env.push(("MEGAMIND__KAFKA__CLIENT".to_owned(), client));
    let server = start(tempfile::tempdir().expect("dir"), &env);
    wait_consumed(&server, EVENTS as u64, 1_700_000_000_000 + 3_600_000);
    assert!(
        broker.tls_handshakes() > before,
        "megamind's consumer connected through TLS"
    );
    let rows = ResultsStore::read(&results_path(server.dir()), None).expect("results");
    assert_reference_windows(&window_rows(&rows), &expected);
    server.stop();

    // A client that does not trust the certificate cannot start and says where it failed.
    let mut env = kafka_env(&broker, "tls-events", "tls-untrusted", &[]);
    env.retain(|(key, _)| key != "MEGAMIND__KAFKA__CLIENT");
    env.push((
        "MEGAMIND__KAFKA__CLIENT".to_owned(),
        "{ \"security.protocol\" = \"ssl\" }".to_owned(),
    ));
    let dir = tempfile::tempdir().expect("dir");
    let refused = run(
        "megamind serve (untrusted certificate)",
        crate::support::megamind()
            .args(["serve", "--http", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env(
                "MEGAMIND__STORE__PATH",
                crate::support::store_path(dir.path()),
            )
            .envs(
                env.iter()
                    .map(|(key, value)| (key.as_str(), value.as_str())),
            ),
        Duration::from_secs(90),
    );
    assert!(!refused.status.success(), "{refused:?}");
    assert!(
        refused.stderr.contains("fetch topic metadata"),
        "{}",
        crate::support::excerpt(&refused.stderr)
    );
}

/// Compares `windows` with the reference, window by window.
fn assert_reference_windows(
    windows: &std::collections::BTreeMap<WindowKey, WindowValues>,
    expected: &std::collections::BTreeMap<WindowKey, WindowValues>,
) {
    assert_eq!(windows.len(), expected.len(), "window count");
    for (key, want) in expected {
        let got = windows
            .get(key)
            .unwrap_or_else(|| panic!("window {key:?} missing"));
        assert_eq!(got.count, want.count, "{key:?}");
        assert!(
            crate::support::close(got.mean, want.mean) && crate::support::close(got.max, want.max),
            "{key:?}: {got:?} vs {want:?}"
        );
    }
}

#[test]
fn a_two_process_cluster_consuming_four_partitions_computes_what_one_process_computes() {
    const EVENTS: usize = 30_000;
    let broker = Broker::start();
    let work = tempfile::tempdir().expect("work directory");
    let events = generate_p1(work.path(), EVENTS);
    broker.create("cluster-events", 4);
    broker.peer(&[
        "produce",
        "cluster-events",
        events.to_str().expect("path"),
        "4",
    ]);
    p1_reference(&events, &work.path().join("reference.jsonl"));
    let expected = reference_windows(&work.path().join("reference.jsonl"));

    let (port0, port1) = crate::support::free_ports();
    let hosts = work.path().join("hosts.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{port0}\n127.0.0.1:{port1}\n")).expect("hostfile");
    let env = kafka_env(
        &broker,
        "cluster-events",
        "cluster-group",
        &[("MEGAMIND__KAFKA__IDLE_AFTER", "1s")],
    );
    let pairs: Vec<(&str, &str)> = env
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_str()))
        .collect();
    // Both members start before either is waited for: each waits for the other.
    let first = Server::cluster_member(tempfile::tempdir().expect("dir"), 0, &hosts, &pairs);
    let second = Server::cluster_member(tempfile::tempdir().expect("dir"), 1, &hosts, &pairs);
    let members = [first.ready(), second.ready()];

    // Partition n belongs to global worker n % 2, i.e. to process n % 2.
    let mut consumed = 0;
    for (process, member) in members.iter().enumerate() {
        let kafka = kafka_status(member);
        let owned: BTreeSet<u64> = kafka["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|partition| partition["partition"].as_u64().expect("partition"))
            .collect();
        let want: BTreeSet<u64> = (0..4).filter(|n| n % 2 == process as u64).collect();
        assert_eq!(owned, want, "process {process}: {kafka}");
    }
    // Windows close everywhere once every partition of the cluster is idle.
    for member in &members {
        let kafka = wait_consumed(member, 1, 1_700_000_000_000 + 3_600_000);
        consumed += kafka["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|partition| partition["consumed"].as_u64().unwrap_or(0))
            .sum::<u64>();
    }
    assert_eq!(
        consumed, EVENTS as u64,
        "every message read by exactly one process"
    );

    // Each process stores the windows of the keys its workers own; together they are the
    // reference, and no window is in both.
    let mut windows = std::collections::BTreeMap::new();
    let mut per_process = Vec::new();
    for member in &members {
        let directory = member.dir().join("megamind-data");
        let path = std::fs::read_dir(&directory)
            .expect("store directory")
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.ends_with("-results.db"))
            })
            .unwrap_or_else(|| panic!("no results store in {}", directory.display()));
        let rows = ResultsStore::read(&path, None).expect("results");
        let own = window_rows(&rows);
        per_process.push(own.len());
        for (key, values) in own {
            assert!(
                windows.insert(key.clone(), values).is_none(),
                "window {key:?} stored by both processes"
            );
        }
    }
    assert!(
        per_process.iter().all(|count| *count > 0),
        "both processes own some series: {per_process:?}"
    );
    assert_reference_windows(&windows, &expected);
    for member in &members {
        member.signal_stop();
    }
    for member in members {
        member.stop();
    }
}

/// The stored results that must be identical with and without crashes: windows, breaches
/// and alert transitions before `frontier`.
fn exact_rows(dir: &Path, frontier: u64) -> Vec<ResultRow> {
    let mut rows: Vec<ResultRow> = ResultsStore::read(&results_path(dir), None)
        .expect("results")
        .into_iter()
        .filter(|row| {
            matches!(row.kind.as_str(), "window" | "breach" | "alert") && row.time < frontier
        })
        .collect();
    rows.sort();
    rows
}

fn assert_same_rows(what: &str, left: &[ResultRow], right: &[ResultRow]) {
    if left == right {
        return;
    }
    let left_set: BTreeSet<&ResultRow> = left.iter().collect();
    let right_set: BTreeSet<&ResultRow> = right.iter().collect();
    let missing: Vec<_> = left_set.difference(&right_set).take(3).collect();
    let extra: Vec<_> = right_set.difference(&left_set).take(3).collect();
    panic!(
        "{what}: {} rows without crash, {} with; first missing: {missing:#?}\nfirst extra: {extra:#?}",
        left.len(),
        right.len()
    );
}

#[test]
fn kill_9_at_several_points_gives_exactly_the_results_of_a_run_without_crash() {
    // About 180 s of event time with 1 minute windows: the rewind horizon (window plus two
    // slides, 80 s) is shorter than the stream, so restarts resume mid-partition.
    const EVENTS: usize = 120_000;
    let broker = Broker::start();
    let work = tempfile::tempdir().expect("work directory");
    let events = generate_p1(work.path(), EVENTS);
    let events_path = events.to_str().expect("path").to_owned();
    broker.create("crash-events", 4);
    // Partitions stay active for the whole test (they never go idle), so the final frontier
    // is the smallest partition's newest time minus the lateness, in both runs.
    let extra = [
        ("MEGAMIND__KAFKA__IDLE_AFTER", "1h"),
        ("MEGAMIND__WINDOWS__LENGTH", "1m"),
        ("MEGAMIND__WINDOWS__SLIDE", "10s"),
    ];
    let chunks = [0usize, 30_000, 60_000, 90_000, EVENTS];
    let produce = |from: usize, to: usize| {
        broker.peer(&[
            "produce",
            "crash-events",
            &events_path,
            "4",
            "--from",
            &from.to_string(),
            "--to",
            &to.to_string(),
        ]);
    };
    produce(chunks[0], chunks[1]);

    // The run without a crash reads the stream in the same chunks.
    broker.create("baseline-alerts", 2);
    broker.create("crash-alerts", 2);
    let with_alerts = |topic: &'static str| {
        let mut all = extra.to_vec();
        all.push(("MEGAMIND__KAFKA__ALERTS_TOPIC", topic));
        all
    };
    let baseline_env = kafka_env(
        &broker,
        "crash-events",
        "baseline",
        &with_alerts("baseline-alerts"),
    );
    let baseline = start(tempfile::tempdir().expect("dir"), &baseline_env);
    for window in chunks.windows(2).skip(1) {
        produce(window[0], window[1]);
    }
    let final_frontier = final_frontier(&events, 4, 2_000);
    wait_consumed(&baseline, EVENTS as u64, final_frontier);
    let baseline_dir = baseline.kill();
    let expected = exact_rows(baseline_dir.path(), final_frontier);
    assert!(
        expected.iter().filter(|row| row.kind == "window").count() > 10_000,
        "the stream should close many windows: {}",
        expected.len()
    );
    assert!(expected.iter().any(|row| row.kind == "breach"));

    // The crashing run: a new group and store over the same topic.
    let env = kafka_env(
        &broker,
        "crash-events",
        "crashing",
        &with_alerts("crash-alerts"),
    );
    let mut dir = tempfile::tempdir().expect("dir");
    // Kill 1: mid-way through the first half of the topic (timing-dependent position).
    let server = start(dir, &env);
    eventually("some progress", Duration::from_secs(60), || {
        let durable = kafka_status(&server)["durable_frontier_ms"]
            .as_u64()
            .unwrap_or(0);
        if durable > 1_700_000_060_000 {
            Ok(())
        } else {
            Err(format!("durable {durable}"))
        }
    });
    dir = server.kill();
    // Kill 2: immediately after a restart, before it could commit anything new.
    let server = start(dir, &env);
    dir = server.kill();
    // Kill 3: after everything was read, before or after the last commit.
    let server = start(dir, &env);
    wait_consumed(&server, 0, final_frontier.saturating_sub(30_000));
    dir = server.kill();
    // Kill 4: after the final frontier was durable and rewind positions past the start of
    // every partition were committed (the next restart must add nothing).
    let server = start(dir, &env);
    wait_consumed(&server, 0, final_frontier);
    eventually(
        "mid-stream rewind positions to be committed",
        Duration::from_secs(60),
        || {
            let kafka = kafka_status(&server);
            let committed = kafka["partitions"].as_array().is_some_and(|partitions| {
                partitions
                    .iter()
                    .all(|partition| partition["committed_offset"].as_i64().unwrap_or(0) > 0)
            });
            if committed {
                Ok(())
            } else {
                Err(kafka.to_string())
            }
        },
    );
    let kafka = kafka_status(&server);
    assert!(
        kafka["suppress_before_ms"].as_u64().unwrap_or(0) > 1_700_000_000_000,
        "{kafka}"
    );
    dir = server.kill();
    let server = start(dir, &env);
    eventually(
        "the partition plan in the log",
        Duration::from_secs(10),
        || {
            let log = server.log();
            if log.matches("kafka partition start").count() >= 4 {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    let plan: String = server
        .log()
        .lines()
        .filter(|line| line.contains("kafka partition start"))
        .collect::<Vec<_>>()
        .join("\n");
    // The restart resumes every partition mid-stream (at its committed rewind position)...
    let kafka = kafka_status(&server);
    let partitions = kafka["partitions"].as_array().expect("partitions");
    assert!(
        partitions.iter().all(|partition| {
            // Where it started: the next offset to read minus what it has read since.
            let fetched = partition["fetched_offset"].as_i64().unwrap_or(0);
            let consumed = partition["consumed"].as_i64().unwrap_or(0);
            fetched - consumed > 0
        }),
        "every partition should resume mid-stream: {kafka}\n{plan}"
    );
    // ...re-reads to the end, and recognises what it recomputed before the durable
    // frontier as already delivered.
    let kafka = eventually(
        "the restart to re-read its rewind horizon",
        Duration::from_secs(120),
        || {
            let kafka = kafka_status(&server);
            let caught_up = kafka["partitions"].as_array().is_some_and(|partitions| {
                partitions
                    .iter()
                    .all(|partition| partition["high_watermark"].is_i64() && partition["lag"] == 0)
            });
            if caught_up && kafka["suppressed"].as_u64().unwrap_or(0) > 0 {
                Ok(kafka)
            } else {
                Err(kafka.to_string())
            }
        },
    );
    assert!(
        kafka["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .all(|partition| partition["consumed"].as_u64().unwrap_or(0) < 30_000),
        "a restart re-reads only its rewind horizon, not the whole partition: {kafka}"
    );
    dir = server.kill();
    let got = exact_rows(dir.path(), final_frontier);
    assert_same_rows("windows, breaches and alert transitions", &expected, &got);

    // The alerts topic: at least once, so a crash may publish a record twice, but the
    // distinct records (key `fingerprint|time` and value) are those of the run without one.
    let published = |topic: &str| -> (usize, BTreeSet<(String, String)>) {
        let records = broker.consume_to_end(topic);
        let distinct: BTreeSet<(String, String)> = records
            .iter()
            .filter_map(|record| {
                let key = record["key"].as_str()?.to_owned();
                let value = record["value"].as_str()?.to_owned();
                let time: u64 = key.rsplit('|').next()?.parse().ok()?;
                let kind = serde_json::from_str::<Value>(&value).ok()?["kind"].clone();
                (time < final_frontier && (kind == "breach" || kind == "alert"))
                    .then_some((key, value))
            })
            .collect();
        (records.len(), distinct)
    };
    let (baseline_records, baseline_alerts) = published("baseline-alerts");
    let (crash_records, crash_alerts) = published("crash-alerts");
    assert!(
        baseline_alerts.iter().any(|(_, value)| value.contains("\"kind\":\"alert\""))
            && baseline_alerts.iter().any(|(_, value)| value.contains("\"kind\":\"breach\"")),
        "the run without a crash publishes breaches and alert transitions ({baseline_records} records)"
    );
    assert_eq!(
        baseline_alerts.len(),
        expected
            .iter()
            .filter(|row| row.kind == "breach" || row.kind == "alert")
            .count(),
        "one alerts-topic record per stored breach and transition"
    );
    let missing: Vec<_> = baseline_alerts.difference(&crash_alerts).take(3).collect();
    let extra_records: Vec<_> = crash_alerts.difference(&baseline_alerts).take(3).collect();
    assert!(
        missing.is_empty() && extra_records.is_empty(),
        "alerts topic after crashes ({crash_records} records) differs from the run without \
         ({baseline_records}): missing {missing:#?}, extra {extra_records:#?}"
    );
}

/// The engine's final frontier over `events` split into `partitions` by session: the
/// smallest partition's newest event time minus the lateness.
fn final_frontier(events: &Path, partitions: u64, lateness: u64) -> u64 {
    let text = std::fs::read_to_string(events).expect("events");
    let mut newest = vec![0u64; usize::try_from(partitions).expect("partitions")];
    for line in text.lines() {
        let event: Value = serde_json::from_str(line).expect("event");
        let session: u64 = event["session_id"].as_str().expect("session")[1..]
            .parse()
            .expect("session number");
        let slot = &mut newest[usize::try_from(session % partitions).expect("slot")];
        *slot = (*slot).max(event["ts"].as_u64().expect("ts"));
    }
    newest.into_iter().min().expect("partitions") - lateness
}
