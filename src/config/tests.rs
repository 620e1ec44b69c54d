use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_parse_and_validate() {
    let config = Config::load(None, Vec::new()).unwrap();
    assert_eq!(config.windows.length, Duration::from_secs(300));
    assert_eq!(config.windows.slide, Duration::from_secs(10));
    assert_eq!(config.ingest.allowed_lateness, Duration::from_secs(2));
    assert_eq!(config.rules.len(), 2);
    assert_eq!(config.server.http_listen.port(), 8080);
}

#[test]
fn file_then_environment_override_defaults() {
    let config = Config::from_toml_str("[windows]\nlength = \"10m\"\n").unwrap();
    assert_eq!(config.windows.length, Duration::from_secs(600));
    assert_eq!(
        config.windows.slide,
        Duration::from_secs(10),
        "untouched keys keep defaults"
    );

    let config = Config::load(
        None,
        env(&[
            ("MEGAMIND__WINDOWS__SLIDE", "30s"),
            ("MEGAMIND__INGEST__QUEUE_CAPACITY", "9"),
            ("MEGAMIND__SERVER__HTTP_LISTEN", "127.0.0.1:9999"),
            ("UNRELATED", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(config.windows.slide, Duration::from_secs(30));
    assert_eq!(config.ingest.queue_capacity, 9);
    assert_eq!(config.server.http_listen.port(), 9999);
}

#[test]
fn all_problems_are_reported_at_once() {
    let error = Config::load(
        None,
        env(&[
            ("MEGAMIND__WINDOWS__LENGTH", "45m"),
            ("MEGAMIND__INGEST__QUEUE_CAPACITY", "many"),
            ("MEGAMIND__VIEWS__MAX_SESSIONS", "0"),
            ("MEGAMIND__SERVER__COLOUR", "blue"),
            ("MEGAMIND__NOPE__X", "1"),
        ]),
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("unknown section `nope`"), "{text}");
    assert!(text.contains("[ingest]"), "{text}");
    assert!(text.contains("colour"), "{text}");
    assert_eq!(error.problems.len(), 3, "{text}");

    // Semantic checks run once the sections parse, and report everything too.
    let error = Config::load(
        None,
        env(&[
            ("MEGAMIND__WINDOWS__LENGTH", "45m"),
            ("MEGAMIND__VIEWS__MAX_SESSIONS", "0"),
        ]),
    )
    .unwrap_err();
    assert_eq!(error.problems.len(), 2, "{error}");
}

#[test]
fn rules_are_validated() {
    let text = format!(
        "{}{}",
        text_without_rule_b(),
        r#"
[[rules]]
id = "b"
metric = "x"
aggregate = "median"
op = ">"
threshold = 1.0
severity = "low"
"#
    );
    let error = Config::from_toml_str(&text).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("rules[2]"), "{text}");
    assert!(text.contains("median"), "{text}");
    let text = Config::from_toml_str(&text_without_rule_b())
        .unwrap_err()
        .to_string();
    assert!(text.contains("used more than once"), "{text}");
    assert!(text.contains("metric must not be empty"), "{text}");
}

fn text_without_rule_b() -> String {
    r#"
[[rules]]
id = "a"
metric = "x"
aggregate = "p99"
op = ">="
threshold = 1.0
severity = "critical"

[[rules]]
id = "a"
metric = ""
aggregate = "mean"
op = "<"
threshold = 1.0
severity = "low"
"#
    .to_owned()
}

#[test]
fn beyond_loopback_requires_an_mcp_token() {
    let error = Config::from_toml_str("[server]\nhttp_listen = \"0.0.0.0:8080\"\n").unwrap_err();
    assert!(
        error.to_string().contains("mcp.auth_token is required"),
        "{error}"
    );
    let config = Config::load(
        None,
        env(&[
            ("MEGAMIND__SERVER__HTTP_LISTEN", "0.0.0.0:8080"),
            ("MEGAMIND__MCP__AUTH_TOKEN", "s3cret"),
        ]),
    )
    .unwrap();
    assert_eq!(
        format!("{:?}", config.mcp.auth_token),
        "Some(***)",
        "secrets never print"
    );
}

#[test]
fn every_shipped_config_parses() {
    let docker = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker");
    let mut checked = 0;
    for entry in std::fs::read_dir(docker).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            // Container configs listen beyond loopback, so they expect the MCP token from the
            // environment, as documented in the file.
            let mut env = vec![
                (
                    "MEGAMIND__MCP__AUTH_TOKEN".to_owned(),
                    "test-token".to_owned(),
                ),
                (
                    "MEGAMIND__WEBSOCKET__ADMIN_TOKEN".to_owned(),
                    "test-token".to_owned(),
                ),
            ];
            if path.ends_with("alerts.example.toml") {
                // The alerting example takes its SMTP password from the environment.
                env.push((
                    "MEGAMIND__ALERTS__NOTIFY__CHANNELS__ONCALL_EMAIL__PASSWORD".to_owned(),
                    "test-password".to_owned(),
                ));
            }
            Config::load(Some(&path), env)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            checked += 1;
        }
    }
    assert!(
        checked >= 1,
        "docker/ should ship at least one example config"
    );
}

#[test]
fn alerts_example_has_every_channel_type_and_routes() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/alerts.example.toml");
    let env = vec![(
        "MEGAMIND__ALERTS__NOTIFY__CHANNELS__ONCALL_EMAIL__PASSWORD".to_owned(),
        "p".to_owned(),
    )];
    let config = Config::load(Some(&path), env).unwrap();
    assert_eq!(
        format!("{:?}", config.alerts.notify.channels["oncall_email"])
            .matches("***")
            .count(),
        1,
        "the password never prints"
    );
    let kinds: Vec<&str> = config
        .alerts
        .notify
        .channels
        .values()
        .map(|channel| channel.kind())
        .collect();
    assert_eq!(kinds, vec!["email", "webhook", "slack", "teams"]);
    assert_eq!(config.alerts.routing.routes.len(), 2);
    assert_eq!(config.alerts.routing.inhibit_rules.len(), 1);
    assert_eq!(config.alerts.routing.inhibit_rules[0].equal, vec!["team"]);
    assert!(config.alerts.routing.routes[0].continue_matching);
    assert_eq!(
        config
            .alerts
            .routing
            .rate_limit
            .map(|limit| (limit.per_minute, limit.burst)),
        Some((60, 20))
    );
    assert_eq!(config.alerts.escalations.len(), 2);
    assert_eq!(config.alerts.escalations[0].steps.len(), 2);
    assert_eq!(
        config.analytics().alerts.escalations,
        config.alerts.escalations,
        "escalations reach the dataflow"
    );
    assert_eq!(
        config.analytics().alerts.cooldowns,
        [(
            "latency_p99_critical".to_owned(),
            std::time::Duration::from_secs(600)
        )]
        .into(),
        "cooldowns reach the dataflow"
    );
    assert_eq!(
        config
            .analytics()
            .alerts
            .templates
            .keys()
            .collect::<Vec<_>>(),
        vec!["latency_mean_high", "model_accuracy_low"],
        "templates reach the dataflow"
    );
    assert_eq!(config.rules.len(), 4);
}

#[test]
fn bad_rule_templates_fail_the_config_check() {
    let error = Config::from_toml_str(
        r#"
        [[rules]]
        id = "t"
        metric = "x"
        aggregate = "mean"
        op = ">"
        threshold = 1.0
        severity = "low"
        summary = "{{ $value }} on {{ $lables.team }}"
        annotations = { runbook = "{{ $rule" }
        "#,
    )
    .unwrap_err();
    let text = error.problems.join("\n");
    assert!(
        text.contains("rule \"t\": summary: unknown placeholder `{{ $lables.team }}`"),
        "{text}"
    );
}

#[test]
fn alert_routing_problems_are_all_reported() {
    let error = Config::from_toml_str(
        r#"
        [alerts.notify.channels.hook]
        type = "webhook"
        url = "ftp://nowhere"
        [alerts.routing]
        channels = ["missing"]
        [[alerts.escalations]]
        severity = ["high"]
        [[alerts.escalations]]
        repeat = "5m"
        [[alerts.escalations.steps]]
        after = "1m"
        channels = ["pager"]
        "#,
    )
    .unwrap_err();
    let text = error.problems.join("\n");
    assert!(
        text.contains("alerts.notify.channels.hook.url must start with http:// or https://"),
        "{text}"
    );
    assert!(
        text.contains("alerts.routing.channels: unknown channel \"missing\""),
        "{text}"
    );
    assert!(
        text.contains("alerts.escalations[0]: needs at least one of steps or repeat"),
        "{text}"
    );
    assert!(
        text.contains("alerts.escalations[1].steps[0].channels: unknown channel \"pager\""),
        "{text}"
    );
}

#[test]
fn insights_settings_are_validated_and_reported_together() {
    let config = Config::load(None, Vec::new()).unwrap();
    assert!(config.insights.enabled);
    assert_eq!(config.insights.health_interval, Duration::from_secs(5));
    let dataflow = config.analytics().insights;
    assert_eq!(dataflow.forecast.horizon, Duration::from_secs(15 * 60));
    assert_eq!(dataflow.predict.trainer.min_training, 30);

    let error = Config::load(
        None,
        env(&[
            ("MEGAMIND__INSIGHTS__ALPHA", "1.5"),
            ("MEGAMIND__INSIGHTS__FORECAST_MIN_WINDOWS", "40"),
            ("MEGAMIND__INSIGHTS__HEALTH_INTERVAL", "10ms"),
        ]),
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("insights.alpha must be in (0, 1]"), "{text}");
    assert!(
        text.contains("insights.forecast_min_windows must be between 3 and forecast_history"),
        "{text}"
    );
    assert!(text.contains("insights.health_interval"), "{text}");
    assert_eq!(error.problems.len(), 3, "{text}");

    let rule = Config::from_toml_str(
        "[[rules]]\nid = \"p95\"\nmetric = \"latency_ms\"\naggregate = \"p95\"\nop = \">\"\n\
         threshold = 500.0\nseverity = \"high\"\nforecast = \"15m\"\n",
    )
    .unwrap();
    assert_eq!(rule.rules[0].forecast, Some(Duration::from_secs(15 * 60)));
}

#[test]
fn config_silences_and_rule_forecasts_are_validated_together() {
    let error = Config::from_toml_str(
        "[[alerts.silences]]\nid = \"maint\"\nmatchers = 'team=\"db\"'\nduration = \"2h\"\n\
         [[alerts.silences]]\nid = \"maint\"\nmatchers = \"team=~(\"\nduration = \"2h\"\n\
         [[alerts.silences]]\nid = \"open\"\nmatchers = \"a=b\"\n\
         [[rules]]\nid = \"p95\"\nmetric = \"latency_ms\"\naggregate = \"p95\"\nop = \">\"\n\
         threshold = 500.0\nseverity = \"high\"\nforecast = \"0s\"\n",
    )
    .unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("alerts.silences[1].id: silence id \"maint\" is used more than once"),
        "{text}"
    );
    assert!(
        text.contains("alerts.silences[1].matchers: matcher 1: invalid regular expression"),
        "{text}"
    );
    assert!(
        text.contains("alerts.silences[2].ends_at: a silence needs ends_at or duration"),
        "{text}"
    );
    assert!(
        text.contains("rule \"p95\": forecast must be between 1s and 7days"),
        "{text}"
    );
    assert_eq!(error.problems.len(), 4, "{text}");
    let fine = Config::from_toml_str(
        "[[alerts.silences]]\nid = \"window\"\nmatchers = 'team=\"db\"'\n\
         starts_at = \"2026-11-28T22:00:00Z\"\nends_at = \"2026-11-29T02:00:00Z\"\n\
         created_by = \"ops\"\ncomment = \"upgrade\"\n",
    )
    .unwrap();
    assert_eq!(fine.alerts.silences[0].created_by, "ops");
}

#[test]
fn accuracy_rules_need_the_correctness_series() {
    let rule =
        "[[rules]]\nid = \"accuracy_low\"\nmetric = \"model.correct\"\naggregate = \"mean\"\n\
                op = \"<\"\nthreshold = 0.9\nseverity = \"high\"\n";
    let config = Config::from_toml_str(rule).unwrap();
    assert!(config.ml.correctness_series, "on by default");
    assert!(config.analytics().models.correctness_series);
    let error = Config::from_toml_str(&format!("[ml]\ncorrectness_series = false\n{rule}"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(
            "rules[0].metric: rule \"accuracy_low\" watches model.correct, which needs \
             ml.correctness_series = true"
        ),
        "{error}"
    );
}
