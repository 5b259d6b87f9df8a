//! The sidecar's settings from a file, `SIDESTREAM_*` environment variables and flags, each
//! over the one before, through the real binary (the environment is the child's own).

use std::process::{Command, Output, Stdio};

use sidestream_tests::{SidecarProcess, cli, cli_path};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `sidestream sidecar --print-config` with `args` and environment `env`.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(cli_path())
        .arg("sidecar")
        .arg("--print-config")
        .args(args)
        .env_remove("SIDESTREAM_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("the sidecar command runs")
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidestream.toml");
    std::fs::write(
        &file,
        "node_id = 2\ndata_dir = \"/srv/sidestream\"\n\n[topics]\ndefault_partitions = 3\nsegment_bytes = 8192\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let output = print_config(
        &["--config", file, "--node-id", "4"],
        &[
            ("SIDESTREAM_NODE_ID", "3"),
            ("SIDESTREAM_TOPICS__DEFAULT_PARTITIONS", "5"),
            ("SIDESTREAM_CLUSTER__PEER_LISTEN", "127.0.0.1:7401"),
            (
                "SIDESTREAM_CLUSTER__SEEDS",
                "[127.0.0.2:7401, 127.0.0.3:7401]",
            ),
        ],
    );
    let printed = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    for line in [
        "node_id = 4",
        "data_dir = \"/srv/sidestream\"",
        "default_partitions = 5",
        "segment_bytes = 8192",
        "default_fsync = \"always\"",
        "peer_listen = \"127.0.0.1:7401\"",
        "seeds = [\"127.0.0.2:7401\", \"127.0.0.3:7401\"]",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no {line:?} in:\n{printed}"
        );
    }

    // The same file named by SIDESTREAM_CONFIG instead of --config.
    let output = print_config(&[], &[("SIDESTREAM_CONFIG", file)]);
    assert!(text(&output.stdout).lines().any(|l| l == "node_id = 2"));
}

#[test]
fn a_bad_setting_stops_the_sidecar_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let typo = print_config(
        &["--data-dir", dir.path().to_str().unwrap()],
        &[("SIDESTREAM_TOPICS__SEGMENT_BYTE", "8192")],
    );
    assert_eq!(
        typo.status.code(),
        Some(2),
        "a wrong setting exits as a wrong flag does"
    );
    let stderr = text(&typo.stderr);
    assert!(
        stderr.contains(
            "environment variable SIDESTREAM_TOPICS__SEGMENT_BYTE: unknown key `segment_byte`; the keys allowed there are default_partitions"
        ),
        "{stderr}"
    );

    // Not the sidecar's (Kubernetes' variables of a Service named `sidestream`, an old name):
    // left out, each named in a warning.
    let foreign = print_config(
        &["--data-dir", dir.path().to_str().unwrap()],
        &[
            ("SIDESTREAM_PORT", "udp://10.0.0.1:7400"),
            ("SIDESTREAM_SERVICE_HOST", "10.0.0.1"),
            ("SIDESTREAM_PEER_LISTEN", "127.0.0.1:7401"),
        ],
    );
    assert!(foreign.status.success(), "{}", text(&foreign.stderr));
    let stderr = text(&foreign.stderr);
    for named in [
        "SIDESTREAM_PORT",
        "SIDESTREAM_SERVICE_HOST",
        "SIDESTREAM_PEER_LISTEN (did you mean SIDESTREAM_CLUSTER__PEER_LISTEN?)",
    ] {
        assert!(stderr.contains(named), "{named} not in:\n{stderr}");
    }
    assert!(!text(&foreign.stdout).contains("peer_listen"));

    let range = print_config(
        &["--data-dir", dir.path().to_str().unwrap()],
        &[("SIDESTREAM_TOPICS__RETENTION_CHECK_MS", "5")],
    );
    assert!(!range.status.success());
    assert!(
        text(&range.stderr).contains("topics.retention_check_ms = 5 is out of range: 100 or more"),
        "{}",
        text(&range.stderr)
    );

    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "listen = 7400\n").unwrap();
    let wrong_type = print_config(&["--config", file.to_str().unwrap()], &[]);
    assert!(!wrong_type.status.success());
    assert!(
        text(&wrong_type.stderr).contains(&format!(
            "key listen in {}: invalid type: found signed int `7400`, expected socket address",
            file.display()
        )),
        "{}",
        text(&wrong_type.stderr)
    );
}

#[test]
fn a_running_sidecar_takes_its_defaults_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidestream.toml");
    std::fs::write(&file, "[topics]\ndefault_partitions = 3\n").unwrap();
    let sidecar = SidecarProcess::start_with(
        &dir.path().join("data"),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        &["--config", file.to_str().unwrap()],
    );
    let created = cli(&sidecar)
        .args(["topic", "create", "configured"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("the CLI runs");
    assert!(created.status.success(), "{}", text(&created.stderr));
    assert!(
        text(&created.stdout).contains("partitions:         3"),
        "{}",
        text(&created.stdout)
    );
}
