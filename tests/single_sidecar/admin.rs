//! The admin port of a real sidecar process: health, readiness and Prometheus metrics, read
//! over plain HTTP/1.1 as a probe or a scraper would.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Output, Stdio};
use std::time::Duration;

use sidestream_tests::cli;

use crate::sidecar;

/// `GET path` on the admin port: the status code and the body.
fn get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&admin, Duration::from_secs(10))
        .expect("the admin port accepts");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout can be set");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .expect("the request is sent");
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .expect("the admin port answers");
    let (head, body) = reply.split_once("\r\n\r\n").expect("an HTTP reply");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    (status, body.to_owned())
}

fn run(command: &mut std::process::Command, stdin: &[u8]) -> Output {
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

/// Lines `event N` for each N of `numbers`, for `produce`.
fn events(numbers: std::ops::Range<u32>) -> String {
    numbers
        .map(|i| format!("event {i}\n"))
        .collect::<Vec<_>>()
        .concat()
}

/// The value of the sample `name{labels}` in `metrics`.
fn sample(metrics: &str, name_and_labels: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        (series == name_and_labels).then(|| value.parse().ok())?
    })
}

#[test]
fn health_readiness_and_metrics_with_a_groups_lag() {
    let (_dir, sidecar) = sidecar();
    let admin = sidecar.admin_addr().expect("the sidecar has an admin port");
    assert_eq!(get(admin, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(admin, "/readyz"), (200, "ready\n".into()));
    assert_eq!(get(admin, "/nothing").0, 404);

    let created = run(
        cli(&sidecar).args(["topic", "create", "metered", "--partitions", "1"]),
        b"",
    );
    assert!(created.status.success());
    let lines = events(0..10);
    let produced = run(cli(&sidecar).args(["produce", "metered"]), lines.as_bytes());
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    // The group reads and commits the first 10; 5 more come after it stopped.
    let consumed = run(
        cli(&sidecar).args([
            "consume",
            "metered",
            "--group",
            "billing",
            "--from",
            "earliest",
            "--timeout",
            "2",
        ]),
        b"",
    );
    assert!(
        consumed.status.success(),
        "{}",
        String::from_utf8_lossy(&consumed.stderr)
    );
    let more = events(10..15);
    assert!(
        run(cli(&sidecar).args(["produce", "metered"]), more.as_bytes())
            .status
            .success()
    );

    let (status, metrics) = get(admin, "/metrics");
    assert_eq!(status, 200);
    let partition = r#"{topic="metered",partition="0"}"#;
    let group = r#"{group="billing",topic="metered",partition="0"}"#;
    assert_eq!(
        sample(
            &metrics,
            &format!("sidestream_published_events_total{partition}")
        ),
        Some(15.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &format!("sidestream_high_watermark{partition}")),
        Some(15.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!("sidestream_group_committed_offset{group}")
        ),
        Some(10.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, &format!("sidestream_group_lag{group}")),
        Some(5.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            &format!("sidestream_delivered_events_total{partition}")
        )
        .is_some_and(|delivered| delivered >= 10.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, &format!("sidestream_log_size_bytes{partition}"))
            .is_some_and(|bytes| bytes > 0.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, r#"sidestream_responses_total{code="OK"}"#).is_some_and(|ok| ok >= 3.0),
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            r#"sidestream_publish_latency_seconds_count{topic="metered"}"#
        )
        .is_some_and(|count| count >= 2.0),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
}
