use super::*;

fn decode(json: &str) -> Result<Event, DataError> {
    decode_event(json.as_bytes(), &DecodeLimits::default(), 42)
}

fn rejected(json: &str) -> (ErrorReason, Option<String>) {
    let error = decode(json).expect_err(json);
    (error.reason, error.field.map(|field| field.to_string()))
}

#[test]
fn metric_with_labels_and_session() {
    let event = decode(
        r#"{"type":"metric","ts":1700000000000,"session_id":"s1","name":"latency_ms","value":51.25,"labels":{"region":"eu","host":"a"}}"#,
    )
    .unwrap();
    assert_eq!(event.ts, 1_700_000_000_000);
    let EventBody::Metric(metric) = &event.body else {
        panic!("not a metric")
    };
    assert_eq!(metric.name, "latency_ms");
    assert_eq!(metric.value, 51.25);
    assert_eq!(metric.session_id.as_deref(), Some("s1"));
    // Labels are canonical: sorted by key.
    assert_eq!(
        metric.labels,
        vec![("host".into(), "a".into()), ("region".into(), "eu".into())]
    );
    assert!(event.attrs.is_empty());
}

#[test]
fn type_may_come_last_and_ts_defaults_to_ingestion_time() {
    let event = decode(r#"{"value":1,"name":"x","type":"metric"}"#).unwrap();
    assert_eq!(event.ts, 42);
    assert!(matches!(event.body, EventBody::Metric(_)));
}

#[test]
fn unknown_and_foreign_fields_are_kept_in_attrs() {
    let event =
        decode(r#"{"type":"metric","name":"x","value":1,"host":{"a":[1,2]},"kind":"operation"}"#)
            .unwrap();
    assert_eq!(
        event.attrs,
        vec![
            ("host".into(), r#"{"a":[1,2]}"#.to_owned()),
            ("kind".into(), r#""operation""#.to_owned())
        ]
    );
    // and they come back out in the wire form
    let json = event.to_json();
    assert_eq!(json["host"]["a"][1], 2);
    assert_eq!(json["kind"], "operation");
}

#[test]
fn every_variant_round_trips_through_json() {
    let lines = [
        r#"{"type":"session","ts":5,"session_id":"s","user_id":"u","kind":"operation","operation":"read","duration_ms":12.5,"tokens":300,"success":false,"message":"boom"}"#,
        r#"{"type":"metric","ts":5,"name":"cpu","value":-0.5,"labels":{"host":"h"}}"#,
        r#"{"type":"prediction","ts":5,"model_id":"m","model_version":"v2","prediction_id":"p1","predicted":"yes","confidence":0.75,"latency_ms":3,"features":{"b":2,"a":1.5},"session_id":"s"}"#,
        r#"{"type":"outcome","ts":9,"prediction_id":"p1","actual":"no","model_id":"m"}"#,
        r#"{"type":"alert_command","ts":9,"command":"create","title":"disk","severity":"critical","labels":{"team":"db"},"message":"full"}"#,
        r#"{"type":"alert_command","ts":9,"command":"acknowledge","alert_id":"a-1","actor":"bob","note":"looking"}"#,
        r#"{"type":"alert_command","ts":9,"command":"silence","alert_id":"s-1","matchers":"team=\"db\", severity=~\"low|medium\"","duration_ms":3600000,"actor":"ana","note":"maintenance"}"#,
        r#"{"type":"alert_command","ts":9,"command":"expire_silence","alert_id":"s-1","actor":"ana"}"#,
        r#"{"type":"alert_command","ts":9,"command":"silence","alert_id":"s-2","matchers":"a=b","duration_ms":60000,"starts_at":120000,"origin":"config","actor":"ops"}"#,
    ];
    for line in lines {
        let event = decode(line).unwrap();
        let again = decode(&event.to_json().to_string()).unwrap();
        assert_eq!(event, again, "{line}");
    }
}

#[test]
fn silence_commands_are_checked_field_by_field() {
    use ErrorReason::*;
    let cases: &[(&str, ErrorReason, &str, &str)] = &[
        (
            r#"{"type":"alert_command","command":"silence","alert_id":"s","duration_ms":1000}"#,
            MissingField,
            "matchers",
            "is required for type `alert_command`",
        ),
        (
            r#"{"type":"alert_command","command":"silence","alert_id":"s","matchers":"team=db"}"#,
            MissingField,
            "duration_ms",
            "is required for type `alert_command`",
        ),
        (
            r#"{"type":"alert_command","command":"silence","alert_id":"s","matchers":"team=~\"(\"","duration_ms":1000}"#,
            InvalidValue,
            "matchers",
            "matcher 1: invalid regular expression",
        ),
        (
            r#"{"type":"alert_command","command":"silence","alert_id":"s","matchers":"","duration_ms":1000}"#,
            InvalidValue,
            "matchers",
            "at least one matcher is required",
        ),
        (
            r#"{"type":"alert_command","command":"silence","alert_id":"s","matchers":"a=b","duration_ms":0}"#,
            InvalidValue,
            "duration_ms",
            "must be between 1 and",
        ),
        (
            r#"{"type":"alert_command","command":"silence","alert_id":"s","matchers":"a=b","duration_ms":5,"starts_at":-1}"#,
            InvalidValue,
            "starts_at",
            "must be a whole number",
        ),
        (
            r#"{"type":"alert_command","command":"silence","alert_id":"s","matchers":"a=b","duration_ms":5,"origin":7}"#,
            InvalidValue,
            "origin",
            "must be a string",
        ),
        (
            r#"{"type":"alert_command","command":"silence","matchers":"a=b","duration_ms":5}"#,
            MissingField,
            "alert_id",
            "is required for command `silence`",
        ),
    ];
    for (line, reason, field, message) in cases {
        let error = decode(line).unwrap_err();
        assert_eq!(
            (error.reason, error.field.as_deref()),
            (*reason, Some(*field)),
            "{line}: {error:?}"
        );
        assert!(error.message.contains(message), "{line}: {error:?}");
    }
    let event = decode(
        r#"{"type":"alert_command","command":"silence","alert_id":"s","matchers":"{team!=\"web\"}","duration_ms":5}"#,
    )
    .unwrap();
    let EventBody::AlertCommand(command) = event.body else {
        panic!()
    };
    assert_eq!((command.matchers.len(), command.duration_ms), (1, Some(5)));
}

#[test]
fn rule_commands_carry_a_checked_rule() {
    let event = decode(
        r#"{"type":"alert_command","command":"create_rule","rule":{"id":"r1","metric":"cpu","aggregate":"p99","op":">","threshold":0.9,"severity":"high","for":"1m"}}"#,
    )
    .unwrap();
    let again = decode(&event.to_json().to_string()).unwrap();
    assert_eq!(event, again);
    let EventBody::AlertCommand(command) = event.body else {
        panic!()
    };
    assert_eq!(command.alert_id.as_deref(), Some("r1"));
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"type":"alert_command","command":"create_rule"}"#,
            "rule",
            "is required",
        ),
        (
            r#"{"type":"alert_command","command":"create_rule","rule":"r1"}"#,
            "rule",
            "expected an object",
        ),
        (
            r#"{"type":"alert_command","command":"create_rule","rule":{"id":"r1","metric":"cpu","aggregate":"median","op":">","threshold":1,"severity":"high"}}"#,
            "rule",
            "median",
        ),
        (
            r#"{"type":"alert_command","command":"create_rule","rule":{"id":"r1","metric":"","aggregate":"mean","op":">","threshold":1,"severity":"high"}}"#,
            "rule",
            "metric must not be empty",
        ),
        (
            r#"{"type":"alert_command","command":"create_rule","alert_id":"other","rule":{"id":"r1","metric":"x","aggregate":"mean","op":">","threshold":1,"severity":"high"}}"#,
            "alert_id",
            "must be the rule's id",
        ),
        (
            r#"{"type":"alert_command","command":"delete_rule"}"#,
            "alert_id",
            "is required for command `delete_rule`",
        ),
    ];
    for (line, field, message) in cases {
        let error = decode(line).unwrap_err();
        assert_eq!(error.field.as_deref(), Some(*field), "{line}: {error:?}");
        assert!(error.message.contains(message), "{line}: {error:?}");
    }
}

#[test]
fn labels_for_predictions_accept_integers_and_booleans() {
    let event = decode(r#"{"type":"prediction","model_id":"m","prediction_id":"p","predicted":1,"confidence":1,"latency_ms":0}"#).unwrap();
    let EventBody::Prediction(prediction) = event.body else {
        panic!()
    };
    assert_eq!(prediction.predicted, "1");
    let event = decode(r#"{"type":"outcome","prediction_id":"p","actual":true}"#).unwrap();
    let EventBody::Outcome(outcome) = event.body else {
        panic!()
    };
    assert_eq!(outcome.actual, "true");
}

#[test]
fn errors_name_the_field_and_the_reason() {
    use ErrorReason::*;
    let cases: &[(&str, ErrorReason, Option<&str>)] = &[
        (r#"{"name":"x","value":1}"#, MissingField, Some("type")),
        (r#"{"type":"metric","value":1}"#, MissingField, Some("name")),
        (
            r#"{"type":"metric","name":"x"}"#,
            MissingField,
            Some("value"),
        ),
        (
            r#"{"type":"metric","name":"x","value":null}"#,
            MissingField,
            Some("value"),
        ),
        (
            r#"{"type":"metric","name":"x","value":"1"}"#,
            InvalidType,
            Some("value"),
        ),
        (
            r#"{"type":"metric","name":"","value":1}"#,
            EmptyId,
            Some("name"),
        ),
        (
            r#"{"type":"metric","name":"model.correct","value":1}"#,
            InvalidValue,
            Some("name"),
        ),
        (
            r#"{"type":"metric","name":"x","value":1e400}"#,
            NonFinite,
            Some("value"),
        ),
        (
            r#"{"type":"metric","name":"x","value":1,"labels":{"a":1}}"#,
            InvalidType,
            Some("labels.a"),
        ),
        (
            r#"{"type":"metric","name":"x","value":1,"labels":[1]}"#,
            InvalidType,
            Some("labels"),
        ),
        (
            r#"{"type":"metric","name":"x","value":1,"ts":-5}"#,
            InvalidValue,
            Some("ts"),
        ),
        (
            r#"{"type":"metric","name":"x","value":1,"ts":1.5}"#,
            InvalidValue,
            Some("ts"),
        ),
        (
            r#"{"type":"metric","name":"x","value":1,"ts":"now"}"#,
            InvalidType,
            Some("ts"),
        ),
        (
            r#"{"type":"metric","name":"x","name":"y","value":1}"#,
            DuplicateField,
            Some("name"),
        ),
        (
            r#"{"type":"gauge","name":"x","value":1}"#,
            UnknownType,
            Some("type"),
        ),
        (r#"{"type":7}"#, InvalidType, Some("type")),
        (
            r#"{"type":"session","session_id":"s","kind":"paused"}"#,
            InvalidValue,
            Some("kind"),
        ),
        (
            r#"{"type":"session","session_id":"s","kind":"operation","duration_ms":-1}"#,
            InvalidValue,
            Some("duration_ms"),
        ),
        (
            r#"{"type":"session","session_id":"s","kind":"operation","success":"yes"}"#,
            InvalidType,
            Some("success"),
        ),
        (
            r#"{"type":"prediction","model_id":"m","prediction_id":"p","predicted":"a","confidence":1.5,"latency_ms":1}"#,
            InvalidValue,
            Some("confidence"),
        ),
        (
            r#"{"type":"prediction","model_id":"m","prediction_id":"p","predicted":"a","confidence":0.5,"latency_ms":1,"features":{"f":"x"}}"#,
            InvalidType,
            Some("features.f"),
        ),
        (
            r#"{"type":"alert_command","command":"resolve"}"#,
            MissingField,
            Some("alert_id"),
        ),
        (
            r#"{"type":"alert_command","command":"create"}"#,
            MissingField,
            Some("title"),
        ),
        (
            r#"{"type":"alert_command","command":"create","title":"t","severity":"extreme"}"#,
            InvalidValue,
            Some("severity"),
        ),
        (r#"[1,2]"#, MalformedJson, None),
        (
            r#"{"type":"metric","name":"x","value":1"#,
            MalformedJson,
            None,
        ),
        (
            r#"{"type":"metric","name":"x","value":1} trailing"#,
            MalformedJson,
            None,
        ),
        (
            r#"{"type":"metric","name":"x","value":tru}"#,
            MalformedJson,
            Some("value"),
        ),
    ];
    for (json, reason, field) in cases {
        let (got_reason, got_field) = rejected(json);
        assert_eq!(
            (got_reason, got_field.as_deref()),
            (*reason, *field),
            "{json}"
        );
    }
}

#[test]
fn limits_are_enforced() {
    let limits = DecodeLimits {
        max_id_bytes: 4,
        max_text_bytes: 8,
        max_map_entries: 2,
    };
    let check = |json: &str, field: Option<&str>| {
        let error = decode_event(json.as_bytes(), &limits, 0).expect_err(json);
        assert_eq!(error.reason, ErrorReason::TooLong, "{json}");
        assert_eq!(error.field.as_deref(), field, "{json}");
    };
    check(
        r#"{"type":"metric","name":"toolong","value":1}"#,
        Some("name"),
    );
    check(
        r#"{"type":"metric","name":"x","value":1,"labels":{"a":"b","c":"d","e":"f"}}"#,
        Some("labels"),
    );
    check(
        r#"{"type":"metric","name":"x","value":1,"labels":{"a":"bbbbbb"}}"#,
        Some("labels.a"),
    );
    check(
        r#"{"type":"session","session_id":"s","kind":"error","message":"123456789"}"#,
        Some("message"),
    );
    check(
        r#"{"type":"metric","name":"x","value":1,"u1":1,"u2":2,"u3":3}"#,
        None,
    );
}

#[test]
fn duplicate_label_keys_are_rejected() {
    let (reason, field) =
        rejected(r#"{"type":"metric","name":"x","value":1,"labels":{"a":"1","a":"2"}}"#);
    assert_eq!(reason, ErrorReason::DuplicateField);
    assert_eq!(field.as_deref(), Some("labels.a"));
}

#[test]
fn escaped_keys_and_values_decode() {
    let event = decode(r#"{"typ\u0065":"metric","name":"a\"b","value":2}"#).unwrap();
    let EventBody::Metric(metric) = event.body else {
        panic!()
    };
    assert_eq!(metric.name, "a\"b");
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        let _ = decode_event(&bytes, &DecodeLimits::default(), 0);
    }

    #[test]
    fn arbitrary_metric_values_round_trip(value in proptest::num::f64::NORMAL, name in "[a-z_]{1,20}", ts in 0u64..4_000_000_000_000) {
        let json = serde_json::json!({"type": "metric", "ts": ts, "name": name, "value": value}).to_string();
        let event = decode(&json).unwrap();
        let EventBody::Metric(metric) = event.body else { panic!() };
        proptest::prop_assert_eq!(metric.value, value);
        proptest::prop_assert_eq!(event.ts, ts);
    }
}

fn json_value() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    prop_oneof![
        "[a-z]{0,6}".prop_map(|s| format!("\"{s}\"")),
        Just("\"a\\\"b\"".to_owned()),
        Just("\"\\u00e9t\\u00e9\"".to_owned()),
        Just("\"caf\u{e9}\"".to_owned()),
        any::<u32>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551616".to_owned()),
        (-1e6f64..1e6).prop_map(|f| format!("{f}")),
        (-1e6f64..1e6).prop_map(|f| format!("{f:e}")),
        Just("1E+2".to_owned()),
        Just("-0".to_owned()),
        Just("01".to_owned()),
        Just("1.".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("null".to_owned()),
        Just("[1,2]".to_owned()),
        Just("{\"host\":\"a\",\"zone\":\"b\"}".to_owned()),
        Just("{\"x\":1.5,\"a\":2}".to_owned()),
        Just("{\"x\":{}}".to_owned()),
        Just("{}".to_owned()),
    ]
}

fn json_object() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let key = prop_oneof![
        Just("type"),
        Just("ts"),
        Just("name"),
        Just("value"),
        Just("labels"),
        Just("session_id"),
        Just("kind"),
        Just("features"),
        Just("model_id"),
        Just("prediction_id"),
        Just("predicted"),
        Just("confidence"),
        Just("latency_ms"),
        Just("actual"),
        Just("command"),
        Just("alert_id"),
        Just("title"),
        Just("actor"),
        Just("note"),
        Just("model_version"),
        Just("extra"),
        Just("other"),
    ];
    let type_name = prop_oneof![
        Just("\"metric\""),
        Just("\"session\""),
        Just("\"prediction\""),
        Just("\"outcome\""),
        Just("\"alert_command\""),
        Just("\"model_baseline\""),
        Just("\"nope\""),
    ];
    (
        type_name,
        proptest::collection::vec((key, json_value()), 0..8),
        " {0,2}",
    )
        .prop_map(|(kind, pairs, pad)| {
            let mut parts = vec![format!("\"type\":{kind}")];
            parts.extend(pairs.into_iter().map(|(k, v)| format!("\"{k}\":{pad}{v}")));
            format!("{pad}{{{}}}{pad}", parts.join(","))
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

    /// The fast scanner may defer, but whenever it answers, it answers exactly as the
    /// serde path does (same event, or same error).
    #[test]
    fn fast_path_agrees_with_serde_path(object in json_object()) {
        let limits = DecodeLimits::default();
        let slow = decode_event_serde(object.as_bytes(), &limits, 5);
        if let Some(fields) = fast::scan(object.as_bytes(), &limits) {
            let fast = fields.build(&limits, 5);
            proptest::prop_assert_eq!(fast, slow, "{}", object);
        }
    }
}

#[test]
fn fast_path_takes_typical_events() {
    let limits = DecodeLimits::default();
    for line in [
        r#"{"type":"metric","ts":1700000000000,"session_id":"s1","name":"latency_ms","value":51.25}"#,
        r#"{"type":"metric","name":"x","value":-3,"labels":{"b":"2","a":"1"},"extra":{"deep":[1]}}"#,
        r#"{"type":"session","session_id":"s","kind":"operation","duration_ms":12,"success":true}"#,
    ] {
        // `extra` holds an object: the fast path defers on it. The others must be taken.
        let taken = fast::scan(line.as_bytes(), &limits).is_some();
        assert_eq!(taken, !line.contains("deep"), "{line}");
    }
}

#[test]
fn model_registrations_decode_and_name_their_bad_field() {
    let event = decode(
        r#"{"type":"model","model_id":"churn","model_version":"v2","task":"classification","classes":["no","yes",3],"owner":"ml-team","description":"who leaves","min_accuracy":0.8,"max_latency_p99_ms":50,"baseline_version":"v1","extra":1}"#,
    )
    .unwrap();
    let EventBody::Model(registration) = &event.body else {
        panic!("not a registration")
    };
    assert_eq!(registration.model_id, "churn");
    assert_eq!(registration.model_version.as_deref(), Some("v2"));
    assert_eq!(registration.task.as_deref(), Some("classification"));
    assert_eq!(registration.classes, vec!["no", "yes", "3"]);
    assert_eq!(registration.min_accuracy, Some(0.8));
    assert_eq!(registration.max_latency_p99_ms, Some(50.0));
    assert_eq!(registration.baseline_version.as_deref(), Some("v1"));
    assert_eq!(event.attrs, vec![("extra".into(), "1".to_owned())]);
    // It round-trips through its JSON form.
    let again = decode(&event.to_json().to_string()).unwrap();
    assert_eq!(again.body, event.body);

    let cases = [
        (r#"{"type":"model"}"#, ErrorReason::MissingField, "model_id"),
        (
            r#"{"type":"model","model_id":"m","min_accuracy":1.5}"#,
            ErrorReason::InvalidValue,
            "min_accuracy",
        ),
        (
            r#"{"type":"model","model_id":"m","min_accuracy":"high"}"#,
            ErrorReason::InvalidType,
            "min_accuracy",
        ),
        (
            r#"{"type":"model","model_id":"m","max_latency_p99_ms":0}"#,
            ErrorReason::InvalidValue,
            "max_latency_p99_ms",
        ),
        (
            r#"{"type":"model","model_id":"m","classes":"yes"}"#,
            ErrorReason::InvalidType,
            "classes",
        ),
        (
            r#"{"type":"model","model_id":"m","classes":["a",{"b":1}]}"#,
            ErrorReason::InvalidType,
            "classes[1]",
        ),
        (
            r#"{"type":"model","model_id":"m","classes":["a","a"]}"#,
            ErrorReason::InvalidValue,
            "classes",
        ),
        (
            r#"{"type":"model","model_id":"m","model_version":"v1","baseline_version":"v1"}"#,
            ErrorReason::InvalidValue,
            "baseline_version",
        ),
        (
            r#"{"type":"model","model_id":"m","owner":7}"#,
            ErrorReason::InvalidType,
            "owner",
        ),
    ];
    for (json, reason, field) in cases {
        assert_eq!(rejected(json), (reason, Some(field.to_owned())), "{json}");
    }
}

#[test]
fn pin_now_commands_decode_and_name_their_bad_field() {
    let event = decode(
        r#"{"type":"model_baseline","ts":7,"model_id":"fraud","model_version":"v2","actor":"ana","note":"retrained on May data"}"#,
    )
    .unwrap();
    assert_eq!(event.ts, 7);
    let EventBody::ModelBaseline(pin) = &event.body else {
        panic!("not a pin: {event:?}")
    };
    assert_eq!(pin.model_id, "fraud");
    assert_eq!(pin.model_version.as_deref(), Some("v2"));
    assert_eq!(pin.actor.as_deref(), Some("ana"));
    assert_eq!(pin.note.as_deref(), Some("retrained on May data"));
    assert_eq!(decode(&event.to_json().to_string()).unwrap(), event);
    // Every version of the model, stamped with the default time.
    let every = decode(r#"{"type":"model_baseline","model_id":"fraud"}"#).unwrap();
    assert_eq!(every.ts, 42);
    assert!(matches!(&every.body, EventBody::ModelBaseline(pin) if pin.model_version.is_none()));

    let cases = [
        (
            r#"{"type":"model_baseline"}"#,
            ErrorReason::MissingField,
            "model_id",
        ),
        (
            r#"{"type":"model_baseline","model_id":""}"#,
            ErrorReason::EmptyId,
            "model_id",
        ),
        (
            r#"{"type":"model_baseline","model_id":"m","model_version":3}"#,
            ErrorReason::InvalidType,
            "model_version",
        ),
        (
            r#"{"type":"model_baseline","model_id":"m","actor":["a"]}"#,
            ErrorReason::InvalidType,
            "actor",
        ),
        (
            r#"{"type":"model_baseline","model_id":"m","note":false}"#,
            ErrorReason::InvalidType,
            "note",
        ),
        (
            r#"{"type":"model_baseline","model_id":"m","ts":-1}"#,
            ErrorReason::InvalidValue,
            "ts",
        ),
    ];
    for (json, reason, field) in cases {
        assert_eq!(rejected(json), (reason, Some(field.to_owned())), "{json}");
    }
}

/// A value for one field of a prediction or outcome: mostly one the field accepts, in
/// every JSON form, sometimes anything at all.
fn ml_value(field: &str) -> proptest::strategy::BoxedStrategy<String> {
    use proptest::prelude::*;
    let id = prop_oneof![
        30 => "[a-z0-9-]{1,12}".prop_map(|s| format!("\"{s}\"")),
        3 => Just("\"caf\u{e9}-\u{1F600}\"".to_owned()),
        1 => Just(r#""p\u0031""#.to_owned()),
        1 => Just(r#""a\"b""#.to_owned()),
        1 => Just("\"\"".to_owned()),
        1 => Just(format!("\"{}\"", "x".repeat(257))),
    ];
    let fraction = prop_oneof![
        12 => (0.0f64..=1.0).prop_map(|f| format!("{f}")),
        2 => (0.0f64..=1.0).prop_map(|f| format!("{f:e}")),
        8 => (0u32..1000).prop_map(|n| format!("0.{n:03}")),
        1 => "0\\.[0-9]{14,22}",
        1 => prop_oneof![
            Just("1"), Just("0"), Just("1.0"), Just("-0.0"), Just("-0"), Just("0.1e1"),
            Just("5E-1"), Just("1.5"), Just("-0.25"), Just("0.5000000000000001"),
            Just("1e400"), Just("01"), Just("0."),
        ]
        .prop_map(str::to_owned),
    ];
    let number = prop_oneof![
        8 => (0u32..5000).prop_map(|n| n.to_string()),
        8 => (0.0f64..1e4).prop_map(|f| format!("{f}")),
        2 => "-?(0|[1-9][0-9]{0,9})\\.[0-9]{1,14}",
        1 => prop_oneof![
            Just("-1"), Just("1e400"), Just("123456789012345.6"), Just("1234567890123456.7"),
            Just("9007199254740993"), Just("18446744073709551616"), Just("2.5E+2"),
        ]
        .prop_map(str::to_owned),
    ];
    let label = prop_oneof![
        12 => id.clone(),
        2 => prop_oneof![
            Just("3"), Just("-7"), Just("true"), Just("false"), Just("1.5"), Just("-0"),
            Just("18446744073709551616"),
        ]
        .prop_map(str::to_owned),
    ];
    let ts = prop_oneof![
        16 => (0u64..4_000_000_000_000).prop_map(|n| n.to_string()),
        1 => prop_oneof![Just("-1"), Just("1.0"), Just("1e3"), Just("\"7\"")].prop_map(str::to_owned),
    ];
    let entry =
        ("[a-c]{1,2}", number.clone()).prop_map(|(key, value)| format!("\"{key}\":{value}"));
    let features = prop_oneof![
        12 => proptest::collection::vec(entry, 0..5).prop_map(|entries| format!("{{{}}}", entries.join(","))),
        1 => prop_oneof![
            Just("null"), Just(r#"{"a":"x"}"#), Just("[1]"), Just(r#"{"\u0061":1}"#),
            Just(r#"{"":1}"#), Just(r#"{ "b" : 2 , "a" : 1 }"#),
        ]
        .prop_map(str::to_owned),
    ];
    let type_name = prop_oneof![
        20 => Just("\"prediction\""),
        20 => Just("\"outcome\""),
        1 => Just("\"metric\""),
        1 => Just("\"predict\\u0069on\""),
        1 => Just("7"),
    ]
    .prop_map(str::to_owned);
    let specific = match field {
        "type" => type_name.boxed(),
        "ts" => ts.boxed(),
        "model_id" | "model_version" | "prediction_id" | "session_id" => id.boxed(),
        "predicted" | "actual" => label.boxed(),
        "confidence" => fraction.boxed(),
        "latency_ms" => number.boxed(),
        "features" => features.boxed(),
        _ => json_value().boxed(),
    };
    prop_oneof![40 => specific, 1 => json_value()].boxed()
}

/// A prediction or outcome line: each field present or not, in any order, sometimes with
/// unknown fields, a duplicate or whitespace.
fn ml_object() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    // Per field: how likely it is present in a prediction, and in an outcome (a field of
    // the other variant now and then, as a producer's mistake would put it there).
    let known = [
        ("type", 0.98, 0.98),
        ("ts", 0.8, 0.8),
        ("model_id", 0.97, 0.5),
        ("model_version", 0.5, 0.03),
        ("prediction_id", 0.98, 0.98),
        ("predicted", 0.97, 0.03),
        ("confidence", 0.97, 0.03),
        ("latency_ms", 0.97, 0.03),
        ("features", 0.4, 0.03),
        ("session_id", 0.3, 0.03),
        ("actual", 0.03, 0.97),
    ];
    let for_variant = move |outcome: bool| -> Vec<_> {
        known
            .into_iter()
            .map(|(key, in_prediction, in_outcome)| {
                let probability = if outcome { in_outcome } else { in_prediction };
                proptest::option::weighted(
                    probability,
                    ml_value(key).prop_map(move |value| (key, value)),
                )
            })
            .collect()
    };
    let extra = proptest::collection::vec(
        (
            prop_oneof![
                Just("extra"),
                Just("name"),
                Just("kind"),
                Just("actual"),
                Just("ts")
            ],
            json_value(),
        ),
        1..3,
    );
    (
        prop_oneof![for_variant(false), for_variant(true)],
        proptest::option::weighted(0.1, extra),
        " {0,2}",
    )
        .prop_flat_map(|(fields, extra, pad)| {
            let mut pairs: Vec<(&str, String)> = fields.into_iter().flatten().collect();
            pairs.extend(extra.into_iter().flatten());
            (Just(pairs).prop_shuffle(), Just(pad))
        })
        .prop_map(|(pairs, pad)| {
            let parts: Vec<String> = pairs
                .into_iter()
                .map(|(key, value)| format!("\"{key}\"{pad}:{pad}{value}"))
                .collect();
            format!("{pad}{{{pad}{}{pad}}}{pad}", parts.join(&format!("{pad},")))
        })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 4000, ..Default::default() })]

    /// The direct prediction/outcome path gives exactly the general path's answer: the
    /// same event (down to the sign of zero), or it defers and the error is the same.
    #[test]
    fn direct_path_agrees_with_serde_path(object in ml_object()) {
        let limits = DecodeLimits::default();
        let slow = decode_event_serde(object.as_bytes(), &limits, 5);
        if let Some(event) = direct::decode(object.as_bytes(), &limits, 5) {
            let event: Result<Event, DataError> = Ok(event);
            proptest::prop_assert_eq!(format!("{event:?}"), format!("{slow:?}"), "{}", object);
        }
        let whole = decode_event(object.as_bytes(), &limits, 5);
        proptest::prop_assert_eq!(format!("{whole:?}"), format!("{slow:?}"), "{}", object);
    }

    /// Short decimals take the scanner's exact shortcut; it must round as serde_json does.
    #[test]
    fn short_decimals_round_like_serde(value in "-?(0|[1-9][0-9]{0,9})\\.[0-9]{1,16}") {
        let limits = DecodeLimits::default();
        let line = format!(r#"{{"type":"metric","name":"x","value":{value}}}"#);
        let fast = decode_event(line.as_bytes(), &limits, 5);
        let slow = decode_event_serde(line.as_bytes(), &limits, 5);
        proptest::prop_assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{}", line);
    }
}

#[test]
fn direct_path_takes_typical_predictions_and_outcomes() {
    let limits = DecodeLimits::default();
    let taken = [
        r#"{"type":"prediction","ts":1700000000123,"model_id":"model-3","model_version":"v1","prediction_id":"p1234","predicted":"cat","confidence":0.873,"latency_ms":12}"#,
        r#"{"type":"outcome","ts":1700000000123,"prediction_id":"p1234","actual":"dog"}"#,
        r#"{"prediction_id":"p1","actual":1,"model_id":"m","type":"outcome"}"#,
        r#" { "type" : "prediction" , "model_id" : "m" , "prediction_id" : "p" , "predicted" : true , "confidence" : 1 , "latency_ms" : 0.5 , "features" : { "z" : 1 , "a" : -2.5e3 } , "session_id" : "s" } "#,
    ];
    for line in taken {
        let event = direct::decode(line.as_bytes(), &limits, 5);
        assert!(event.is_some(), "{line}");
        assert_eq!(
            event.map(Ok),
            Some(decode_event_serde(line.as_bytes(), &limits, 5)),
            "{line}"
        );
    }
    let deferred = [
        // unknown field (kept in attrs), a field of the other variant, an escape, null,
        // a duplicate, another type, an invalid value, malformed JSON
        r#"{"type":"outcome","prediction_id":"p","actual":"a","region":"eu"}"#,
        r#"{"type":"outcome","prediction_id":"p","actual":"a","confidence":0.5}"#,
        r#"{"type":"outcome","prediction_id":"p\u0031","actual":"a"}"#,
        r#"{"type":"outcome","prediction_id":"p","actual":"a","model_id":null}"#,
        r#"{"type":"outcome","prediction_id":"p","actual":"a","actual":"b"}"#,
        r#"{"type":"metric","name":"x","value":1}"#,
        r#"{"type":"prediction","model_id":"m","prediction_id":"p","predicted":"a","confidence":1.5,"latency_ms":1}"#,
        r#"{"type":"outcome","prediction_id":"p","actual":"a""#,
    ];
    for line in deferred {
        assert!(
            direct::decode(line.as_bytes(), &limits, 5).is_none(),
            "{line}"
        );
    }
}

/// The generated lines exercise both outcomes of the direct path, so the agreement test
/// above is not vacuous.
#[test]
fn generated_ml_lines_are_often_taken_by_the_direct_path() {
    use proptest::strategy::{Strategy, ValueTree};
    let limits = DecodeLimits::default();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = ml_object();
    let (mut taken, total) = (0, 2000);
    for _ in 0..total {
        let Ok(tree) = strategy.new_tree(&mut runner) else {
            continue;
        };
        let line = tree.current();
        if direct::decode(line.as_bytes(), &limits, 5).is_some() {
            taken += 1;
        }
    }
    eprintln!("direct path took {taken} of {total} generated lines");
    assert!(
        taken * 20 > total && taken * 20 < total * 19,
        "{taken} of {total}"
    );
}
