//! The layers and checks of the settings, from real files. (Environment variables are tested
//! through the real binary, in `tests/single_sidecar`: a test must not change its own
//! process's environment.)

use std::time::Duration;

use super::*;

/// The settings from a file holding `toml`, then `flags` (dotted key, TOML value) as flags.
fn from(toml: &str, flags: &[(&str, figment::value::Value)]) -> Result<Settings, SettingsError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sidestream.toml");
    std::fs::write(&file, toml).unwrap();
    let figment = Figment::new().merge(Toml::file_exact(&file));
    let figment = flags.iter().fold(figment, |figment, (key, value)| {
        flag(figment, key, Some(value))
    });
    Settings::extract(&figment).map_err(|e| match e {
        // The temporary file's path differs per run; name it as an operator would read it.
        SettingsError::Layer(message) => {
            SettingsError::Layer(message.replace(&file.display().to_string(), "sidestream.toml"))
        }
        other => other,
    })
}

fn error(toml: &str) -> String {
    from(toml, &[]).unwrap_err().to_string()
}

#[test]
fn no_file_gives_the_sidecars_defaults() {
    let settings = Settings::extract(&Figment::new()).unwrap();
    assert_eq!(settings, Settings::default());
    let config = Settings {
        data_dir: Some("/data".into()),
        ..settings
    }
    .into_config()
    .unwrap();
    let defaults = SidecarConfig::new("/data");
    assert_eq!(config.listen, defaults.listen);
    assert_eq!(config.node_id, defaults.node_id);
    assert_eq!(config.tls, defaults.tls);
    assert_eq!(config.publish_timeout, defaults.publish_timeout);
    assert_eq!(config.shutdown_grace, defaults.shutdown_grace);
    assert_eq!(config.quic, defaults.quic);
    assert_eq!(config.retention_interval, defaults.retention_interval);
    assert_eq!(config.max_frame_size, defaults.max_frame_size);
    assert_eq!(config.topic_defaults, defaults.topic_defaults);
    assert_eq!(config.log.segment_bytes, defaults.log.segment_bytes);
    assert_eq!(config.log.max_batch_bytes, defaults.log.max_batch_bytes);
    assert!(config.cluster.is_none());
    assert_eq!(
        config.admin_listen,
        Some(SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_ADMIN_PORT)))
    );
}

#[test]
fn every_key_of_the_file_reaches_the_config_and_flags_win() {
    let file = r#"
        data_dir = "/var/lib/sidestream"
        node_id = 3
        listen = "0.0.0.0:7400"
        advertise = "node-3.example:7400"
        admin_listen = "0.0.0.0:9480"
        publish_timeout_ms = 5000
        shutdown_grace_ms = 2000
        max_frame_bytes = 33554432
        busy_poll_us = 0

        [tls]
        ca = "/etc/sidestream/ca.pem"
        cert = "/etc/sidestream/sidecar.pem"
        key = "/etc/sidestream/sidecar.key"

        [topics]
        default_partitions = 6
        default_fsync = "interval:200"
        default_retention_ms = -1
        default_retention_bytes = 1073741824
        segment_bytes = 268435456
        max_batch_bytes = 4194304
        retention_check_ms = 30000

        [cluster]
        peer_listen = "0.0.0.0:7401"
        peer_advertise = "node-3.example:7401"
        seeds = ["node-1.example:7401", "node-2.example:7401"]
    "#;
    let config = from(file, &[]).unwrap().into_config().unwrap();
    assert_eq!(config.data_dir, Path::new("/var/lib/sidestream"));
    assert_eq!(config.node_id, 3);
    assert_eq!(config.listen.to_string(), "0.0.0.0:7400");
    assert_eq!(
        config.advertised_address.as_deref(),
        Some("node-3.example:7400")
    );
    assert_eq!(config.admin_listen.unwrap().to_string(), "0.0.0.0:9480");
    assert_eq!(config.publish_timeout, Duration::from_secs(5));
    assert_eq!(config.shutdown_grace, Duration::from_secs(2));
    assert_eq!(config.max_frame_size, 32 << 20);
    assert_eq!(config.quic.busy_poll, Duration::ZERO);
    assert!(matches!(config.tls, TlsSource::Files { .. }));
    assert_eq!(config.topic_defaults.partitions, 6);
    assert_eq!(
        config.topic_defaults.fsync,
        FsyncPolicy::Interval(Duration::from_millis(200))
    );
    assert_eq!(config.topic_defaults.retention_ms, -1);
    assert_eq!(config.topic_defaults.retention_bytes, 1 << 30);
    assert_eq!(config.log.segment_bytes, 256 << 20);
    assert_eq!(config.log.max_batch_bytes, 4 << 20);
    assert_eq!(config.retention_interval, Duration::from_secs(30));
    let cluster = config.cluster.unwrap();
    assert_eq!(cluster.peer_listen.to_string(), "0.0.0.0:7401");
    assert_eq!(
        cluster.peer_advertise.as_deref(),
        Some("node-3.example:7401")
    );
    assert_eq!(cluster.seeds.len(), 2);

    // A flag wins over the file; a repeated flag replaces the file's list.
    let flagged = from(
        file,
        &[
            ("node_id", 4.into()),
            ("topics.default_fsync", "never".into()),
            ("cluster.seeds", vec!["node-9.example:7401"].into()),
        ],
    )
    .unwrap();
    assert_eq!(flagged.node_id, Some(4));
    assert_eq!(flagged.topics.default_fsync, FsyncPolicy::Never);
    assert_eq!(flagged.cluster.seeds, ["node-9.example:7401"]);
    assert_eq!(flagged.topics.default_partitions, 6);
}

#[test]
fn printed_settings_read_back_the_same() {
    let settings = from(
        "node_id = 2\n[topics]\ndefault_fsync = \"interval:50\"\n[cluster]\npeer_listen = \"127.0.0.1:7401\"\n",
        &[("data_dir", "/srv/sidestream".into())],
    )
    .unwrap();
    let printed = settings.to_toml().unwrap();
    assert!(
        printed.contains("default_fsync = \"interval:50\""),
        "{printed}"
    );
    assert_eq!(from(&printed, &[]).unwrap(), settings);
}

#[test]
fn an_unknown_key_is_named_with_the_keys_allowed_there() {
    assert_eq!(
        error("[topics]\ndefualt_partitions = 3\n"),
        "configuration: key topics.defualt_partitions in sidestream.toml: unknown key \
         `defualt_partitions`; the keys allowed there are default_partitions, default_fsync, \
         default_retention_ms, default_retention_bytes, segment_bytes, max_batch_bytes, \
         retention_check_ms"
    );
    let message = error("[topic]\ndefault_partitions = 3\n");
    assert!(
        message.starts_with("configuration: key topic in sidestream.toml: unknown key `topic`;"),
        "{message}"
    );
    assert!(message.ends_with(", tls, topics, cluster"), "{message}");
}

#[test]
fn a_value_of_the_wrong_type_is_named() {
    assert_eq!(
        error("listen = \"nowhere\"\n"),
        "configuration: key listen in sidestream.toml: invalid socket address syntax"
    );
    assert_eq!(
        error("node_id = \"three\"\n"),
        "configuration: key node_id in sidestream.toml: invalid type: found string \"three\", \
         expected u64"
    );
    assert_eq!(
        error("[topics]\ndefault_fsync = \"sometimes\"\n"),
        "configuration: key topics.default_fsync in sidestream.toml: bad fsync policy \
         \"sometimes\": expected always, never or interval:<ms> (ms > 0)"
    );
}

#[test]
fn a_node_name_stands_for_a_stable_node_id() {
    let named = from("node_name = \"worker-7.example\"\n", &[]).unwrap();
    let id = named.node_id();
    // FNV-1a of the name, its low 53 bits: the same in every version and on every machine.
    // (0xbc25_5ea1_8e4b_ffd7, computed apart)
    assert_eq!(id, 1_511_422_853_644_247);
    assert_eq!(id, node_id_of_name("worker-7.example"));
    assert_ne!(id, node_id_of_name("worker-8.example"));
    assert_eq!(named.into_config().unwrap().node_id, id);
    // Without either, node 1.
    assert_eq!(from("", &[]).unwrap().node_id(), 1);
    assert_eq!(
        error("node_id = 3\nnode_name = \"w\"\n"),
        "configuration: node_name = \"w\" and node_id = 3 are both given: the node id is one or the other"
    );
    assert_eq!(
        error("node_name = \" \"\n"),
        "configuration: node_name = \"\" is empty: name the node, or leave node_name out"
    );
}

#[test]
fn seeds_are_host_and_port() {
    for good in [
        "peers.ns.svc.cluster.local:7401",
        "10.0.0.1:7401",
        "[fd00::1]:7401",
    ] {
        assert_eq!(seed_problem(good), None, "{good}");
    }
    assert_eq!(
        error("[cluster]\npeer_listen = \"127.0.0.1:7401\"\nseeds = [\"[peers.ns.svc]:7401\"]\n"),
        "configuration: cluster.seeds = \"[peers.ns.svc]:7401\" has brackets around something other than an IPv6 address"
    );
    for bad in ["peers", "peers:", ":7401", "fd00::1:7401", "peers:99999"] {
        assert!(seed_problem(bad).is_some(), "{bad}");
    }
}

#[test]
fn bootstrap_expect_needs_seeds() {
    assert_eq!(
        error("[cluster]\npeer_listen = \"127.0.0.1:7401\"\nbootstrap_expect = 3\n"),
        "configuration: cluster.bootstrap_expect = 3 needs cluster.seeds: the addresses of the sidecars that form the cluster together"
    );
    assert_eq!(
        error("[cluster]\nbootstrap_expect = 3\n"),
        "configuration: cluster.bootstrap_expect = 3 needs cluster.peer_listen (a sidecar alone has no peer port)"
    );
    let settled = from(
        "[cluster]\npeer_listen = \"127.0.0.1:7401\"\nseeds = [\"peers.example:7401\"]\nbootstrap_expect = 3\n",
        &[],
    )
    .unwrap();
    assert_eq!(
        settled
            .into_config()
            .unwrap()
            .cluster
            .unwrap()
            .bootstrap_expect,
        3
    );
}

#[test]
fn values_out_of_range_are_named_with_the_range() {
    assert_eq!(
        error("node_id = 0\n"),
        "configuration: node_id = 0 is out of range: 1 or more"
    );
    assert_eq!(
        error("[topics]\nsegment_bytes = 100\n"),
        "configuration: topics.segment_bytes = 100 is out of range: 4096 to 3221225472"
    );
    assert_eq!(
        error("[topics]\ndefault_partitions = 0\n"),
        format!(
            "configuration: topics.default_partitions = 0 is out of range: 1 to {MAX_PARTITIONS}"
        )
    );
    assert_eq!(
        error("[topics]\ndefault_retention_ms = 0\n"),
        "configuration: topics.default_retention_ms = 0 is not allowed: expected -1 (keep forever) or 1 or more"
    );
    assert_eq!(
        error("max_frame_bytes = 1048576\n"),
        "configuration: max_frame_bytes = 1048576 is out of range: 8454144 (topics.max_batch_bytes + 64 KiB) to 268435456"
    );
    assert_eq!(
        error("busy_poll_us = 1001\n"),
        "configuration: busy_poll_us = 1001 is out of range: 0 to 1000"
    );
}

#[test]
fn a_batch_must_fit_a_fetch_answer() {
    assert_eq!(
        error("[topics]\nmax_batch_bytes = 33554432\n"),
        "configuration: topics.max_batch_bytes = 33554432 is out of range: 1024 to 16777216"
    );
}

#[test]
fn the_environments_keys_and_sections_are_the_files() {
    let every = Settings {
        data_dir: Some("/d".into()),
        advertise: Some("a:1".into()),
        tls: TlsSettings {
            ca: Some("/ca".into()),
            cert: Some("/c".into()),
            key: Some("/k".into()),
            names: vec!["n".into()],
            check_ms: 1000,
        },
        cluster: ClusterSettings {
            peer_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 1))),
            peer_advertise: Some("p:1".into()),
            seeds: vec!["s:1".into()],
            bootstrap_expect: 3,
        },
        node_id: Some(2),
        node_name: Some("n".into()),
        ..Settings::default()
    };
    let table: toml::Table = toml::from_str(&every.to_toml().unwrap()).unwrap();
    let mut top: Vec<&str> = table.keys().map(String::as_str).collect();
    let mut known = TOP_KEYS.to_vec();
    top.sort_unstable();
    known.sort_unstable();
    assert_eq!(top, known);
    for (section, keys) in SECTION_KEYS {
        let mut found: Vec<&str> = table[section]
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = keys.to_vec();
        found.sort_unstable();
        keys.sort_unstable();
        assert_eq!(found, keys, "section {section}");
    }
    assert!(is_setting("topics.segment_bytes"));
    assert!(is_setting("NODE_ID"));
    assert!(!is_setting("port"));
    assert!(!is_setting("service_host"));
}

#[test]
fn keys_that_go_together_are_asked_for_together() {
    assert_eq!(
        error("[tls]\ncert = \"/etc/s.pem\"\n"),
        "configuration: tls.cert = \"/etc/s.pem\" needs the other two of tls.ca, tls.cert and tls.key"
    );
    assert_eq!(
        error("[cluster]\nseeds = [\"a:7401\"]\n"),
        "configuration: cluster.seeds = [\"a:7401\"] needs cluster.peer_listen (a sidecar alone has no peer port)"
    );
}

#[test]
fn a_missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let error = layers(Some(&missing)).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("configuration file {}: no such file", missing.display())
    );
}
