//! Sidecar processes as a cluster: real `sidestream sidecar` processes on 127.0.0.1, joined
//! through their peer ports over QUIC with mutual TLS, killed with SIGKILL and restarted.

mod faults;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sidestream_proto::v1::MetadataResult;
use sidestream_tests::SidecarProcess;

/// Every test's bound on waiting for something that should happen.
const PATIENCE: Duration = Duration::from_secs(60);

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A member of a test cluster: its process and what it needs to be started again.
struct Member {
    id: u64,
    process: SidecarProcess,
    data_dir: PathBuf,
}

/// The flags of member `id` with its peer port on `peer`, joining through `seed`, with the
/// certificates of the first node's development CA in `tls` (the first node makes them).
/// Port 0 of `127.0.0.1` means a free port that a restart can bind again.
fn member_args(id: u64, peer: &str, seed: Option<&str>, tls: Option<&Path>) -> Vec<String> {
    let peer = if peer == "127.0.0.1:0" {
        sidestream_tests::free_udp_addr().to_string()
    } else {
        peer.to_owned()
    };
    let mut args = vec![
        "--node-id".to_owned(),
        id.to_string(),
        "--peer-listen".to_owned(),
        peer,
    ];
    if let Some(seed) = seed {
        args.extend(["--seed".to_owned(), seed.to_owned()]);
    }
    if let Some(tls) = tls {
        args.extend(tls_flags(tls));
    }
    args
}

/// The flags that give a member the certificates of the development CA in `tls`.
fn tls_flags(tls: &Path) -> Vec<String> {
    [
        ("--tls-ca", "ca.pem"),
        ("--tls-cert", "sidecar.pem"),
        ("--tls-key", "sidecar.key"),
    ]
    .into_iter()
    .flat_map(|(flag, file)| [flag.to_owned(), tls.join(file).display().to_string()])
    .collect()
}

fn start(data_dir: &Path, addr: SocketAddr, args: &[String]) -> SidecarProcess {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    SidecarProcess::start_with(data_dir, addr, &args)
}

/// The cluster as the sidecar at `addr` describes it, or `None` if it cannot answer now.
async fn metadata(addr: SocketAddr, tls: &Path) -> Option<MetadataResult> {
    let client = sidestream::Client::builder("cluster-test")
        .sidecar(addr.to_string())
        .tls_dir(tls)
        .connect()
        .await
        .ok()?;
    let metadata = client.metadata().await.ok();
    let _ = client.close().await;
    metadata
}

/// Asks the sidecar at `addr` until its description passes `check` (at most [`PATIENCE`]).
async fn wait_until(
    addr: SocketAddr,
    tls: &Path,
    what: &str,
    check: impl Fn(&MetadataResult) -> bool,
) -> MetadataResult {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        if let Some(seen) = metadata(addr, tls).await {
            if check(&seen) {
                return seen;
            }
            last = Some(seen);
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar at {addr} never showed {what}; last seen: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_form_a_cluster_and_keep_it_through_the_metadata_leaders_death() {
    let dir = tempfile::tempdir().unwrap();
    let first_dir = dir.path().join("node-1");
    let first = start(
        &first_dir,
        loopback(),
        &member_args(1, "127.0.0.1:0", None, None),
    );
    let tls = first.tls_dir();
    let seed_peer = first
        .peer_addr()
        .expect("a member prints its peer port")
        .to_string();
    let mut members = vec![Member {
        id: 1,
        process: first,
        data_dir: first_dir,
    }];
    for id in [2, 3] {
        let data_dir = dir.path().join(format!("node-{id}"));
        let args = member_args(id, "127.0.0.1:0", Some(&seed_peer), Some(&tls));
        members.push(Member {
            id,
            process: start(&data_dir, loopback(), &args),
            data_dir,
        });
    }

    // Every member describes the same cluster: three nodes, all voters, one leader.
    let mut leaders = Vec::new();
    for member in &members {
        let seen = wait_until(
            member.process.addr(),
            &tls,
            "three voters and a leader",
            |m| m.nodes.len() == 3 && m.nodes.iter().all(|n| n.voter) && m.metadata_leader != 0,
        )
        .await;
        assert_eq!(seen.node_id, member.id);
        let addresses: Vec<(u64, String, String)> = seen
            .nodes
            .iter()
            .map(|n| (n.id, n.client_address.clone(), n.peer_address.clone()))
            .collect();
        let expected: Vec<(u64, String, String)> = members
            .iter()
            .map(|m| {
                let peer = m.process.peer_addr().unwrap().to_string();
                (m.id, m.process.addr().to_string(), peer)
            })
            .collect();
        assert_eq!(addresses, expected);
        leaders.push(seen.metadata_leader);
    }
    let leader = leaders[0];
    for member in &members {
        wait_until(member.process.addr(), &tls, "the same leader", |m| {
            m.metadata_leader == leader
        })
        .await;
    }

    // The leader's process dies: the other two elect a new leader and still list all three.
    let index = members.iter().position(|m| m.id == leader).unwrap();
    let mut dead = members.remove(index);
    let (client_addr, peer_addr) = (dead.process.addr(), dead.process.peer_addr().unwrap());
    dead.process.kill();
    let mut new_leaders = Vec::new();
    for member in &members {
        let seen = wait_until(member.process.addr(), &tls, "a new leader", |m| {
            m.metadata_leader != 0 && m.metadata_leader != leader && m.nodes.len() == 3
        })
        .await;
        new_leaders.push(seen.metadata_leader);
    }
    let new_leader = new_leaders[0];
    for member in &members {
        wait_until(member.process.addr(), &tls, "the new leader", |m| {
            m.metadata_leader == new_leader
        })
        .await;
    }

    // It comes back with its data on the same addresses and follows the cluster's leader:
    // the new one, or one elected after it (a slowed restart may time out and call a vote,
    // which Raft allows), as long as all three name the same.
    let tls_flags = (dead.id != 1).then_some(tls.as_path());
    let args = member_args(dead.id, &peer_addr.to_string(), None, tls_flags);
    dead.process = start(&dead.data_dir, client_addr, &args);
    members.push(dead);
    agree_on_a_leader(&members, &tls, 3).await;
    let seen = wait_until(client_addr, &tls, "three voters after a restart", |m| {
        m.nodes.len() == 3
    })
    .await;
    assert!(seen.nodes.iter().all(|n| n.voter), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_started_together_with_the_same_seeds_form_one_cluster() {
    // As a DaemonSet's pods: each has the same seeds (every peer address; one as a DNS name),
    // a node name instead of an id, and none is started without seeds.
    let dir = tempfile::tempdir().unwrap();
    let tls = {
        // The development CA every member is given, made by a sidecar alone.
        let maker = SidecarProcess::start(&dir.path().join("ca"));
        maker.tls_dir()
    };
    let peers: Vec<SocketAddr> = (0..3).map(|_| sidestream_tests::free_udp_addr()).collect();
    let seeds = [
        format!("localhost:{}", peers[0].port()),
        peers[1].to_string(),
        peers[2].to_string(),
    ];
    let starting: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(index, peer)| {
            let data_dir = dir.path().join(format!("node-{index}"));
            let mut args = vec![
                "--node-name".to_owned(),
                format!("worker-{index}.example"),
                "--peer-listen".to_owned(),
                peer.to_string(),
                "--bootstrap-expect".to_owned(),
                "3".to_owned(),
            ];
            for seed in &seeds {
                args.extend(["--seed".to_owned(), seed.clone()]);
            }
            args.extend(tls_flags(&tls));
            // Each waits for the others before it is ready: started side by side.
            std::thread::spawn(move || (start(&data_dir, loopback(), &args), data_dir))
        })
        .collect();
    let members: Vec<Member> = starting
        .into_iter()
        .map(|thread| {
            let (process, data_dir) = thread.join().expect("a member starts");
            Member {
                id: 0,
                process,
                data_dir,
            }
        })
        .collect();

    // One cluster of the three, whichever formed it: every member lists the same three ids,
    // each derived from its node's name, and names the same leader.
    let leader = three_voters_agree_on_a_leader(&members, &tls).await;
    let mut ids = Vec::new();
    for member in &members {
        let seen = metadata(member.process.addr(), &tls).await.unwrap();
        let listed: Vec<u64> = seen.nodes.iter().map(|n| n.id).collect();
        assert!(listed.contains(&seen.node_id), "{seen:?}");
        assert!(
            seen.node_id > 3,
            "an id from the node's name, not a default: {seen:?}"
        );
        ids.push((seen.node_id, listed));
    }
    let own: std::collections::BTreeSet<u64> = ids.iter().map(|(id, _)| *id).collect();
    assert_eq!(own.len(), 3, "{ids:?}");
    for (_, listed) in &ids {
        let listed: std::collections::BTreeSet<u64> = listed.iter().copied().collect();
        assert_eq!(listed, own, "{ids:?}");
    }
    assert!(own.contains(&leader));

    // It takes a replicated topic and events, as any cluster.
    let client = connect(&members[2], &tls).await;
    client
        .create_topic("formed", sidestream::TopicSettings::new().partitions(2))
        .await
        .expect("the cluster creates a topic");
    let acked = publish_range(&client, "formed", 0..20).await;
    assert_eq!(acked.len(), 20);
    read_back(&client, "formed", &acked).await;
    let _ = client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_sidecar_hands_its_partitions_leadership_over_first() {
    let dir = tempfile::tempdir().unwrap();
    let (mut members, tls) = three_members(dir.path()).await;
    let client = connect(&members[1], &tls).await;
    // Three partitions, each led by its preferred replica: one on each node.
    leaders_are_the_preferred_replicas(&client, &members, &tls).await;
    let acked = publish_range(&client, "spread", 0..30).await;

    // SIGTERM, as Kubernetes stops a pod: node 1 hands its partition over before it goes.
    let (clean, log) = members[0].process.terminate(Duration::from_secs(30));
    assert!(clean, "the sidecar stops cleanly; its log:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("handed partition leadership over before stopping"))
        .unwrap_or_else(|| panic!("no handover before stopping; the log:\n{log}"));
    // Node 1 led one partition, unless an election moved another to it in between; on a
    // slow machine a handover may miss its bounds, but not every one.
    let line = without_colors(line);
    let count = |field: &str| -> usize {
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(field))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {line}"))
    };
    assert!(count("led=") >= 1 && count("moved=") >= 1, "{line}");

    // The others lead every partition, and take and serve events.
    wait_until(
        members[1].process.addr(),
        &tls,
        "no partition led by node 1",
        |m| {
            m.topics.iter().any(|t| {
                t.name == "spread"
                    && t.partitions
                        .iter()
                        .all(|p| p.leader.is_some_and(|l| l != 1))
            })
        },
    )
    .await;
    let more = publish_range(&client, "spread", 30..40).await;
    let every: Vec<(u32, u64, String)> = acked.into_iter().chain(more).collect();
    read_back(&client, "spread", &every).await;
    let _ = client.close().await;
}

/// `line` without its terminal color codes (`ESC [ … m`).
fn without_colors(line: &str) -> String {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}

/// Waits until every member lists three voters and a leader, then until they all name the
/// same one; returns it.
async fn three_voters_agree_on_a_leader(members: &[Member], tls: &Path) -> u64 {
    let mut leader = 0;
    for member in members {
        leader = wait_until(
            member.process.addr(),
            tls,
            "three voters and a leader",
            |m| m.nodes.len() == 3 && m.nodes.iter().all(|n| n.voter) && m.metadata_leader != 0,
        )
        .await
        .metadata_leader;
    }
    for member in members {
        wait_until(member.process.addr(), tls, "the same leader", |m| {
            m.metadata_leader == leader
        })
        .await;
    }
    leader
}

/// Waits (at most [`PATIENCE`]) until every one of `members` lists `nodes` nodes and names the
/// same leader in the same round of asking; returns it.
async fn agree_on_a_leader(members: &[Member], tls: &Path, nodes: usize) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    let mut last = Vec::new();
    loop {
        last.clear();
        for member in members {
            last.push(metadata(member.process.addr(), tls).await);
        }
        let leaders: Vec<Option<u64>> = last
            .iter()
            .map(|seen| {
                seen.as_ref()
                    .filter(|m| m.nodes.len() == nodes && m.metadata_leader != 0)
                    .map(|m| m.metadata_leader)
            })
            .collect();
        if let Some(&Some(leader)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(leader))
        {
            return leader;
        }
        assert!(
            Instant::now() < deadline,
            "the members never agreed on a leader of {nodes} nodes; last seen: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The seed of a test's random faults: `SIDESTREAM_SEED` to replay one, else the clock's.
fn seed() -> u64 {
    let seed = std::env::var("SIDESTREAM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
            now.map_or(1, |d| {
                u64::try_from(d.as_nanos() % u128::from(u64::MAX)).unwrap_or(1)
            })
        });
    #[expect(
        clippy::print_stdout,
        reason = "the seed is shown with the failing test's output, to replay it"
    )]
    {
        println!("REPRODUCE: SIDESTREAM_SEED={seed}");
    }
    seed
}

/// Three members, each behind a [`FaultProxy`] that every other member reaches it through.
struct ProxiedCluster {
    dir: tempfile::TempDir,
    tls: PathBuf,
    members: Vec<Member>,
    /// Each member's own peer socket (what the other proxies see as its address).
    real: Vec<SocketAddr>,
    proxies: Vec<sidestream_tests::FaultProxy>,
}

impl ProxiedCluster {
    /// Three members behind proxies that `faults` sets up before any member starts.
    fn start(seed: u64, faults: impl Fn(&sidestream_tests::FaultProxy)) -> Self {
        Self::start_sized(3, seed, faults)
    }

    /// `size` members behind proxies that `faults` sets up before any member starts.
    fn start_sized(size: u64, seed: u64, faults: impl Fn(&sidestream_tests::FaultProxy)) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let count = usize::try_from(size).expect("a small cluster");
        let real: Vec<SocketAddr> = (0..count)
            .map(|_| sidestream_tests::free_udp_addr())
            .collect();
        let proxies: Vec<_> = real
            .iter()
            .zip(0..)
            .map(|(addr, i)| sidestream_tests::FaultProxy::start(*addr, seed.wrapping_add(i)))
            .collect();
        for proxy in &proxies {
            faults(proxy);
        }
        let mut members: Vec<Member> = Vec::new();
        let mut tls = PathBuf::new();
        for (i, id) in (1..=size).enumerate() {
            let data_dir = dir.path().join(format!("node-{id}"));
            let seed_addr = (id != 1).then(|| proxies[0].addr().to_string());
            let tls_flags = (id != 1).then_some(tls.as_path());
            let mut args = member_args(id, &real[i].to_string(), seed_addr.as_deref(), tls_flags);
            args.extend(["--peer-advertise".to_owned(), proxies[i].addr().to_string()]);
            let process = start(&data_dir, loopback(), &args);
            if id == 1 {
                tls = process.tls_dir();
            }
            members.push(Member {
                id,
                process,
                data_dir,
            });
        }
        Self {
            dir,
            tls,
            members,
            real,
            proxies,
        }
    }

    /// Cuts member `index` off from the others, both ways.
    fn isolate(&self, index: usize) {
        for other in (0..self.members.len()).filter(|&o| o != index) {
            self.proxies[other].cut(self.real[index]);
            self.proxies[index].cut(self.real[other]);
        }
    }

    fn heal(&self) {
        for proxy in &self.proxies {
            proxy.heal();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_metadata_leader_takes_nobody_in_and_follows_the_new_leader_after_healing() {
    let mut cluster = ProxiedCluster::start(seed(), |_| {});
    let tls = cluster.tls.clone();
    let leader = three_voters_agree_on_a_leader(&cluster.members, &tls).await;
    let old = cluster.members.iter().position(|m| m.id == leader).unwrap();
    cluster.isolate(old);

    // The other two elect a new leader among themselves.
    let others: Vec<&Member> = cluster.members.iter().filter(|m| m.id != leader).collect();
    for member in &others {
        wait_until(member.process.addr(), &tls, "a new leader", |m| {
            m.metadata_leader != 0 && m.metadata_leader != leader
        })
        .await;
    }

    // A fourth node asks to join through the isolated old leader only: it cannot commit, so
    // nobody lists the newcomer while the partition lasts.
    let joiner_dir = cluster.dir.path().join("node-4");
    let seed_addr = cluster.proxies[old].addr().to_string();
    let args = member_args(4, "127.0.0.1:0", Some(&seed_addr), Some(&tls));
    let joiner = start(&joiner_dir, loopback(), &args);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for member in &cluster.members {
        // Each still answers its clients: only the peer ports are cut.
        let seen = wait_until(member.process.addr(), &tls, "an answer", |_| true).await;
        assert!(
            seen.nodes.iter().all(|n| n.id != 4),
            "node {} lists node 4 during the partition: {seen:?}",
            member.id
        );
    }

    // Healed: the old leader follows the new one, and the newcomer gets in through it. (Which
    // of the other two leads may change again on a loaded machine: all three agreeing is what
    // counts.)
    cluster.heal();
    agree_on_a_leader(&cluster.members, &tls, 4).await;
    let seen = wait_until(joiner.addr(), &tls, "itself as a learner", |m| {
        m.nodes.iter().any(|n| n.id == 4 && !n.voter)
    })
    .await;
    assert_eq!(seen.nodes.iter().filter(|n| n.voter).count(), 3);
    // The join did reach the old leader while it believed it led.
    let log = cluster.members[old].process.kill();
    assert!(log.contains("node 4 asks to join the cluster"), "{log}");
}

/// Runs `sidestream cluster …` against `member` with the first node's certificates; returns
/// whether it succeeded, its stdout and its stderr.
fn cluster_cli(
    member: &SidecarProcess,
    tls_data_dir: &Path,
    args: &[&str],
) -> (bool, String, String) {
    let output = std::process::Command::new(sidestream_tests::cli_path())
        .arg("cluster")
        .args(args)
        .env("SIDESTREAM_SIDECAR", member.addr().to_string())
        .env("SIDESTREAM_DATA_DIR", tls_data_dir)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the command line runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Members 1 to `count` in `dir/node-<id>`: the first forms the cluster, the others join
/// through it with its certificates.
fn start_members(dir: &Path, count: u64) -> Vec<SidecarProcess> {
    let first = start(
        &dir.join("node-1"),
        loopback(),
        &member_args(1, "127.0.0.1:0", None, None),
    );
    let tls = first.tls_dir();
    let seed_peer = first.peer_addr().expect("a member's peer port").to_string();
    let mut processes = vec![first];
    for id in 2..=count {
        let data_dir = dir.join(format!("node-{id}"));
        let args = member_args(id, "127.0.0.1:0", Some(&seed_peer), Some(&tls));
        processes.push(start(&data_dir, loopback(), &args));
    }
    processes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioned_nodes_leave_and_a_learner_takes_a_voters_place() {
    let dir = tempfile::tempdir().unwrap();
    let first_dir = dir.path().join("node-1");
    let processes = start_members(dir.path(), 4);
    let tls = processes[0].tls_dir();
    let seen = wait_until(processes[2].addr(), &tls, "four nodes, three voters", |m| {
        m.nodes.len() == 4 && m.nodes.iter().filter(|n| n.voter).count() == 3
    })
    .await;
    let learner = seen.nodes.iter().find(|n| !n.voter).unwrap().id;
    let voter = seen
        .nodes
        .iter()
        .find(|n| n.voter && n.id != seen.metadata_leader)
        .unwrap()
        .id;

    // A voter leaves through any member's command line: the learner takes its vote.
    let (ok, stdout, stderr) = cluster_cli(
        &processes[0],
        &first_dir,
        &["decommission", &voter.to_string()],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with(&format!("node {voter} left the cluster; metadata voters: ")),
        "{stdout}"
    );
    let remaining: Vec<u64> = (1..=4).filter(|&id| id != voter).collect();
    for &id in &remaining {
        let index = usize::try_from(id - 1).unwrap();
        let seen = wait_until(
            processes[index].addr(),
            &tls,
            "three voters without the node",
            |m| {
                m.nodes.iter().map(|n| n.id).collect::<Vec<_>>() == remaining
                    && m.nodes.iter().all(|n| n.voter)
            },
        )
        .await;
        assert!(seen.nodes.iter().any(|n| n.id == learner && n.voter));
    }
    let (_, status, _) = cluster_cli(&processes[0], &first_dir, &["status"]);
    assert!(
        !status.lines().any(|l| l.starts_with(&format!("{voter} "))),
        "{status}"
    );

    // Bad requests are named: a node that is not a member, and a sidecar run alone.
    let (ok, _, stderr) = cluster_cli(
        &processes[0],
        &first_dir,
        &["decommission", &voter.to_string()],
    );
    assert!(!ok);
    assert!(
        stderr.contains(&format!("node {voter} is not a member of the cluster")),
        "{stderr}"
    );
    let alone = SidecarProcess::start(&dir.path().join("alone"));
    let (ok, _, stderr) = cluster_cli(&alone, alone.data_dir(), &["decommission", "1"]);
    assert!(!ok);
    assert!(stderr.contains("runs alone"), "{stderr}");

    // The metadata leader itself leaves: the other two carry on under a new leader.
    let still_member = usize::try_from(remaining[0] - 1).unwrap();
    let leader = wait_until(processes[still_member].addr(), &tls, "a leader", |m| {
        m.metadata_leader != 0
    })
    .await
    .metadata_leader;
    let asked = remaining.iter().copied().find(|&id| id != leader).unwrap();
    let asked_index = usize::try_from(asked - 1).unwrap();
    let (ok, _, stderr) = cluster_cli(
        &processes[asked_index],
        &first_dir,
        &["decommission", &leader.to_string()],
    );
    assert!(ok, "{stderr}");
    let last: Vec<u64> = remaining
        .iter()
        .copied()
        .filter(|&id| id != leader)
        .collect();
    for &id in &last {
        let index = usize::try_from(id - 1).unwrap();
        wait_until(
            processes[index].addr(),
            &tls,
            "two voters under a new leader",
            |m| {
                m.nodes.iter().map(|n| n.id).collect::<Vec<_>>() == last
                    && m.metadata_leader != 0
                    && m.metadata_leader != leader
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_forms_and_replaces_its_dead_leader_on_a_lossy_reordering_network() {
    // 5 % of datagrams lost, 5 % duplicated, each held back 2–10 ms (so they overtake each
    // other), both ways between every pair of members.
    let mut cluster = ProxiedCluster::start(seed(), |proxy| {
        proxy.set_loss(0.05);
        proxy.set_duplication(0.05);
        proxy.set_delay(Duration::from_millis(2), Duration::from_millis(8));
    });
    let tls = cluster.tls.clone();
    let leader = three_voters_agree_on_a_leader(&cluster.members, &tls).await;
    let dead = cluster.members.iter().position(|m| m.id == leader).unwrap();
    cluster.members[dead].process.kill();
    cluster.members.remove(dead);
    let mut new_leader = 0;
    for member in &cluster.members {
        new_leader = wait_until(member.process.addr(), &tls, "a new leader", |m| {
            m.metadata_leader != 0 && m.metadata_leader != leader
        })
        .await
        .metadata_leader;
    }
    for member in &cluster.members {
        wait_until(member.process.addr(), &tls, "the same new leader", |m| {
            m.metadata_leader == new_leader && m.nodes.len() == 3
        })
        .await;
    }
}

/// Starts three members on 127.0.0.1 (the first forms the cluster, the others join through
/// it) and waits until they agree on a metadata leader.
async fn three_members(dir: &Path) -> (Vec<Member>, PathBuf) {
    three_members_with(dir, &[]).await
}

/// [`three_members`], each started with `extra` flags as well.
async fn three_members_with(dir: &Path, extra: &[&str]) -> (Vec<Member>, PathBuf) {
    let with_extra = |mut args: Vec<String>| {
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };
    let first_dir = dir.join("node-1");
    let first = start(
        &first_dir,
        loopback(),
        &with_extra(member_args(1, "127.0.0.1:0", None, None)),
    );
    let tls = first.tls_dir();
    let seed_peer = first.peer_addr().expect("a member prints its peer port");
    let mut members = vec![Member {
        id: 1,
        process: first,
        data_dir: first_dir,
    }];
    for id in [2, 3] {
        let data_dir = dir.join(format!("node-{id}"));
        let args = with_extra(member_args(
            id,
            "127.0.0.1:0",
            Some(&seed_peer.to_string()),
            Some(&tls),
        ));
        members.push(Member {
            id,
            process: start(&data_dir, loopback(), &args),
            data_dir,
        });
    }
    three_voters_agree_on_a_leader(&members, &tls).await;
    (members, tls)
}

async fn connect(member: &Member, tls: &Path) -> sidestream::Client {
    sidestream::Client::builder("cluster-test")
        .sidecar(member.process.addr().to_string())
        .tls_dir(tls)
        .request_timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("a member takes clients")
}

/// Publishes events `range` (value `event-<i>`) through `client` with acks=all; the
/// acknowledged ones as (partition, offset, value).
async fn publish_range(
    client: &sidestream::Client,
    topic: &str,
    range: std::ops::Range<u32>,
) -> Vec<(u32, u64, String)> {
    let mut pending = Vec::new();
    for i in range {
        let value = format!("event-{i}");
        let mut event = sidestream::RawEvent::new(value.clone().into_bytes());
        event.key = Some(i.to_string().into_bytes().into());
        let receipt = client
            .publish_raw_nowait(topic, event, sidestream::Acks::All)
            .await
            .expect("the publisher takes the event");
        pending.push((value, receipt));
    }
    let mut acknowledged = Vec::new();
    for (value, receipt) in pending {
        let receipt = receipt.await.expect("a replicated publish is acknowledged");
        let offset = receipt.offset.expect("acks=all answers the offset");
        acknowledged.push((receipt.partition, offset, value));
    }
    acknowledged
}

/// Reads `topic` from the start through `client` until every event of `expected` arrived
/// (at most [`PATIENCE`]); checks that each partition's offsets only grow, and that nothing
/// was delivered that was not published.
async fn read_back(client: &sidestream::Client, topic: &str, expected: &[(u32, u64, String)]) {
    let mut subscription = client
        .subscribe_raw(topic)
        .from(sidestream::StartAt::Earliest)
        .start()
        .await
        .expect("a member serves subscriptions of its replicas");
    let mut seen = std::collections::BTreeMap::new();
    let mut last_offset = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !expected
        .iter()
        .all(|(p, o, _)| seen.contains_key(&(*p, *o)))
    {
        let delivery = tokio::time::timeout_at(deadline, subscription.next())
            .await
            .unwrap_or_else(|_| {
                panic!("only {} of {} events came back", seen.len(), expected.len())
            })
            .expect("the subscription stays open")
            .expect("deliveries are readable");
        let (partition, offset) = (delivery.partition, delivery.offset);
        let value = String::from_utf8_lossy(&delivery.event.value).into_owned();
        assert!(value.starts_with("event-"), "never published: {value:?}");
        if let Some(previous) = last_offset.insert(partition, offset) {
            assert!(
                offset > previous,
                "partition {partition} went from {previous} to {offset}"
            );
        }
        seen.insert((partition, offset), value);
    }
    for (partition, offset, value) in expected {
        assert_eq!(
            seen.get(&(*partition, *offset)),
            Some(value),
            "{partition}/{offset}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_topic_keeps_every_acknowledged_event_when_a_partition_leader_dies() {
    let dir = tempfile::tempdir().unwrap();
    let (mut members, tls) = three_members(dir.path()).await;

    // Created through one member, the topic is known to every member when it answers.
    let creator = connect(&members[1], &tls).await;
    let created = creator
        .create_topic("orders", sidestream::TopicSettings::new().partitions(2))
        .await
        .expect("a cluster creates replicated topics");
    assert_eq!(created.replication_factor, 3);
    for partition in &created.partitions {
        assert_eq!(partition.replicas.len(), 3, "{created:?}");
    }
    let again = creator
        .create_topic("orders", sidestream::TopicSettings::new())
        .await;
    assert!(
        matches!(again, Err(sidestream::Error::TopicAlreadyExists { .. })),
        "{again:?}"
    );

    let mut acknowledged = publish_range(&creator, "orders", 0..300).await;
    leaders_are_the_preferred_replicas(&creator, &members, &tls).await;

    // A topic with one replica per partition: each member holds one partition; the others are
    // passed on (publish) and relayed (subscribe) through it.
    let single = creator
        .create_topic(
            "audit",
            sidestream::TopicSettings::new()
                .partitions(3)
                .replication_factor(1),
        )
        .await
        .expect("a replication factor below the cluster's size is taken");
    let holders: std::collections::BTreeSet<u64> =
        single.partitions.iter().map(|p| p.replicas[0]).collect();
    assert_eq!(holders.len(), 3, "one partition on each node: {single:?}");
    let audited = publish_range(&creator, "audit", 0..90).await;
    let _ = creator.close().await;
    for member in &members {
        let reader = connect(member, &tls).await;
        read_back(&reader, "audit", &audited).await;
        let _ = reader.close().await;
    }

    // Partition 0's leader dies; the others take over and every acknowledged event stays.
    let leader = wait_until(
        members[0].process.addr(),
        &tls,
        "a leader of orders/0",
        |m| {
            m.topics
                .iter()
                .any(|t| t.name == "orders" && t.partitions[0].leader.is_some_and(|l| l != 0))
        },
    )
    .await
    .topics
    .iter()
    .find(|t| t.name == "orders")
    .and_then(|t| t.partitions[0].leader)
    .unwrap();
    let index = members.iter().position(|m| m.id == leader).unwrap();
    let mut dead = members.remove(index);
    dead.process.kill();

    let publisher = connect(&members[0], &tls).await;
    acknowledged.extend(publish_range(&publisher, "orders", 300..600).await);
    let _ = publisher.close().await;
    let reader = connect(&members[1], &tls).await;
    read_back(&reader, "orders", &acknowledged).await;
    let _ = reader.close().await;

    // A topic is deleted while it is away: its replica there goes when it comes back (on the
    // deletion it catches up with, or swept if it never opens the topic again).
    let admin = connect(&members[0], &tls).await;
    admin.delete_topic("audit").await.expect("a topic deleted");
    let _ = admin.close().await;
    let audit_dirs = |member: &Member| {
        std::fs::read_dir(member.data_dir.join("replicas")).map_or(0, |dir| {
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("audit-"))
                .count()
        })
    };
    assert_eq!(
        audit_dirs(&dead),
        1,
        "its replica of audit is still on disk"
    );

    // It comes back with its data and catches up: it serves everything too.
    let tls_flags = (dead.id != 1).then_some(tls.as_path());
    let peer = dead.process.peer_addr().unwrap().to_string();
    let args = member_args(dead.id, &peer, None, tls_flags);
    dead.process = start(&dead.data_dir, dead.process.addr(), &args);
    let reader = connect(&dead, &tls).await;
    read_back(&reader, "orders", &acknowledged).await;
    let _ = reader.close().await;
    leadership_comes_back(&dead, &tls).await;
    assert_eq!(
        audit_dirs(&dead),
        0,
        "the deleted topic's replica was removed"
    );
}

/// Creates topic `spread` (three partitions) and waits until each partition's first replica
/// leads it: leaders spread as the replica sets do (the first replica mostly wins the first
/// election; balancing hands leadership to it otherwise).
async fn leaders_are_the_preferred_replicas(
    creator: &sidestream::Client,
    members: &[Member],
    tls: &Path,
) {
    let spread = creator
        .create_topic("spread", sidestream::TopicSettings::new().partitions(3))
        .await
        .expect("a second topic");
    let preferred: Vec<Option<u64>> = spread
        .partitions
        .iter()
        .map(|p| p.replicas.first().copied())
        .collect();
    assert_eq!(
        preferred
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3,
        "{spread:?}"
    );
    wait_until(
        members[0].process.addr(),
        tls,
        "spread's preferred leaders",
        |m| {
            m.topics.iter().any(|t| {
                t.name == "spread"
                    && t.partitions.iter().map(|p| p.leader).collect::<Vec<_>>() == preferred
            })
        },
    )
    .await;
}

/// Once member `back` (restarted) has kept up for a few seconds, the partitions it is the
/// preferred replica of are handed back to it: leaders are spread as at the start.
async fn leadership_comes_back(back: &Member, tls: &Path) {
    // (A partition held elsewhere alone shows no leader here.)
    let preferred = |t: &sidestream_proto::v1::TopicDescription| {
        t.replication_factor == 1
            || t.partitions
                .iter()
                .all(|p| p.leader.is_some() && p.leader == p.replicas.first().copied())
    };
    let balanced = wait_until(
        back.process.addr(),
        tls,
        "every preferred replica leading",
        |m| m.topics.len() == 2 && m.topics.iter().all(preferred),
    )
    .await;
    assert!(
        balanced
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .any(|p| p.leader == Some(back.id)),
        "{balanced:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decommissioned_nodes_replicas_move_to_the_others_before_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let mut processes = start_members(dir.path(), 4);
    let tls = processes[0].tls_dir();
    wait_until(processes[0].addr(), &tls, "four nodes", |m| {
        m.nodes.len() == 4
    })
    .await;
    let client = sidestream::Client::builder("cluster-test")
        .sidecar(processes[0].addr().to_string())
        .tls_dir(&tls)
        .request_timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap();
    let created = client
        .create_topic("moving", sidestream::TopicSettings::new().partitions(4))
        .await
        .unwrap();
    let acknowledged = publish_range(&client, "moving", 0..200).await;
    // One replica per partition, one partition per node: the leaving node's is the only copy.
    client
        .create_topic(
            "single",
            sidestream::TopicSettings::new()
                .partitions(4)
                .replication_factor(1),
        )
        .await
        .unwrap();
    let single = publish_range(&client, "single", 0..80).await;

    // A node other than the first, holding replicas, leaves; its replicas go elsewhere.
    let leaving = created
        .partitions
        .iter()
        .flat_map(|p| p.replicas.iter().copied())
        .find(|&id| id != 1)
        .unwrap();
    let (ok, stdout, stderr) = cluster_cli(
        &processes[0],
        &dir.path().join("node-1"),
        &["decommission", &leaving.to_string()],
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("replicas moved"), "{stdout}");
    let seen = wait_until(processes[0].addr(), &tls, "the new replica sets", |m| {
        m.topics.iter().any(|t| t.name == "moving")
    })
    .await;
    let topic = seen.topics.iter().find(|t| t.name == "moving").unwrap();
    for partition in &topic.partitions {
        assert_eq!(partition.replicas.len(), 3, "{topic:?}");
        assert!(!partition.replicas.contains(&leaving), "{topic:?}");
    }

    // It goes for good: every acknowledged event is still there, through every other node.
    let index = usize::try_from(leaving - 1).unwrap();
    processes[index].kill();
    let _ = client.close().await;
    for (i, process) in processes.iter().enumerate().filter(|(i, _)| *i != index) {
        let reader = sidestream::Client::builder("cluster-test")
            .sidecar(process.addr().to_string())
            .tls_dir(&tls)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("node {}: {e}", i + 1));
        read_back(&reader, "moving", &acknowledged).await;
        read_back(&reader, "single", &single).await;
        let _ = reader.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_refused_its_old_place_and_a_replacement_takes_its_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let (mut members, tls) = three_members(dir.path()).await;
    let client = connect(&members[0], &tls).await;
    client
        .create_topic("wiped", sidestream::TopicSettings::new().partitions(2))
        .await
        .unwrap();
    let mut acknowledged = publish_range(&client, "wiped", 0..200).await;

    // Node 3 loses its disk; the other two go on.
    let mut wiped = members.pop().unwrap();
    assert_eq!(wiped.id, 3);
    wiped.process.kill();
    std::fs::remove_dir_all(&wiped.data_dir).unwrap();
    acknowledged.extend(publish_range(&client, "wiped", 200..400).await);

    // Started again under its id, it is refused before it takes part in anything: with no log
    // and no vote of its own, it could elect a leader that lacks acknowledged events.
    let seed_peer = members[0].process.peer_addr().unwrap().to_string();
    let rejoin = member_args(3, "127.0.0.1:0", Some(&seed_peer), Some(&tls));
    let rejoin: Vec<&str> = rejoin.iter().map(String::as_str).collect();
    let (status, log) = sidestream_tests::run_sidecar_to_exit(&wiped.data_dir, &rejoin, PATIENCE)
        .expect("a wiped member stops by itself");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("node 3 is a member of the cluster, but this sidecar has no cluster state")
            && log.contains("sidestream cluster decommission 3"),
        "{log}"
    );

    // The wiped node is taken out for good while no other node could take its replicas:
    // each set shrinks to the two nodes left, which go on.
    let (ok, stdout, stderr) = cluster_cli(
        &members[0].process,
        &dir.path().join("node-1"),
        &["decommission", "3"],
    );
    assert!(ok, "{stdout}{stderr}");
    wait_until(
        members[0].process.addr(),
        &tls,
        "sets of nodes 1 and 2",
        sets_are("wiped", &[1, 2]),
    )
    .await;
    acknowledged.extend(publish_range(&client, "wiped", 400..450).await);

    // A replacement joins under a new id: every set that shrank takes it in, and it catches
    // up from the others.
    let replacement_dir = dir.path().join("node-4");
    let args = member_args(4, "127.0.0.1:0", Some(&seed_peer), Some(&tls));
    let replacement = Member {
        id: 4,
        process: start(&replacement_dir, loopback(), &args),
        data_dir: replacement_dir,
    };
    for member in &members {
        wait_until(
            member.process.addr(),
            &tls,
            "sets of nodes 1, 2 and 4, in sync",
            sets_are("wiped", &[1, 2, 4]),
        )
        .await;
    }
    acknowledged.extend(publish_range(&client, "wiped", 450..500).await);
    let _ = client.close().await;

    // Every acknowledged event, through every member, the replacement included.
    members.push(replacement);
    for member in &members {
        let reader = connect(member, &tls).await;
        read_back(&reader, "wiped", &acknowledged).await;
        let _ = reader.close().await;
    }

    // The replacement votes: with node 2 gone, nodes 1 and 4 keep the partitions.
    tokio::task::block_in_place(|| members[1].process.kill());
    let writer = connect(&members[0], &tls).await;
    acknowledged.extend(publish_range(&writer, "wiped", 500..520).await);
    let _ = writer.close().await;
    let reader = connect(&members[2], &tls).await;
    read_back(&reader, "wiped", &acknowledged).await;
    let _ = reader.close().await;

    // The removed id is never taken in again.
    let (status, log) = sidestream_tests::run_sidecar_to_exit(&wiped.data_dir, &rejoin, PATIENCE)
        .expect("a removed node stops by itself");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("node id 3 was removed from the cluster for good"),
        "{log}"
    );
}

/// Whether every partition of `topic` has the replicas `wanted` (in any order), all in sync
/// (or none known to be).
fn sets_are(topic: &'static str, wanted: &'static [u64]) -> impl Fn(&MetadataResult) -> bool {
    move |m: &MetadataResult| {
        m.topics.iter().any(|t| {
            t.name == topic
                && t.partitions.iter().all(|p| {
                    let mut set = p.replicas.clone();
                    set.sort_unstable();
                    set == wanted
                        && (p.in_sync_replicas.is_empty()
                            || p.in_sync_replicas.len() == wanted.len())
                })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_other_replica_is_gone_for_good_goes_on_from_the_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let (mut members, tls) = three_members(dir.path()).await;
    let client = connect(&members[0], &tls).await;
    let settings = sidestream::TopicSettings::new()
        .partitions(3)
        .replication_factor(2);
    client.create_topic("halved", settings).await.unwrap();
    let mut acknowledged = publish_range(&client, "halved", 0..300).await;

    // Node 3 is lost for good. Of each two-replica group it was in, the replica left cannot
    // elect a leader on its own: a majority of two is two.
    let mut lost = members.pop().unwrap();
    assert_eq!(lost.id, 3);
    tokio::task::block_in_place(|| lost.process.kill());

    // Taken out of the cluster, its replicas move to the nodes left: each replica left
    // restarts its group as the only voter (every acknowledged event was on it), and takes
    // its new partner in.
    let (ok, stdout, stderr) = cluster_cli(
        &members[0].process,
        &dir.path().join("node-1"),
        &["decommission", "3"],
    );
    assert!(ok, "{stdout}{stderr}");
    for member in &members {
        wait_until(
            member.process.addr(),
            &tls,
            "sets of nodes 1 and 2, in sync",
            sets_are("halved", &[1, 2]),
        )
        .await;
    }
    acknowledged.extend(publish_range(&client, "halved", 300..400).await);
    let _ = client.close().await;
    for member in &members {
        let reader = connect(member, &tls).await;
        read_back(&reader, "halved", &acknowledged).await;
        let _ = reader.close().await;
    }

    // Back with its data, the removed node is refused and stops; the others go on.
    let seed_peer = members[0].process.peer_addr().unwrap().to_string();
    let rejoin = member_args(3, "127.0.0.1:0", Some(&seed_peer), Some(&tls));
    let rejoin: Vec<&str> = rejoin.iter().map(String::as_str).collect();
    let (status, log) = sidestream_tests::run_sidecar_to_exit(&lost.data_dir, &rejoin, PATIENCE)
        .expect("a removed node stops by itself");
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("node id 3 was removed from the cluster for good"),
        "{log}"
    );
    let writer = connect(&members[1], &tls).await;
    acknowledged.extend(publish_range(&writer, "halved", 400..450).await);
    read_back(&writer, "halved", &acknowledged).await;
    let _ = writer.close().await;
}

/// Takes `count` deliveries of `subscription`, acknowledging each; their values.
async fn take_acked(
    subscription: &mut sidestream::Subscription<sidestream::RawEvent>,
    count: usize,
) -> Vec<String> {
    let mut values = Vec::new();
    while values.len() < count {
        let delivery = tokio::time::timeout(PATIENCE, subscription.next())
            .await
            .expect("a delivery in time")
            .expect("the subscription goes on")
            .expect("a readable delivery");
        values.push(String::from_utf8_lossy(&delivery.event.value).into_owned());
        delivery.ack().await.expect("acknowledged");
    }
    values
}

/// The sum over partitions of `group`'s committed offsets in `topic`, read through `client`:
/// how many events the group has consumed when every partition starts at offset 0.
async fn committed_total(client: &sidestream::Client, group: &str, topic: &str) -> u64 {
    client
        .committed_offsets(group, topic)
        .await
        .expect("committed offsets are readable through any member")
        .iter()
        .map(|c| c.offset)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_are_replicated_with_their_partitions_and_a_replaced_member_commits_nothing()
{
    let dir = tempfile::tempdir().unwrap();
    let (mut members, tls) = three_members(dir.path()).await;
    let admin = connect(&members[0], &tls).await;
    admin
        .create_topic("payments", sidestream::TopicSettings::new().partitions(2))
        .await
        .expect("a replicated topic");
    let published = publish_range(&admin, "payments", 0..40).await;

    // A member through node 2 consumes 10 events and commits them; any member reads that.
    let node2 = connect(&members[1], &tls).await;
    let mut first = node2
        .subscribe_raw("payments")
        .group("billing")
        .from(sidestream::StartAt::Earliest)
        .start()
        .await
        .expect("a group subscription of a replicated topic");
    let mut consumed = take_acked(&mut first, 10).await;
    first.commit().await.expect("committed");
    assert_eq!(committed_total(&admin, "billing", "payments").await, 10);

    // A second member joins through node 3: it starts where the first committed, and the
    // partitions refuse the first member's later commits (its sidecar then ends it).
    let node3 = connect(&members[2], &tls).await;
    let mut second = node3
        .subscribe_raw("payments")
        .group("billing")
        .from(sidestream::StartAt::Earliest)
        .start()
        .await
        .expect("a second member");
    let starts: u64 = second.assignment().iter().map(|p| p.next_offset).sum();
    assert_eq!(starts, 10, "{:?}", second.assignment());
    let late = take_acked(&mut first, 5).await;
    let _ = first.commit().await;
    assert_eq!(
        committed_total(&admin, "billing", "payments").await,
        10,
        "a replaced member's commit was refused"
    );
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match first.next().await {
                Some(Ok(_)) => {}
                Some(Err(error)) => break Some(error),
                None => break None,
            }
        }
    })
    .await
    .expect("the replaced member ends in time");
    assert!(
        ended
            .as_ref()
            .is_some_and(|e| e.code() == Some(sidestream_proto::v1::ErrorCode::StaleGeneration)),
        "the replaced member ends as stale: {ended:?}"
    );
    assert!(late.iter().all(|v| v.starts_with("event-")));
    consumed.extend(take_acked(&mut second, 10).await);
    second.close().await.expect("committed on close");
    assert_eq!(committed_total(&admin, "billing", "payments").await, 20);
    let _ = node2.close().await;
    let _ = node3.close().await;

    // Partition 0's leader dies: the committed offsets stay, and the group resumes after them
    // through a surviving member, every event consumed once.
    let leader = wait_until(
        members[0].process.addr(),
        &tls,
        "a leader of payments/0",
        |m| {
            m.topics
                .iter()
                .any(|t| t.name == "payments" && t.partitions[0].leader.is_some_and(|l| l != 0))
        },
    )
    .await
    .topics
    .iter()
    .find(|t| t.name == "payments")
    .and_then(|t| t.partitions[0].leader)
    .unwrap();
    let _ = admin.close().await;
    let index = members.iter().position(|m| m.id == leader).unwrap();
    let mut dead = members.remove(index);
    dead.process.kill();
    let survivor = connect(&members[0], &tls).await;
    assert_eq!(committed_total(&survivor, "billing", "payments").await, 20);
    let mut third = survivor
        .subscribe_raw("payments")
        .group("billing")
        .from(sidestream::StartAt::Earliest)
        .start()
        .await
        .expect("a member after the leader's death");
    consumed.extend(take_acked(&mut third, 20).await);
    third.close().await.expect("committed on close");
    assert_eq!(committed_total(&survivor, "billing", "payments").await, 40);
    let mut expected: Vec<String> = published.into_iter().map(|(_, _, v)| v).collect();
    expected.sort();
    consumed.sort();
    assert_eq!(consumed, expected, "every event consumed once, in commits");
    let _ = survivor.close().await;
}

/// Partition 0 of `topic` as the member at `member` describes its own replica: (log start
/// offset, high watermark), once it answers.
async fn replica_offsets(member: &Member, tls: &Path, topic: &str) -> Option<(u64, u64)> {
    let client = sidestream::Client::builder("cluster-test")
        .sidecar(member.process.addr().to_string())
        .tls_dir(tls)
        .connect()
        .await
        .ok()?;
    let described = client.describe_topic(topic).await.ok();
    let _ = client.close().await;
    let partition = described?.partitions.into_iter().next()?;
    Some((partition.log_start_offset, partition.high_watermark))
}

/// Asks `member` until its replica's (log start, high watermark) pass `check` (at most
/// [`PATIENCE`]); returns them.
async fn wait_for_offsets(
    member: &Member,
    tls: &Path,
    topic: &str,
    what: &str,
    check: impl Fn(u64, u64) -> bool,
) -> (u64, u64) {
    let deadline = Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        if let Some((start, high)) = replica_offsets(member, tls, topic).await {
            if check(start, high) {
                return (start, high);
            }
            last = Some((start, high));
        }
        assert!(
            Instant::now() < deadline,
            "node {}: {what}: never (last seen log start and high watermark {last:?})",
            member.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `member`'s log start once its replica holds `high` and retention has let go of all it
/// will: the same start in two reads a second apart (retention checks every 300 ms in
/// [`retention_trims_every_replica_and_a_replica_back_from_a_stop_gets_the_leaders_batches`]),
/// so that what a test then expects is not trimmed while it reads.
async fn settled_log_start(member: &Member, tls: &Path, topic: &str, high: u64) -> u64 {
    let holds = |_, h| h == high;
    let (mut start, _) = wait_for_offsets(member, tls, topic, "holds the batches", holds).await;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (now, _) = wait_for_offsets(member, tls, topic, "holds the batches", holds).await;
        if now == start {
            return start;
        }
        start = now;
    }
    panic!("node {}: the log start of {topic} kept moving", member.id);
}

/// Retention of a replicated topic goes through openraft on every replica; a replica that was
/// down meanwhile comes back behind its leader's log start, and gets the batches it lacks with
/// a snapshot: the same log start, the same events at the same offsets, and it takes its
/// share of the group's work when another member dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_every_replica_and_a_replica_back_from_a_stop_gets_the_leaders_batches() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--segment-bytes", "4096", "--retention-check-ms", "300"];
    let (mut members, tls) = three_members_with(dir.path(), &extra).await;
    let admin = connect(&members[0], &tls).await;
    admin
        .create_topic(
            "trimmed",
            sidestream::TopicSettings::new()
                .partitions(1)
                .retention_bytes(8 << 10),
        )
        .await
        .expect("a replicated topic with a size limit");
    let mut acknowledged = publish_range(&admin, "trimmed", 0..50).await;

    // Node 3 stops; the other two take on more than the limit, and let the oldest go. (In
    // rounds: one call's events may go in one batch, and retention deletes whole segments.)
    tokio::task::block_in_place(|| members[2].process.kill());
    for round in 1..12 {
        acknowledged.extend(publish_range(&admin, "trimmed", round * 50..(round + 1) * 50).await);
    }
    let (start, high) = wait_for_offsets(&members[0], &tls, "trimmed", "trims its log", |s, h| {
        s > 50 && h == 600
    })
    .await;
    wait_for_offsets(&members[1], &tls, "trimmed", "trims its log", |s, _| s > 50).await;

    // Back, node 3 is behind both: a snapshot brings it the leader's batches.
    tokio::task::block_in_place(|| members[2].process.restart());
    wait_for_offsets(&members[2], &tls, "trimmed", "catches up", |s, h| {
        s >= start && h == high
    })
    .await;
    let restored_start = settled_log_start(&members[2], &tls, "trimmed", high).await;
    let still_held: Vec<_> = acknowledged
        .iter()
        .filter(|(_, offset, _)| *offset >= restored_start)
        .cloned()
        .collect();
    assert!(still_held.len() >= 50, "{restored_start}");
    let node3 = connect(&members[2], &tls).await;
    read_back(&node3, "trimmed", &still_held).await;

    // With node 1 gone, nodes 2 and 3 keep the partition: node 3 serves what it holds.
    tokio::task::block_in_place(|| members[0].process.kill());
    let node2 = connect(&members[1], &tls).await;
    let more = publish_range(&node2, "trimmed", 600..620).await;
    // The 20 may take node 3's log over the limit again: it lets a segment go meanwhile.
    let last_start = settled_log_start(&members[2], &tls, "trimmed", 620).await;
    let expected: Vec<_> = still_held
        .into_iter()
        .chain(more)
        .filter(|(_, offset, _)| *offset >= last_start)
        .collect();
    read_back(&node3, "trimmed", &expected).await;
    for client in [admin, node2, node3] {
        let _ = client.close().await;
    }
}
