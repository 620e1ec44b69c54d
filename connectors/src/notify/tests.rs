//! Channel tests against real local peers: an HTTP server (axum, on its own runtime so it
//! can be killed with its connections) and a real SMTP server (Python `aiosmtpd`).

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use megamind_dataflows::model::{AlertAct, AlertRecord, AlertStatus, Severity};
use megamind_dataflows::time::{ManualClock, Stopwatch};
use tokio::sync::mpsc;

use super::config::{Secret, SmtpSecurity};
use super::*;

fn alert(id: &str, severity: Severity, status: AlertStatus) -> AlertRecord {
    AlertRecord {
        rule_id: Some("latency".into()),
        message: Some("p99 above 70 ms".to_owned()),
        labels: vec![("team".into(), "api".into())],
        since: 1_000,
        value: Some(91.5),
        threshold: Some(70.0),
        fired: 1,
        acknowledged: (status == AlertStatus::Acknowledged).then(|| AlertAct {
            by: "ana".into(),
            at: 2_000,
            note: None,
        }),
        ..AlertRecord::new(
            id.to_owned(),
            format!("latency <high> & rising on {id}"),
            severity,
            status,
            2_000,
        )
    }
}

fn notification(group: &str) -> Arc<Notification> {
    Arc::new(Notification::new(
        group,
        "new",
        vec![
            alert("latency-01", Severity::High, AlertStatus::Firing),
            alert("latency-02", Severity::Critical, AlertStatus::Acknowledged),
        ],
        Some("http://megamind.example:8080/"),
    ))
}

/// One request as the receiver saw it.
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

/// A real HTTP server on its own runtime and thread; `kill` stops it together with every
/// open connection (as a crashed peer would).
struct Receiver {
    address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Serves POST / on `address` (port 0: any); answers 503 to the first `failures`
    /// requests, then 200. Every request is reported on `seen`.
    fn start(address: SocketAddr, failures: u32, seen: mpsc::UnboundedSender<Received>) -> Self {
        let listener = std::net::TcpListener::bind(address).unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let failures = Arc::new(AtomicU32::new(failures));
                let app = axum::Router::new().route(
                    "/",
                    axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                        let failures = Arc::clone(&failures);
                        let seen = seen.clone();
                        async move {
                            let _ = seen.send(Received { headers, body });
                            let failing = failures
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                    n.checked_sub(1)
                                })
                                .is_ok();
                            if failing {
                                StatusCode::SERVICE_UNAVAILABLE
                            } else {
                                StatusCode::OK
                            }
                        }
                    }),
                );
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
            // Dropping the runtime here also drops every connection task.
        });
        Self {
            address,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.address)
    }

    fn kill(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn retry(attempts: u32) -> RetryConfig {
    RetryConfig {
        attempts: NonZeroU32::new(attempts).unwrap(),
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(80),
        timeout: Duration::from_secs(2),
    }
}

fn config(channels: Vec<(&str, ChannelConfig)>, attempts: u32) -> NotifyConfig {
    NotifyConfig {
        queue: NonZeroUsize::new(16).unwrap(),
        retry: retry(attempts),
        dead_letter_path: None,
        channels: channels
            .into_iter()
            .map(|(name, channel)| (name.to_owned(), channel))
            .collect(),
    }
}

async fn next(seen: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("the receiver got nothing within 10 s")
        .expect("the receiver stopped")
}

/// Waits (bounded) until `probe` holds for the notifier's counters.
async fn until(notifier: &Notifier, what: &str, probe: impl Fn(&[ChannelCounts]) -> bool) {
    let watch = Stopwatch::start();
    while !probe(&notifier.counts()) {
        assert!(
            watch.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}: {:?}",
            notifier.counts()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const SECRET: &str = "s3cret-key";

#[tokio::test]
async fn webhook_is_signed_retried_and_dead_lettered_when_the_peer_dies() {
    let (seen_sender, mut seen) = mpsc::unbounded_channel();
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), 0, seen_sender.clone());
    let address = receiver.address;
    let dead_dir = tempfile::tempdir().unwrap();
    let mut config = config(
        vec![(
            "hook",
            ChannelConfig::Webhook(HttpChannelConfig {
                url: receiver.url(),
                secret: Some(Secret::new(SECRET)),
            }),
        )],
        3,
    );
    config.dead_letter_path = Some(dead_dir.path().join("dead.jsonl"));
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let notifier = Notifier::start(&config, clock);

    // 1. Delivered and signed.
    assert!(notifier.notify("hook", notification("team=api")));
    let request = next(&mut seen).await;
    let timestamp: u64 = request.headers[webhook::TIMESTAMP_HEADER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(timestamp, 1_700_000_000_000);
    let signature = request.headers[webhook::SIGNATURE_HEADER].to_str().unwrap();
    assert!(webhook::verify(
        SECRET.as_bytes(),
        timestamp,
        &request.body,
        signature
    ));
    assert!(!webhook::verify(
        b"wrong",
        timestamp,
        &request.body,
        signature
    ));
    assert!(!webhook::verify(
        SECRET.as_bytes(),
        timestamp + 1,
        &request.body,
        signature
    ));
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["group"], "team=api");
    assert_eq!(body["status"], "firing");
    assert_eq!(body["alerts"][0]["id"], "latency-01");
    assert_eq!(body["alerts"][1]["acknowledged"]["by"], "ana");
    assert_eq!(
        body["links"][0],
        "http://megamind.example:8080/v1/alerts/latency-01"
    );
    until(&notifier, "the first delivery", |c| c[0].sent == 1).await;

    // 2. The peer dies: three failed tries, then a dead letter (in memory and on disk).
    receiver.kill();
    assert!(notifier.notify("hook", notification("team=db")));
    until(&notifier, "the dead letter", |c| c[0].dead_lettered == 1).await;
    let counts = &notifier.counts()[0];
    assert_eq!(
        (counts.sent, counts.failed_attempts, counts.dropped),
        (1, 3, 0)
    );
    let letters = notifier.dead_letters();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (letters[0].channel.as_str(), letters[0].attempts),
        ("hook", 3)
    );
    assert_eq!(letters[0].notification.group, "team=db");
    assert!(
        letters[0].error.contains("http request failed"),
        "{}",
        letters[0].error
    );
    let on_disk = std::fs::read_to_string(dead_dir.path().join("dead.jsonl")).unwrap();
    let line: DeadLetter = serde_json::from_str(on_disk.trim()).unwrap();
    assert_eq!(line.notification.group, "team=db");

    // 3. It comes back, failing twice first: retries with backoff get the third through.
    let receiver = Receiver::start(address, 2, seen_sender);
    assert!(notifier.notify("hook", notification("team=web")));
    for _ in 0..3 {
        let request = next(&mut seen).await;
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["group"], "team=web");
    }
    until(&notifier, "the retried delivery", |c| c[0].sent == 2).await;
    let counts = &notifier.counts()[0];
    assert_eq!(
        (counts.failed_attempts, counts.dead_lettered),
        (5, 1),
        "two more failed tries, no new dead letter"
    );
    receiver.kill();
}

#[test]
fn backoff_is_exponential_with_full_jitter_and_capped() {
    use rand::SeedableRng;
    let retry = RetryConfig {
        attempts: NonZeroU32::new(10).unwrap(),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(1_000),
        timeout: Duration::from_secs(1),
    };
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    for attempt in 1..=10u32 {
        let ceiling = Duration::from_millis((100u64 << (attempt - 1)).min(1_000));
        let samples: Vec<Duration> = (0..200)
            .map(|_| backoff(&retry, attempt, &mut rng))
            .collect();
        assert!(samples.iter().all(|d| *d <= ceiling), "attempt {attempt}");
        let largest = samples.iter().max().unwrap();
        assert!(
            *largest > ceiling / 2,
            "jitter spreads over the whole range"
        );
    }
}

#[test]
fn full_queue_drops_and_counts_without_blocking() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // A black-hole address: nothing listens, but the delivery task never runs in this
        // single-threaded runtime while we enqueue, so the queue (16) fills.
        let config = config(
            vec![(
                "hook",
                ChannelConfig::Webhook(HttpChannelConfig {
                    url: "http://127.0.0.1:9/".to_owned(),
                    secret: None,
                }),
            )],
            1,
        );
        let notifier = Notifier::start(&config, Arc::new(ManualClock::new(0)));
        let accepted = (0..40)
            .filter(|_| notifier.notify("hook", notification("g")))
            .count();
        assert_eq!(accepted, 16);
        assert_eq!(notifier.counts()[0].dropped, 24);
        assert!(
            !notifier.notify("nope", notification("g")),
            "unknown channel refused"
        );
    });
}

#[tokio::test]
async fn slack_and_teams_payloads_follow_their_documented_formats() {
    let (seen_sender, mut seen) = mpsc::unbounded_channel();
    let receiver = Receiver::start("127.0.0.1:0".parse().unwrap(), 0, seen_sender);
    let config = config(
        vec![
            (
                "slack",
                ChannelConfig::Slack(HttpChannelConfig {
                    url: receiver.url(),
                    secret: None,
                }),
            ),
            (
                "teams",
                ChannelConfig::Teams(HttpChannelConfig {
                    url: receiver.url(),
                    secret: None,
                }),
            ),
        ],
        1,
    );
    let notifier = Notifier::start(&config, Arc::new(ManualClock::new(0)));

    assert!(notifier.notify("slack", notification("team=api")));
    let request = next(&mut seen).await;
    assert_eq!(request.headers["content-type"], "application/json");
    let slack: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert!(slack["text"]
        .as_str()
        .unwrap()
        .starts_with("[FIRING:2] critical"));
    let blocks = slack["blocks"].as_array().unwrap();
    assert!(blocks.len() <= 50);
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= 150);
    assert_eq!(blocks[1]["type"], "section");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    let section = blocks[1]["text"]["text"].as_str().unwrap();
    assert!(
        section.contains("<http://megamind.example:8080/v1/alerts/latency-01|latency &lt;high&gt; &amp; rising on latency-01>"),
        "{section}"
    );
    assert_eq!(blocks.last().unwrap()["type"], "context");

    assert!(notifier.notify("teams", notification("team=api")));
    let request = next(&mut seen).await;
    let teams: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(teams["type"], "message");
    let attachment = &teams["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert!(attachment["contentUrl"].is_null());
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(card["version"], "1.4");
    assert_eq!(card["body"][0]["type"], "TextBlock");
    assert_eq!(card["body"][1]["type"], "FactSet");
    assert_eq!(card["body"][1]["facts"][3]["title"], "Fingerprint");
    assert_eq!(card["body"][1]["facts"][3]["value"], "latency-01");
    assert_eq!(card["actions"][0]["type"], "Action.OpenUrl");
    until(&notifier, "both deliveries", |c| {
        c.iter().filter(|c| c.kind != "log").all(|c| c.sent == 1)
    })
    .await;
    receiver.kill();
}

/// The Python interpreter with `aiosmtpd` (`MEGAMIND_TEST_PYTHON`, else `python3`); panics
/// with how to install it when missing: this test never skips.
fn smtp_python() -> String {
    let python = std::env::var("MEGAMIND_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .args(["-c", "import aiosmtpd; print(aiosmtpd.__version__)"])
        .output();
    match output {
        Ok(output) if output.status.success() => python,
        _ => panic!(
            "the email test needs a real SMTP server: Python {python:?} with aiosmtpd \
             (.ci/run installs aiosmtpd==1.4.6 in .ci/.venv and exports \
             MEGAMIND_TEST_PYTHON; by hand: .ci/.venv/bin/pip install aiosmtpd==1.4.6)"
        ),
    }
}

struct Smtp(Child);

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server_with_text_and_html_bodies() {
    let python = smtp_python();
    let maildir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Smtp(
        Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir.path().join("maildir"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let watch = Stopwatch::start();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            watch.elapsed() < Duration::from_secs(15),
            "aiosmtpd did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config = config(
        vec![(
            "mail",
            ChannelConfig::Email(EmailConfig {
                host: "127.0.0.1".to_owned(),
                port,
                security: SmtpSecurity::None,
                username: None,
                password: None,
                ca_file: None,
                from: "megamind <alerts@megamind.test>".to_owned(),
                to: vec![
                    "oncall@megamind.test".to_owned(),
                    "db@megamind.test".to_owned(),
                ],
            }),
        )],
        3,
    );
    assert!(config.problems("notify").is_empty());
    let notifier = Notifier::start(&config, Arc::new(ManualClock::new(0)));
    assert!(notifier.notify("mail", notification("team=api")));
    until(&notifier, "the email", |c| {
        c[0].sent == 1 || c[0].dead_lettered == 1
    })
    .await;
    assert_eq!(
        notifier.counts()[0].sent,
        1,
        "{:?}",
        notifier.dead_letters()
    );

    let new = maildir.path().join("maildir").join("new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1);
    let mail = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(mail.contains("Subject: [FIRING:2] critical"), "{mail}");
    assert!(
        mail.contains("To: oncall@megamind.test, db@megamind.test"),
        "{mail}"
    );
    assert!(mail.contains("multipart/alternative"), "{mail}");
    assert!(mail.contains("Content-Type: text/plain"), "{mail}");
    assert!(mail.contains("Content-Type: text/html"), "{mail}");
    assert!(
        mail.contains("latency &lt;high&gt; &amp; rising"),
        "html escaped: {mail}"
    );
}

/// Runs `openssl` (a real CLI, like the SMTP peer a real server) and panics with its output
/// when it fails: this test never skips.
fn openssl(args: &[&str], dir: &std::path::Path) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|error| {
            panic!("the STARTTLS test makes its certificates with the openssl CLI: {error}")
        });
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A private CA and a `localhost` server certificate it signed, in `dir`.
fn make_certificates(dir: &std::path::Path) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=megamind test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        dir,
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
}

/// STARTTLS and AUTH against a real server (aiosmtpd requiring both, with a certificate
/// from a private CA given as `ca_file`): the right password delivers a plain-text + HTML
/// message over TLS; a wrong one is refused and dead-lettered, never sent in clear.
#[tokio::test]
async fn email_over_starttls_with_auth_reaches_a_real_smtp_server() {
    let python = smtp_python();
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let peer = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/notify/smtp_tls_peer.py"
    );
    let outbox = dir.path().join("outbox");
    let _server = Smtp(
        Command::new(python)
            .arg(peer)
            .arg(port.to_string())
            .arg(dir.path().join("server.pem"))
            .arg(dir.path().join("server.key"))
            .args(["megamind", "s3cret"])
            .arg(&outbox)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let watch = Stopwatch::start();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            watch.elapsed() < Duration::from_secs(15),
            "the STARTTLS SMTP peer did not listen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let channel = |password: &str| {
        ChannelConfig::Email(EmailConfig {
            host: "localhost".to_owned(),
            port,
            security: SmtpSecurity::Starttls,
            username: Some("megamind".to_owned()),
            password: Some(serde_json::from_value::<Secret>(serde_json::json!(password)).unwrap()),
            ca_file: Some(dir.path().join("ca.pem").display().to_string()),
            from: "megamind <alerts@megamind.test>".to_owned(),
            to: vec!["oncall@megamind.test".to_owned()],
        })
    };
    let config = config(
        vec![("mail", channel("s3cret")), ("bad", channel("wrong"))],
        1,
    );
    assert!(
        config.problems("notify").is_empty(),
        "{:?}",
        config.problems("notify")
    );
    let notifier = Notifier::start(&config, Arc::new(ManualClock::new(0)));
    assert!(notifier.notify("mail", notification("team=api")));
    assert!(notifier.notify("bad", notification("team=api")));
    until(&notifier, "both emails settle", |c| {
        c.iter()
            .filter(|c| c.kind == "email")
            .all(|c| c.sent + c.dead_lettered == 1)
    })
    .await;
    let counts = notifier.counts();
    let by_name = |name: &str| counts.iter().find(|c| c.channel == name).unwrap();
    assert_eq!(by_name("mail").sent, 1, "{:?}", notifier.dead_letters());
    assert_eq!(
        by_name("bad").dead_lettered,
        1,
        "a wrong password is refused"
    );
    let files: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "only the authenticated message arrived");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(files[0].path()).unwrap()).unwrap();
    assert_eq!(record["login"], "megamind");
    assert_eq!(record["tls"], true);
    assert_eq!(
        record["rcpt_tos"],
        serde_json::json!(["oncall@megamind.test"])
    );
    let mail = record["content"].as_str().unwrap();
    assert!(mail.contains("Subject: [FIRING:2] critical"), "{mail}");
    assert!(mail.contains("Content-Type: text/plain"), "{mail}");
    assert!(mail.contains("Content-Type: text/html"), "{mail}");
}

#[test]
fn email_ca_file_problems_name_the_field() {
    let config: NotifyConfig = serde_json::from_value(serde_json::json!({
        "channels": {
            "mail": {"type": "email", "host": "h", "port": 25, "security": "none",
                     "ca_file": "/nonexistent/ca.pem",
                     "from": "a@b.test", "to": ["c@d.test"]}
        }
    }))
    .unwrap();
    let problems = config.problems("alerts.notify").join("\n");
    assert!(
        problems
            .contains("alerts.notify.channels.mail.ca_file: cannot read \"/nonexistent/ca.pem\""),
        "{problems}"
    );
    assert!(
        problems.contains("alerts.notify.channels.mail.ca_file: only used with security"),
        "{problems}"
    );
}

#[test]
fn config_problems_name_every_field() {
    let config: NotifyConfig = toml_like(serde_json::json!({
        "retry": {"initial_backoff": "10s", "max_backoff": "1s"},
        "channels": {
            "hook": {"type": "webhook", "url": "ftp://x"},
            "mail": {"type": "email", "host": "h", "port": 25, "from": "not an address",
                     "to": [], "username": "u"}
        }
    }));
    let problems = config.problems("alerts.notify");
    assert_eq!(
        problems,
        vec![
            "alerts.notify.retry.initial_backoff must not exceed max_backoff",
            "alerts.notify.channels.hook.url must start with http:// or https://",
            "alerts.notify.channels.mail.to must name at least one recipient",
            "alerts.notify.channels.mail.from: \"not an address\" is not an email address",
            "alerts.notify.channels.mail: username and password must be given together",
        ]
    );
    let unknown = serde_json::from_value::<NotifyConfig>(serde_json::json!({
        "channels": {"x": {"type": "pager"}}
    }));
    assert!(unknown.is_err());
}

fn toml_like(value: serde_json::Value) -> NotifyConfig {
    serde_json::from_value(value).unwrap()
}

mod grouping {
    use super::super::route::{routes_for, Grouper, RouteConfig, RoutingConfig};
    use super::*;

    fn labelled(id: &str, team: &str, severity: Severity, status: AlertStatus) -> AlertRecord {
        let mut record = alert(id, severity, status);
        record.labels = vec![("team".into(), team.into())];
        record
    }

    fn routing() -> RoutingConfig {
        RoutingConfig {
            rate_limit: None,
            inhibit_rules: Vec::new(),
            channels: vec!["log".to_owned()],
            group_by: vec!["team".to_owned()],
            group_wait: Duration::from_secs(10),
            group_interval: Duration::from_secs(60),
            max_groups: 3,
            routes: vec![
                RouteConfig {
                    severity: vec![Severity::Critical],
                    labels: BTreeMap::new(),
                    channels: vec!["pager".to_owned()],
                    group_by: None,
                    continue_matching: true,
                },
                RouteConfig {
                    severity: Vec::new(),
                    labels: [("team".to_owned(), "db".to_owned())].into(),
                    channels: vec!["db-hook".to_owned()],
                    group_by: Some(vec!["rule".to_owned()]),
                    continue_matching: false,
                },
            ],
        }
    }

    use std::collections::BTreeMap;

    #[test]
    fn routes_follow_order_and_continue() {
        let config = routing();
        let critical_db = labelled("a", "db", Severity::Critical, AlertStatus::Firing);
        assert_eq!(routes_for(&config, &critical_db), vec![Some(0), Some(1)]);
        let high_db = labelled("b", "db", Severity::High, AlertStatus::Firing);
        assert_eq!(routes_for(&config, &high_db), vec![Some(1)]);
        let high_api = labelled("c", "api", Severity::High, AlertStatus::Firing);
        assert_eq!(routes_for(&config, &high_api), vec![None]);
        assert_eq!(
            config.problems("alerts.routing", ["log", "pager"].into_iter()),
            vec!["alerts.routing.routes[1].channels: unknown channel \"db-hook\""]
        );
    }

    #[test]
    fn one_notification_per_group_after_wait_then_per_interval() {
        let mut grouper = Grouper::new(routing(), None);
        grouper.add(
            0,
            &labelled("a", "api", Severity::High, AlertStatus::Firing),
        );
        grouper.add(
            4_000,
            &labelled("b", "api", Severity::High, AlertStatus::Firing),
        );
        grouper.add(
            5_000,
            &labelled("c", "web", Severity::Low, AlertStatus::Firing),
        );
        assert_eq!(grouper.next_due(), Some(10_000));
        assert!(
            grouper.due(9_999).is_empty(),
            "group_wait holds the first notification"
        );
        let out = grouper.due(10_000);
        assert_eq!(
            out.len(),
            1,
            "the api group waited 10 s; the web group has not"
        );
        assert_eq!(out[0].channels, vec!["log"]);
        assert_eq!(out[0].notification.group, "team=api");
        let ids: Vec<&str> = out[0]
            .notification
            .alerts
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(ids, vec!["a", "b"], "both alerts in one notification");
        assert_eq!(grouper.due(15_000)[0].notification.group, "team=web");

        // An update within group_interval waits for it; then one notification, reason update.
        grouper.add(
            20_000,
            &labelled("a", "api", Severity::High, AlertStatus::Resolved),
        );
        assert!(grouper.due(69_999).is_empty());
        let out = grouper.due(70_000);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].notification.reason, "update");
        assert_eq!(
            out[0].notification.status,
            NotificationStatus::Firing,
            "b still fires"
        );
        // The resolved alert left the group after being reported.
        grouper.add(
            80_000,
            &labelled("b", "api", Severity::High, AlertStatus::Resolved),
        );
        let out = grouper.due(130_000);
        let ids: Vec<&str> = out[0]
            .notification
            .alerts
            .iter()
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(ids, vec!["b"]);
        assert_eq!(out[0].notification.status, NotificationStatus::Resolved);
        assert_eq!(grouper.len(), 1, "only the web group is left");
    }

    #[test]
    fn group_limit_suppresses_and_counts() {
        let mut grouper = Grouper::new(routing(), None);
        for team in ["a", "b", "c", "d", "e"] {
            grouper.add(0, &labelled(team, team, Severity::Low, AlertStatus::Firing));
        }
        assert_eq!((grouper.len(), grouper.suppressed), (3, 2));
        // A critical db alert goes to both the pager route and the db route.
        let mut grouper = Grouper::new(routing(), None);
        grouper.add(
            0,
            &labelled("x", "db", Severity::Critical, AlertStatus::Firing),
        );
        let mut channels: Vec<Vec<String>> = grouper
            .due(10_000)
            .into_iter()
            .map(|o| o.channels)
            .collect();
        channels.sort();
        assert_eq!(
            channels,
            vec![vec!["db-hook".to_owned()], vec!["pager".to_owned()]]
        );
    }

    #[test]
    fn escalated_alerts_also_go_to_the_escalation_channels() {
        let mut grouper = Grouper::new(routing(), None);
        let mut escalated = labelled("a", "api", Severity::Critical, AlertStatus::Firing);
        escalated.escalated_to = vec!["oncall".to_owned()];
        grouper.add(0, &escalated);
        let mut out = grouper.due(10_000);
        out.sort_by(|a, b| a.channels.cmp(&b.channels));
        let channels: Vec<(Vec<String>, &str)> = out
            .iter()
            .map(|o| (o.channels.clone(), o.notification.reason.as_str()))
            .collect();
        assert_eq!(
            channels,
            vec![
                (vec!["oncall".to_owned()], "escalation"),
                (vec!["pager".to_owned()], "new"),
            ]
        );
        // A later step adds a channel: one escalation group, with both channels.
        escalated.escalated_to.push("manager".to_owned());
        grouper.add(20_000, &escalated);
        let out = grouper.due(100_000);
        let escalation: Vec<&Vec<String>> = out
            .iter()
            .filter(|o| o.notification.reason == "escalation")
            .map(|o| &o.channels)
            .collect();
        assert_eq!(
            escalation,
            vec![&vec!["oncall".to_owned(), "manager".to_owned()]]
        );
        // The resolution reaches the escalation channels too, then the groups empty.
        escalated.status = AlertStatus::Resolved;
        grouper.add(200_000, &escalated);
        let out = grouper.due(300_000);
        assert!(out
            .iter()
            .any(|o| o.channels == vec!["oncall".to_owned(), "manager".to_owned()]));
        assert!(grouper.is_empty());
    }

    #[test]
    fn counts_of_alerts_resolved_and_sent_are_dropped_beyond_max_groups_and_that_is_told() {
        let mut config = routing();
        config.max_groups = 1;
        // One group for both alerts.
        config.group_by = vec!["team".to_owned()];
        config.group_wait = Duration::ZERO;
        config.group_interval = Duration::ZERO;
        config.rate_limit = Some(super::super::route::RateLimitConfig {
            per_minute: 1,
            burst: 1,
        });
        let mut grouper = Grouper::new(config, None);
        grouper.add(
            0,
            &labelled("a", "api", Severity::High, AlertStatus::Firing),
        );
        assert_eq!(grouper.due(0).len(), 1, "the burst");
        grouper.add(
            0,
            &labelled("b", "api", Severity::High, AlertStatus::Firing),
        );
        assert!(grouper.due(0).is_empty(), "no token");
        assert_eq!(
            grouper.rate_limited_alerts().len(),
            2,
            "both still held: kept"
        );
        for id in ["a", "b"] {
            grouper.add(
                0,
                &labelled(id, "api", Severity::High, AlertStatus::Resolved),
            );
        }
        let generation = grouper.rate_limited_generation();
        assert_eq!(grouper.due(60_000).len(), 1);
        assert!(
            grouper.rate_limited_alerts().is_empty(),
            "resolved and sent: dropped"
        );
        assert_ne!(
            grouper.rate_limited_generation(),
            generation,
            "the change is told (so it is published and stored)"
        );
        assert_eq!(grouper.rate_limited, 1, "the total stays");
    }

    #[test]
    fn rate_limit_defers_notifications_and_counts_never_drops() {
        let mut config = routing();
        config.max_groups = 100;
        config.group_by = Vec::new();
        config.group_wait = Duration::ZERO;
        // Two at once, then one every 30 s.
        config.rate_limit = Some(super::super::route::RateLimitConfig {
            per_minute: 2,
            burst: 2,
        });
        assert!(config
            .problems("r", ["log", "pager", "db-hook"].into_iter())
            .is_empty());
        let mut grouper = Grouper::new(config, None);
        for id in ["a", "b", "c", "d"] {
            grouper.add(0, &labelled(id, "api", Severity::High, AlertStatus::Firing));
        }
        let first = grouper.due(0);
        assert_eq!(first.len(), 2, "the burst");
        assert_eq!(grouper.rate_limited, 2, "two held back, counted");
        assert_eq!(grouper.next_due(), Some(30_000), "the next token");
        assert!(grouper.due(29_999).is_empty());
        assert_eq!(grouper.due(30_000).len(), 1);
        assert_eq!(grouper.due(60_000).len(), 1);
        let mut sent: Vec<String> = first
            .iter()
            .chain(std::iter::empty())
            .flat_map(|o| o.notification.alerts.iter().map(|a| a.id.clone()))
            .collect();
        sent.sort();
        assert_eq!(sent.len(), 2);
        assert!(
            grouper.due(1_000_000).is_empty(),
            "all four went out, none lost"
        );
        // Each deferral is counted on the alerts it held back (one alert per group here).
        let per_alert = grouper.rate_limited_alerts().clone();
        assert_eq!(per_alert.values().sum::<u64>(), grouper.rate_limited);
        assert_eq!(per_alert.values().copied().max(), Some(2), "{per_alert:?}");
        assert!(
            sent.iter().all(|id| !per_alert.contains_key(id)),
            "{per_alert:?}"
        );
        // Readers see the count on the alert, next to the dataflow's own reasons.
        let metrics = super::super::route::DispatchMetrics::default();
        *metrics.rate_limited_alerts.lock().unwrap() = per_alert.clone();
        let (late, _) = per_alert.iter().next().unwrap();
        let mut alerts = [labelled(late, "api", Severity::High, AlertStatus::Firing)];
        alerts[0].suppressed_by.insert("cooldown".to_owned(), 1);
        metrics.annotate(&mut alerts);
        assert_eq!(
            alerts[0].suppressed_by[super::super::route::RATE_LIMIT],
            per_alert[late]
        );
        assert_eq!(alerts[0].suppressed_by["cooldown"], 1);
        assert_eq!(alerts[0].inhibited_by, None);
        let mut zero = routing();
        zero.rate_limit = Some(super::super::route::RateLimitConfig {
            per_minute: 0,
            burst: 0,
        });
        assert_eq!(
            zero.problems("alerts.routing", ["log", "pager", "db-hook"].into_iter()),
            vec![
                "alerts.routing.rate_limit.per_minute must be positive".to_owned(),
                "alerts.routing.rate_limit.burst must be positive".to_owned(),
            ]
        );
    }

    fn inhibiting() -> RoutingConfig {
        RoutingConfig {
            routes: Vec::new(),
            group_by: Vec::new(),
            group_wait: Duration::ZERO,
            inhibit_rules: vec![super::super::route::InhibitRule {
                source: r#"severity="critical""#.to_owned(),
                target: r#"severity=~"low|medium|high""#.to_owned(),
                equal: vec!["team".to_owned()],
            }],
            ..routing()
        }
    }

    fn sent_ids(out: &[super::super::route::Outgoing]) -> Vec<String> {
        out.iter()
            .flat_map(|outgoing| outgoing.notification.alerts.iter().map(|a| a.id.clone()))
            .collect()
    }

    #[test]
    fn a_firing_critical_mutes_lower_alerts_of_its_team_until_it_resolves() {
        let mut grouper = Grouper::new(inhibiting(), None);
        let critical = labelled("crit", "db", Severity::Critical, AlertStatus::Firing);
        grouper.add(0, &critical);
        // Same team, lower severity: muted, counted, visible with the muting alert.
        grouper.add(
            0,
            &labelled("db-high", "db", Severity::High, AlertStatus::Firing),
        );
        // Other team: not muted. Another critical: not a target.
        grouper.add(
            0,
            &labelled("api-high", "api", Severity::High, AlertStatus::Firing),
        );
        grouper.add(
            0,
            &labelled("crit-2", "db", Severity::Critical, AlertStatus::Firing),
        );
        assert_eq!(sent_ids(&grouper.due(0)), ["api-high", "crit", "crit-2"]);
        assert_eq!(grouper.inhibited, 1);
        let muted: Vec<(&str, &str, usize)> = grouper
            .muted()
            .map(|m| (m.alert.id.as_str(), m.by.as_str(), m.rule))
            .collect();
        assert_eq!(muted, [("db-high", "crit", 0)]);
        // A further change of the muted alert is muted too (and counted).
        let mut acked = labelled("db-high", "db", Severity::High, AlertStatus::Acknowledged);
        acked.updated_at = 5;
        grouper.add(1, &acked);
        assert_eq!(grouper.inhibited, 2);
        assert!(grouper.due(100_000).is_empty());
        // crit resolves, but crit-2 still mutes db-high.
        grouper.add(
            2,
            &labelled("crit", "db", Severity::Critical, AlertStatus::Resolved),
        );
        assert_eq!(sent_ids(&grouper.due(100_000)), ["crit"]);
        assert_eq!(grouper.muted().count(), 1);
        assert_eq!(grouper.muted().next().unwrap().by, "crit-2");
        // crit-2 resolves: db-high is released with its latest change (acknowledged).
        grouper.add(
            200_000,
            &labelled("crit-2", "db", Severity::Critical, AlertStatus::Resolved),
        );
        let out = grouper.due(200_000);
        assert_eq!(sent_ids(&out), ["crit-2", "db-high"]);
        let released = out
            .iter()
            .flat_map(|o| o.notification.alerts.iter())
            .find(|a| a.id == "db-high")
            .unwrap();
        assert_eq!(released.status, AlertStatus::Acknowledged);
        assert_eq!(grouper.muted().count(), 0);
        // A muted alert that resolves while muted is dropped from the muted set, unsent.
        grouper.add(
            300_000,
            &labelled("c3", "web", Severity::Critical, AlertStatus::Firing),
        );
        grouper.add(
            300_000,
            &labelled("w", "web", Severity::Low, AlertStatus::Firing),
        );
        grouper.add(
            300_001,
            &labelled("w", "web", Severity::Low, AlertStatus::Resolved),
        );
        assert_eq!(grouper.muted().count(), 0);
        assert_eq!(sent_ids(&grouper.due(400_000)), ["c3"]);
        assert_eq!(grouper.inhibited, 4);
    }

    #[test]
    fn inhibition_rules_are_validated() {
        let mut config = inhibiting();
        config.inhibit_rules[0].target = r#"severity=~"(""#.to_owned();
        let problems = config.problems("alerts.routing", ["log"].into_iter());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "alerts.routing.inhibit_rules[0].target: matcher 1: invalid regular expression"
            ),
            "{problems:?}"
        );
    }
}

/// The dispatcher shell: what is due at once is handed over on the offering thread; what
/// waits (or queues) is handed over by the task, and the changes of one alert keep their
/// order either way.
mod dispatcher {
    use std::sync::Mutex;

    use super::super::route::{
        run_dispatcher, DispatchOptions, HandoffHook, RateLimitConfig, RoutingConfig, RATE_LIMIT,
    };
    use super::*;
    use crate::store::rate_limits::RateLimitCounts;

    type Seen = Arc<Mutex<Vec<Vec<(String, AlertStatus)>>>>;

    fn start(group_wait: Duration) -> (super::super::route::DispatchHandle, Seen) {
        start_with(group_wait, None, DispatchOptions::default())
    }

    fn start_with(
        group_wait: Duration,
        rate_limit: Option<RateLimitConfig>,
        options: DispatchOptions,
    ) -> (super::super::route::DispatchHandle, Seen) {
        let clock: Arc<dyn megamind_dataflows::time::Clock> =
            Arc::new(megamind_dataflows::time::SystemClock);
        let notifier = Arc::new(Notifier::start(
            &NotifyConfig::default(),
            Arc::clone(&clock),
        ));
        let seen: Seen = Arc::default();
        let hook_seen = Arc::clone(&seen);
        let hook: HandoffHook = Arc::new(move |notification: &Notification| {
            hook_seen.lock().unwrap().push(
                notification
                    .alerts
                    .iter()
                    .map(|alert| (alert.id.clone(), alert.status))
                    .collect(),
            );
        });
        let routing = RoutingConfig {
            group_by: vec!["team".to_owned()],
            group_wait,
            group_interval: Duration::ZERO,
            rate_limit,
            ..RoutingConfig::default()
        };
        let options = DispatchOptions {
            on_handoff: Some(hook),
            ..options
        };
        let (handle, _task) = run_dispatcher(routing, None, 64, notifier, clock, options);
        (handle, seen)
    }

    #[tokio::test]
    async fn restored_rate_limit_counts_continue_and_every_change_is_told() {
        let told: Arc<Mutex<Vec<RateLimitCounts>>> = Arc::default();
        let hook_told = Arc::clone(&told);
        let restored = RateLimitCounts {
            total: 5,
            alerts: [("old".to_owned(), 5)].into(),
        };
        // One notification at once, then one a minute.
        let limit = RateLimitConfig {
            per_minute: 1,
            burst: 1,
        };
        let (handle, seen) = start_with(
            Duration::ZERO,
            Some(limit),
            DispatchOptions {
                restored,
                on_rate_limited: Some(Arc::new(move |counts| {
                    hook_told.lock().unwrap().push(counts);
                })),
                ..DispatchOptions::default()
            },
        );
        // Read back at once, before anything happened in this run.
        let old = handle
            .metrics()
            .annotated(alert("old", Severity::High, AlertStatus::Firing));
        assert_eq!(old.suppressed_by.get(RATE_LIMIT), Some(&5), "{old:?}");
        assert_eq!(handle.metrics().rate_limited.load(Ordering::Relaxed), 5);
        assert!(
            told.lock().unwrap().is_empty(),
            "restored counts are not written back"
        );

        handle.offer_all([&alert("a", Severity::High, AlertStatus::Firing)]);
        assert_eq!(seen.lock().unwrap().len(), 1, "the burst lets one out");
        handle.offer_all([&alert("b", Severity::High, AlertStatus::Firing)]);
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "the next one waits for a token"
        );
        let told = told.lock().unwrap().clone();
        assert_eq!(
            told.last(),
            Some(&RateLimitCounts {
                total: 6,
                // The group still holds "a" (firing): the deferred update carries both.
                alerts: [
                    ("a".to_owned(), 1),
                    ("b".to_owned(), 1),
                    ("old".to_owned(), 5)
                ]
                .into(),
            }),
            "{told:?}"
        );
        assert_eq!(handle.metrics().rate_limited.load(Ordering::Relaxed), 6);
    }

    async fn wait_for(seen: &Seen, count: usize) -> Vec<Vec<(String, AlertStatus)>> {
        for _ in 0..500 {
            if seen.lock().unwrap().len() >= count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        seen.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn due_groups_are_handed_over_by_the_offering_thread() {
        let (handle, seen) = start(Duration::ZERO);
        let first = alert("a", Severity::High, AlertStatus::Firing);
        let second = alert("b", Severity::High, AlertStatus::Firing);
        // No await between the offer and the check: the task cannot have run.
        handle.offer_all([&first, &second]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![
                ("a".to_owned(), AlertStatus::Firing),
                ("b".to_owned(), AlertStatus::Firing)
            ]],
            "one notification for the batch's group, handed over inside offer_all"
        );
        assert_eq!(handle.metrics().received.load(Ordering::Relaxed), 2);
        assert_eq!(handle.metrics().notifications.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_change_queued_first_is_not_overtaken() {
        let (handle, seen) = start(Duration::ZERO);
        handle.offer(alert("a", Severity::High, AlertStatus::Firing));
        // Something is queued: this change queues behind it instead of going first.
        handle.offer_all([&alert("a", Severity::High, AlertStatus::Resolved)]);
        assert!(
            seen.lock().unwrap().is_empty(),
            "nothing handed over inline"
        );
        let seen = wait_for(&seen, 1).await;
        let last = seen.iter().flatten().last().cloned();
        assert_eq!(
            last,
            Some(("a".to_owned(), AlertStatus::Resolved)),
            "{seen:?}"
        );
        // The queue is empty again: the next change goes inline.
        let before = handle.metrics().notifications.load(Ordering::Relaxed);
        handle.offer_all([&alert("c", Severity::High, AlertStatus::Firing)]);
        assert_eq!(
            handle.metrics().notifications.load(Ordering::Relaxed),
            before + 1
        );
    }

    #[tokio::test]
    async fn a_group_that_waits_is_sent_by_the_task() {
        let (handle, seen) = start(Duration::from_millis(50));
        handle.offer_all([&alert("a", Severity::High, AlertStatus::Firing)]);
        assert!(seen.lock().unwrap().is_empty(), "the group waits 50 ms");
        let seen = wait_for(&seen, 1).await;
        assert_eq!(seen, vec![vec![("a".to_owned(), AlertStatus::Firing)]]);
    }
}
