//! The `sidestream` command line against a sidecar process: topics, produce, consume, and
//! its errors on stderr.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use sidestream_tests::{cli, cli_path};

use crate::sidecar;

/// Runs `command` with `stdin` as its input, and collects its output.
pub(crate) fn run(command: &mut Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the CLI starts");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin)
        .expect("stdin takes the input");
    child.wait_with_output().expect("the CLI ends")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn topics_produce_and_consume_through_the_cli() {
    let (_dir, sidecar) = sidecar();
    let created = run(
        cli(&sidecar).args(["topic", "create", "lines", "--partitions", "3"]),
        b"",
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    assert!(
        text(&created.stdout).contains("partitions:         3"),
        "{}",
        text(&created.stdout)
    );

    let listed = run(cli(&sidecar).args(["topic", "list"]), b"");
    assert!(
        text(&listed.stdout).contains("lines"),
        "{}",
        text(&listed.stdout)
    );

    let produced = run(
        cli(&sidecar).args(["produce", "lines", "--key-separator", ":"]),
        b"k1:first\nk2:second\nk1:third\n",
    );
    assert!(produced.status.success(), "{}", text(&produced.stderr));
    assert!(
        text(&produced.stderr).contains("produced 3 events"),
        "{}",
        text(&produced.stderr)
    );

    let consumed = run(
        cli(&sidecar).args([
            "consume",
            "lines",
            "--max",
            "3",
            "--timeout",
            "20",
            "--format",
            "json",
        ]),
        b"",
    );
    assert!(consumed.status.success(), "{}", text(&consumed.stderr));
    let events: Vec<serde_json::Value> = text(&consumed.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect();
    assert_eq!(events.len(), 3);
    let mut values: Vec<&str> = events
        .iter()
        .map(|e| e["value"].as_str().expect("UTF-8 value"))
        .collect();
    values.sort_unstable();
    assert_eq!(values, ["first", "second", "third"]);
    for event in &events {
        assert_eq!(event["topic"], "lines");
        assert!(
            event["offset"].is_u64() && event["partition"].is_u64() && event["timestamp"].is_i64()
        );
        // The standard headers in their text forms, though ids travel in binary.
        let headers = &event["headers"];
        let id = headers["id"].as_str().expect("id as text");
        assert_eq!(id.parse::<sidestream::Uuid>().unwrap().get_version_num(), 7);
        let trace = headers["traceparent"]
            .as_str()
            .expect("traceparent as text");
        assert!(trace.parse::<sidestream::TraceParent>().is_ok(), "{trace}");
        assert!(headers["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(headers["source"], "sidestream-cli");
    }
    // Same key, same partition, in order.
    let k1: Vec<&serde_json::Value> = events.iter().filter(|e| e["key"] == "k1").collect();
    assert_eq!(k1[0]["partition"], k1[1]["partition"]);
    assert_eq!(k1[0]["value"], "first");

    let described = run(cli(&sidecar).args(["topic", "describe", "lines"]), b"");
    assert!(
        text(&described.stdout).contains("HIGH WATERMARK"),
        "{}",
        text(&described.stdout)
    );
    let deleted = run(cli(&sidecar).args(["topic", "delete", "lines"]), b"");
    assert!(deleted.status.success(), "{}", text(&deleted.stderr));
}

/// The JSON object on the last line of a `bench --json` run that succeeded, after checking
/// the fields every workload reports.
fn bench_json(output: &Output, workload: &str, events: u64, size: u64) -> serde_json::Value {
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.starts_with(&format!("{workload}: {events} events of {size} B in ")),
        "{stdout}"
    );
    let last = stdout.lines().last().expect("the bench prints its result");
    let json: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(json["workload"], workload, "{json}");
    assert_eq!(json["events"], events, "{json}");
    assert_eq!(json["bytes"], events * size, "{json}");
    let seconds = json["seconds"].as_f64().expect("seconds");
    let events_per_sec = json["events_per_sec"].as_f64().expect("events_per_sec");
    let mb_per_sec = json["mb_per_sec"].as_f64().expect("mb_per_sec");
    assert!(seconds > 0.0, "{json}");
    #[expect(clippy::cast_precision_loss, reason = "a few thousand events")]
    let (events, bytes) = (events as f64, (events * size) as f64);
    assert!(
        (events_per_sec * seconds - events).abs() < 1.0
            && (mb_per_sec * 1e6 * seconds - bytes).abs() < 100.0,
        "{json}"
    );
    // Linux tells the machine's steal: a share, between none and all (none measured in a
    // run shorter than the machine's clock tick).
    match json["steal_share"].as_f64() {
        Some(steal) => assert!((0.0..=1.0).contains(&steal), "{json}"),
        None => assert!(json["steal_share"].is_null(), "{json}"),
    }
    json
}

/// That `percentiles` is a bench's latency object, in order, or `null` when `expected` is false.
fn assert_latency(percentiles: &serde_json::Value, expected: bool) {
    if !expected {
        assert!(percentiles.is_null(), "{percentiles}");
        return;
    }
    let at = |name: &str| {
        percentiles[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {percentiles}"))
    };
    assert!(
        1 <= at("p50")
            && at("p50") <= at("p99")
            && at("p99") <= at("p999")
            && at("p999") <= at("max"),
        "{percentiles}"
    );
}

#[test]
fn bench_measures_each_workload_against_a_sidecar_and_removes_its_topic() {
    let (_dir, sidecar) = sidecar();
    for (workload, publish_ack, end_to_end) in [
        ("produce", true, false),
        ("consume", false, false),
        ("e2e", true, true),
    ] {
        let output = run(
            cli(&sidecar).args([
                "bench",
                workload,
                "--events",
                "3000",
                "--size",
                "64",
                "--partitions",
                "2",
                "--producers",
                "2",
                "--json",
            ]),
            b"",
        );
        let json = bench_json(&output, workload, 3000, 64);
        assert_eq!(json["partitions"], 2, "{json}");
        assert_eq!(json["producers"], 2, "{json}");
        assert_eq!(json["acks"], "leader", "{json}");
        assert_latency(&json["publish_ack_us"], publish_ack);
        assert_latency(&json["end_to_end_us"], end_to_end);
    }
    // One publish at a time, each timed, with every acknowledgement after an fsync.
    let output = run(
        cli(&sidecar).args([
            "bench",
            "produce",
            "--events",
            "200",
            "--size",
            "1024",
            "--in-flight",
            "1",
            "--fsync",
            "always",
            "--acks",
            "all",
            "--json",
        ]),
        b"",
    );
    let json = bench_json(&output, "produce", 200, 1024);
    assert_eq!(json["fsync"], "always", "{json}");
    assert_eq!(json["acks"], "all", "{json}");
    assert_latency(&json["publish_ack_us"], true);
    // Many events per publish call, pipelined and one call at a time; an odd count leaves a
    // shorter last call. The e2e workload reads every event back.
    for (workload, in_flight) in [("produce", "100000"), ("produce", "1"), ("e2e", "100000")] {
        let output = run(
            cli(&sidecar).args([
                "bench",
                workload,
                "--events",
                "2501",
                "--publish-batch",
                "100",
                "--in-flight",
                in_flight,
                "--json",
            ]),
            b"",
        );
        let json = bench_json(&output, workload, 2501, 100);
        assert_eq!(json["publish_batch"], 100, "{json}");
        assert_latency(&json["publish_ack_us"], true);
        assert_latency(&json["end_to_end_us"], workload == "e2e");
    }

    let listed = run(cli(&sidecar).args(["topic", "list"]), b"");
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        !text(&listed.stdout).contains("bench-"),
        "a benchmark topic was left: {}",
        text(&listed.stdout)
    );
}

#[test]
fn bench_embedded_needs_no_sidecar_and_bad_parameters_are_named() {
    let output = run(
        Command::new(cli_path()).env("RUST_LOG", "warn").args([
            "bench",
            "produce",
            "--embedded",
            "--events",
            "2000",
            "--json",
        ]),
        b"",
    );
    let json = bench_json(&output, "produce", 2000, 100);
    assert_latency(&json["publish_ack_us"], true);
    assert!(
        text(&output.stdout).contains("(client and sidecar)"),
        "{}",
        text(&output.stdout)
    );

    for (flag, value) in [
        ("--size", "4"),
        ("--partitions", "0"),
        ("--fsync", "sometimes"),
        ("--acks", "most"),
        ("--publish-batch", "0"),
        ("--busy-poll-us", "1001"),
    ] {
        let refused = run(
            Command::new(cli_path()).args(["bench", "produce", "--embedded", flag, value]),
            b"",
        );
        assert_eq!(refused.status.code(), Some(2), "{flag} {value}");
        let stderr = text(&refused.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains(value),
            "{flag} {value}: {stderr}"
        );
    }
}

#[test]
fn the_cli_names_bad_input_on_stderr() {
    let (_dir, sidecar) = sidecar();
    let bad_name = run(cli(&sidecar).args(["topic", "create", "orders/eu"]), b"");
    assert!(!bad_name.status.success());
    assert!(
        text(&bad_name.stderr).contains("'/'"),
        "{}",
        text(&bad_name.stderr)
    );

    let unknown = run(
        cli(&sidecar).args(["consume", "missing", "--timeout", "5"]),
        b"",
    );
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("missing"),
        "{}",
        text(&unknown.stderr)
    );

    let negative = run(
        cli(&sidecar).args(["consume", "missing", "--from", "-1"]),
        b"",
    );
    assert_eq!(negative.status.code(), Some(2));
    assert!(
        text(&negative.stderr).contains("-1"),
        "{}",
        text(&negative.stderr)
    );

    let created = run(cli(&sidecar).args(["topic", "create", "lines"]), b"");
    assert!(created.status.success(), "{}", text(&created.stderr));
    let too_long = run(
        cli(&sidecar).args(["produce", "lines", "--max-line-bytes", "10"]),
        b"short\nthis line is longer than ten bytes\n",
    );
    assert!(!too_long.status.success());
    let stderr = text(&too_long.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("10 bytes"),
        "{stderr}"
    );

    let wrong_flag = run(
        cli(&sidecar).args(["topic", "create", "x", "--fsync", "sometimes"]),
        b"",
    );
    assert_eq!(wrong_flag.status.code(), Some(2));
    assert!(
        text(&wrong_flag.stderr).contains("sometimes"),
        "{}",
        text(&wrong_flag.stderr)
    );
}

#[test]
fn the_demo_runs_the_example_services_end_to_end() {
    let output = Command::new(cli_path())
        .args(["demo", "--orders", "12"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("the demo runs");
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        text(&output.stderr)
    );
    let count = |label: &str| -> u64 {
        stdout
            .lines()
            .find_map(|line| {
                line.split_once(label)
                    .and_then(|(_, n)| n.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("the summary has {label:?}:\n{stdout}"))
    };
    assert_eq!(count("orders placed"), 12);
    assert_eq!(
        count("paid") + count("failed"),
        12,
        "every order settles:\n{stdout}"
    );
    assert!(
        count("failed") > 0 && count("paid") > 0,
        "both outcomes occur:\n{stdout}"
    );
    assert!(stdout.contains("end to end"), "{stdout}");
}
