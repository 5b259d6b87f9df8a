//! The admin port of a real sidecar process: health, readiness and Prometheus metrics, read
//! over plain HTTP/1.1 as a probe or a scraper would.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use sidestream_tests::cli;

use crate::cli::run;
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

/// Runs the CLI with `args` against `sidecar`, `stdin` as its input, and checks it succeeds.
fn succeeds(sidecar: &sidestream_tests::SidecarProcess, args: &[&str], stdin: &str) {
    let output = run(cli(sidecar).args(args), stdin.as_bytes());
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
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

    succeeds(
        &sidecar,
        &["topic", "create", "metered", "--partitions", "1"],
        "",
    );
    succeeds(&sidecar, &["produce", "metered"], &events(0..10));
    // The group reads and commits the first 10; 5 more come after it stopped.
    let consume = "consume metered --group billing --from earliest --timeout 2";
    let consume: Vec<&str> = consume.split(' ').collect();
    succeeds(&sidecar, &consume, "");
    succeeds(&sidecar, &["produce", "metered"], &events(10..15));

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
    // fsync=always: every acknowledged publish waited for a group-commit sync.
    assert!(
        sample(&metrics, "sidestream_fsync_latency_seconds_count").is_some_and(|n| n >= 2.0),
        "{metrics}"
    );
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    // A deleted topic's series, counters included, are gone from the next scrape.
    succeeds(&sidecar, &["topic", "delete", "metered"], "");
    let (status, metrics) = get(admin, "/metrics");
    assert_eq!(status, 200);
    assert!(!metrics.contains(r#"topic="metered""#), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
    // Created again under its name, it counts from 0.
    succeeds(
        &sidecar,
        &["topic", "create", "metered", "--partitions", "1"],
        "",
    );
    succeeds(&sidecar, &["produce", "metered"], &events(0..2));
    let (_, metrics) = get(admin, "/metrics");
    assert_eq!(
        sample(
            &metrics,
            &format!("sidestream_published_events_total{partition}")
        ),
        Some(2.0),
        "{metrics}"
    );
}

/// A child process killed and reaped when dropped, whatever happened before.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET /metrics` on `admin` until `check` holds (every 250 ms, at most `patience`): the last
/// answer, or `None` if none came.
fn scrape_until(
    admin: SocketAddr,
    patience: Duration,
    check: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = std::time::Instant::now() + patience;
    let mut last = None;
    loop {
        let answer = std::panic::catch_unwind(|| get(admin, "/metrics")).ok();
        if let Some((200, metrics)) = answer {
            if check(&metrics) {
                return Some(metrics);
            }
            last = Some(metrics);
        }
        if std::time::Instant::now() >= deadline {
            return last;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_demo_shows_its_groups_lag_on_metrics() {
    let mut demo = Reaped(
        std::process::Command::new(sidestream_tests::cli_path())
            .args(["demo", "--orders", "8", "--stay"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the demo starts"),
    );
    let stdout = demo.0.stdout.take().expect("stdout is piped");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut admin = None;
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(120)) {
        if let Some(url) = line.split("sidecar metrics on http://").nth(1) {
            admin = url.trim_end_matches("/metrics").parse::<SocketAddr>().ok();
        }
        let staying = line.contains("still running");
        seen.push(line);
        if staying {
            break;
        }
    }
    let seen = seen.join("\n");
    assert!(
        seen.contains("still running"),
        "the demo never stayed:\n{seen}"
    );
    let admin = admin.unwrap_or_else(|| panic!("no metrics address printed:\n{seen}"));
    // The services commit their groups' offsets every so often: wait for both to show.
    let lags = |metrics: &str, group: &str| -> Vec<f64> {
        metrics
            .lines()
            .filter(|line| {
                line.starts_with("sidestream_group_lag{")
                    && line.contains(&format!("group=\"{group}\""))
            })
            .filter_map(|line| line.rsplit_once(' ')?.1.parse().ok())
            .collect()
    };
    let groups = ["payments", "order-service"];
    let metrics = scrape_until(admin, Duration::from_secs(30), |metrics| {
        groups.iter().all(|group| !lags(metrics, group).is_empty())
    })
    .unwrap_or_else(|| panic!("no metrics from {admin}:\n{seen}"));
    for group in groups {
        let found = lags(&metrics, group);
        assert!(!found.is_empty(), "no lag of {group}:\n{metrics}");
        assert!(found.iter().all(|lag| *lag >= 0.0), "{metrics}");
    }
    // Ctrl-C, as a person stops it; the demo stops its services and the sidecar cleanly.
    let interrupted = std::process::Command::new("kill")
        .args(["-INT", &demo.0.id().to_string()])
        .status()
        .is_ok_and(|status| status.success());
    assert!(interrupted);
    let exited =
        sidestream_tests::wait_for(Duration::from_secs(60), || demo.0.try_wait().ok().flatten());
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}\n{seen}");
}
