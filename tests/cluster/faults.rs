//! Seeded fault schedules against replicated topics, with a checker in the spirit of Jepsen's
//! queue workloads.
//!
//! Each test runs many rounds on one cluster of sidecar processes whose peer ports sit behind
//! [`FaultProxy`](sidestream_tests::FaultProxy)s. A round creates a topic, has one producer per
//! live member publish keyed events through that member while a nemesis injects one fault
//! (chosen and timed by the seed), heals everything, reads the topic back through every
//! member, and checks the history:
//!
//! - no acknowledged event is lost: each is read back at the partition and offset of its
//!   receipt, through every member;
//! - no partition's order changes: a producer's acknowledged events of one partition have
//!   offsets in the order it published them, and a subscription sees offsets only grow;
//! - nothing is delivered that was never published, and nothing twice (producers are
//!   idempotent);
//! - every member reads the same event at the same offset;
//! - committed offsets never go back: a group consumes the topic through one live member
//!   during the burst, committing as it goes, and every read of its committed offsets (its
//!   own after each commit, then one through member 1 after the round) finds each partition's
//!   offset at or past the one read before; it delivers nothing that was never published.
//!
//! `SIDESTREAM_SEED` replays a run; `SIDESTREAM_FAULT_ROUNDS` sets the rounds per test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use super::{Member, PATIENCE, ProxiedCluster, metadata, seed, wait_until};

/// Events each producer publishes in a round.
const EVENTS: u32 = 40;

/// Pause between two publishes of a producer, so that a round's burst spans the fault.
const PUBLISH_GAP: Duration = Duration::from_millis(25);

/// The faults a round may inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL the leader of partition 0 during the burst; restart it a moment later.
    KillLeader,
    /// SIGKILL a follower of partition 0; restart it after the burst (it catches up).
    KillFollower,
    /// Cut the leader of partition 0 off from every other member; heal after the burst.
    IsolateLeader,
    /// Restart every member in turn while publishing.
    RollingRestart,
    /// SIGKILL a minority for the whole burst: publishing through the others must succeed.
    MinorityLoss,
}

const FAULTS: [Fault; 5] = [
    Fault::KillLeader,
    Fault::KillFollower,
    Fault::IsolateLeader,
    Fault::RollingRestart,
    Fault::MinorityLoss,
];

/// `SplitMix64`: the schedule's random choices, replayable from the seed.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from))
    }
}

/// One publish: who sent it, what, and what came of it.
#[derive(Debug, Clone)]
struct Publish {
    producer: usize,
    value: String,
    /// The receipt's partition and offset, or why there was none (the event may or may not
    /// have been written).
    outcome: Result<(u32, u64), String>,
}

/// What one member's subscription delivered: (partition, offset) → value, in delivery order.
type Reads = Vec<((u32, u64), String)>;

/// The group a round's consumer is a member of.
const GROUP: &str = "fault-group";

/// How often the round's group consumer commits and reads its committed offsets back.
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// Longest the round's group consumer takes for its last commit and to close, once stopped.
const GROUP_STOP_WAIT: Duration = Duration::from_secs(10);

/// What the round's group consumer saw: the group's committed offsets at each read, in the
/// order read, and the values it was delivered.
#[derive(Debug, Default)]
struct GroupHistory {
    committed: Vec<BTreeMap<u32, u64>>,
    delivered: Vec<String>,
}

/// Checks a group's history: each partition's committed offset never goes back from one
/// read to the next, and nothing delivered was never published.
fn check_group(published: &[Publish], history: &GroupHistory) -> Result<(), String> {
    let sent: BTreeSet<&str> = published.iter().map(|p| p.value.as_str()).collect();
    if let Some(phantom) = history
        .delivered
        .iter()
        .find(|v| !sent.contains(v.as_str()))
    {
        return Err(format!(
            "the group was delivered {phantom:?}, never published"
        ));
    }
    let mut highest: BTreeMap<u32, u64> = BTreeMap::new();
    for (read, offsets) in history.committed.iter().enumerate() {
        for (&partition, &offset) in &highest {
            match offsets.get(&partition) {
                Some(&now) if now >= offset => {}
                now => {
                    return Err(format!(
                        "the group's committed offset of partition {partition} went from {offset} to {now:?} (read {read})"
                    ));
                }
            }
        }
        highest.clone_from(offsets);
    }
    Ok(())
}

/// Checks a round's history; the first violation found, named.
fn check(published: &[Publish], reads: &BTreeMap<u64, Reads>) -> Result<(), String> {
    let sent: BTreeSet<&str> = published.iter().map(|p| p.value.as_str()).collect();
    let mut agreed: BTreeMap<(u32, u64), &str> = BTreeMap::new();
    for (member, delivered) in reads {
        let mut last: BTreeMap<u32, u64> = BTreeMap::new();
        let mut values = BTreeSet::new();
        for ((partition, offset), value) in delivered {
            if !sent.contains(value.as_str()) {
                return Err(format!(
                    "member {member} delivered {value:?} at {partition}/{offset}, never published"
                ));
            }
            if !values.insert(value.as_str()) {
                return Err(format!("member {member} delivered {value:?} twice"));
            }
            if let Some(previous) = last.insert(*partition, *offset)
                && *offset <= previous
            {
                return Err(format!(
                    "member {member} delivered partition {partition} offset {offset} after {previous}"
                ));
            }
            if let Some(other) = agreed.insert((*partition, *offset), value)
                && other != value
            {
                return Err(format!(
                    "partition {partition} offset {offset} holds {value:?} on member {member} but {other:?} elsewhere"
                ));
            }
        }
        let at: BTreeMap<(u32, u64), &str> = delivered
            .iter()
            .map(|(at, value)| (*at, value.as_str()))
            .collect();
        for publish in published {
            if let Ok(at_offset) = publish.outcome
                && at.get(&at_offset) != Some(&publish.value.as_str())
            {
                return Err(format!(
                    "acknowledged {:?} at {}/{} is not there through member {member} (found {:?})",
                    publish.value,
                    at_offset.0,
                    at_offset.1,
                    at.get(&at_offset)
                ));
            }
        }
    }
    // Acknowledged or not, what a producer published to a partition is in its order there.
    for (member, delivered) in reads {
        let mut last: BTreeMap<(String, u32), (u64, u64)> = BTreeMap::new();
        for ((partition, offset), value) in delivered {
            let Some((producer, index)) = value.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<u64>() else {
                continue;
            };
            let key = (producer.to_owned(), *partition);
            if let Some((earlier_index, earlier_offset)) = last.insert(key, (index, *offset))
                && index <= earlier_index
            {
                return Err(format!(
                    "member {member}: {value:?} at {partition}/{offset} follows event {earlier_index} of the same producer at offset {earlier_offset}"
                ));
            }
        }
    }
    let mut by_producer: BTreeMap<(usize, u32), u64> = BTreeMap::new();
    for publish in published {
        if let Ok((partition, offset)) = publish.outcome
            && let Some(previous) = by_producer.insert((publish.producer, partition), offset)
            && offset <= previous
        {
            return Err(format!(
                "producer {} had {:?} acknowledged at {partition}/{offset}, before an earlier event's {previous}",
                publish.producer, publish.value
            ));
        }
    }
    Ok(())
}

/// A member's client for the workload: a short request timeout, so a round's unanswered
/// publishes end soon after the fault.
async fn producer_client(member: &Member, tls: &std::path::Path) -> Option<sidestream::Client> {
    // A SIGKILLed sidecar cannot reset its connections: give a silent one up after 2 s.
    let mut tuning = sidestream::transport::QuicTuning::default();
    tuning.keep_alive_interval = Some(Duration::from_millis(500));
    tuning.idle_timeout = Some(Duration::from_secs(2));
    sidestream::Client::builder("fault-test")
        .sidecar(member.process.addr().to_string())
        .tls_dir(tls)
        .quic_tuning(tuning)
        .request_timeout(Duration::from_secs(8))
        .connect_timeout(Duration::from_secs(2))
        .linger(Duration::from_millis(2))
        .connect()
        .await
        .ok()
}

/// Publishes this round's events of producer `producer` through `client`.
async fn produce(
    client: sidestream::Client,
    topic: String,
    round: u32,
    producer: usize,
) -> Vec<Publish> {
    let mut pending = Vec::new();
    for i in 0..EVENTS {
        let value = format!("r{round}-p{producer}-{i}");
        let mut event = sidestream::RawEvent::new(value.clone().into_bytes());
        event.key = Some(format!("k{}", i % 4).into_bytes().into());
        let receipt = client
            .publish_raw_nowait(&topic, event, sidestream::Acks::All)
            .await;
        pending.push((value, receipt));
        tokio::time::sleep(PUBLISH_GAP).await;
    }
    let mut published = Vec::new();
    for (value, receipt) in pending {
        let outcome = match receipt {
            Ok(receipt) => match receipt.await {
                Ok(receipt) => receipt
                    .offset
                    .map(|offset| (receipt.partition, offset))
                    .ok_or_else(|| "acknowledged without an offset".to_owned()),
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        published.push(Publish {
            producer,
            value,
            outcome,
        });
    }
    let _ = client.close().await;
    published
}

/// Consumes `topic` as a member of [`GROUP`] through `client` until `stop`, acknowledging
/// every delivery, committing and reading the committed offsets back every
/// [`COMMIT_EVERY`]; subscribes again whenever the subscription ends (the fault may end it).
async fn consume_group(
    client: sidestream::Client,
    topic: String,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> GroupHistory {
    let mut history = GroupHistory::default();
    let mut subscription = None;
    let mut next_commit = tokio::time::Instant::now() + COMMIT_EVERY;
    loop {
        let Some(current) = subscription.as_mut() else {
            let started = client
                .subscribe_raw(&topic)
                .group(GROUP)
                .from(sidestream::StartAt::Earliest)
                .start();
            tokio::select! {
                () = stopped(&mut stop) => break,
                started = started => match started {
                    Ok(started) => subscription = Some(started),
                    Err(_) => tokio::time::sleep(COMMIT_EVERY).await,
                },
            }
            continue;
        };
        tokio::select! {
            () = stopped(&mut stop) => break,
            next = current.next() => match next {
                Some(Ok(delivery)) => {
                    history
                        .delivered
                        .push(String::from_utf8_lossy(&delivery.event.value).into_owned());
                    let _ = delivery.ack().await;
                }
                // Ended (the fault ended it): subscribe again.
                Some(Err(_)) | None => subscription = None,
            },
            () = tokio::time::sleep_until(next_commit) => {
                next_commit = tokio::time::Instant::now() + COMMIT_EVERY;
                let read = async {
                    current.commit().await.ok()?;
                    client.committed_offsets(GROUP, &topic).await.ok()
                };
                tokio::select! {
                    () = stopped(&mut stop) => break,
                    Some(offsets) = read => history
                        .committed
                        .push(offsets.iter().map(|c| (c.partition, c.offset)).collect()),
                    else => {}
                }
            }
        }
    }
    // A member that cannot be reached now must not hold the round up: what it could not
    // commit stays uncommitted, which the check allows.
    if let Some(subscription) = subscription {
        let _ = tokio::time::timeout(GROUP_STOP_WAIT, subscription.close()).await;
    }
    let _ = tokio::time::timeout(GROUP_STOP_WAIT, client.close()).await;
    history
}

/// Resolves once `stop` says so, or its sender is gone (the round ended early).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Reads `topic` from the start through `member` until every acknowledged event came back,
/// then a little longer for anything else; the deliveries.
async fn read_all(
    member: &Member,
    tls: &std::path::Path,
    topic: &str,
    published: &[Publish],
) -> Result<Reads, String> {
    let client = sidestream::Client::builder("fault-test-reader")
        .sidecar(member.process.addr().to_string())
        .tls_dir(tls)
        .connect()
        .await
        .map_err(|e| format!("member {}: {e}", member.id))?;
    let mut subscription = client
        .subscribe_raw(topic)
        .from(sidestream::StartAt::Earliest)
        .start()
        .await
        .map_err(|e| format!("member {}: {e}", member.id))?;
    let mut wanted: BTreeSet<(u32, u64)> = published
        .iter()
        .filter_map(|p| p.outcome.clone().ok())
        .collect();
    let mut reads = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let drain = Duration::from_millis(500);
    // Nothing acknowledged: whatever was written (it may be) comes within the drain.
    let mut drain_until = wanted
        .is_empty()
        .then(|| tokio::time::Instant::now() + drain);
    loop {
        let until = drain_until.unwrap_or(deadline);
        let next = tokio::time::timeout_at(until, subscription.next()).await;
        let delivery = match next {
            Err(_) if drain_until.is_some() => break,
            Err(_) => {
                return Err(format!(
                    "member {}: {} acknowledged events never came back, e.g. {:?}",
                    member.id,
                    wanted.len(),
                    wanted.iter().next()
                ));
            }
            Ok(None) => return Err(format!("member {}: the subscription ended", member.id)),
            Ok(Some(Err(e))) => return Err(format!("member {}: {e}", member.id)),
            Ok(Some(Ok(delivery))) => delivery,
        };
        let at = (delivery.partition, delivery.offset);
        wanted.remove(&at);
        reads.push((
            at,
            String::from_utf8_lossy(&delivery.event.value).into_owned(),
        ));
        if wanted.is_empty() && drain_until.is_none() {
            drain_until = Some(tokio::time::Instant::now() + drain);
        }
    }
    let _ = client.close().await;
    Ok(reads)
}

/// The node leading partition 0 of `topic` and its replicas, as a replica's member sees them
/// (a member without a replica does not know the leader).
async fn partition_zero(cluster: &ProxiedCluster, topic: &str) -> (u64, Vec<u64>) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        for member in &cluster.members {
            let Some(seen) = metadata(member.process.addr(), &cluster.tls).await else {
                continue;
            };
            let partition = seen
                .topics
                .iter()
                .find(|t| t.name == topic)
                .and_then(|t| t.partitions.first().cloned());
            if let Some(partition) = partition
                && let Some(leader) = partition.leader.filter(|&l| l != 0)
            {
                return (leader, partition.replicas);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no member names a leader of {topic}/0"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn index_of(cluster: &ProxiedCluster, id: u64) -> usize {
    cluster
        .members
        .iter()
        .position(|m| m.id == id)
        .expect("a member of the cluster")
}

/// Kills member `index` (SIGKILL).
fn kill(cluster: &mut ProxiedCluster, index: usize) {
    tokio::task::block_in_place(|| {
        cluster.members[index].process.kill();
    });
}

/// Starts member `index` again from its data, on its addresses.
fn restart(cluster: &mut ProxiedCluster, index: usize) {
    tokio::task::block_in_place(|| cluster.members[index].process.restart());
}

/// Runs `rounds` seeded rounds on a cluster of `size` members; panics naming the first
/// violation and the seed.
async fn run_rounds(size: u64, default_rounds: u32) {
    let seed = seed();
    let rounds = std::env::var("SIDESTREAM_FAULT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default_rounds);
    let mut schedule = Schedule(seed);
    let only = pinned_fault();
    let mut cluster = ProxiedCluster::start_sized(size, seed, |_| {});
    let tls = cluster.tls.clone();
    for member in &cluster.members {
        // Three voters of three, five of five.
        wait_until(member.process.addr(), &tls, "every node a voter", |m| {
            m.nodes.len() == cluster.members.len()
                && m.nodes.iter().all(|n| n.voter)
                && m.metadata_leader != 0
        })
        .await;
    }
    let mut checked = 0_usize;
    for round in 0..rounds {
        let started = std::time::Instant::now();
        let drawn = FAULTS[usize::try_from(schedule.below(FAULTS.len() as u64)).unwrap_or(0)];
        let fault = only.unwrap_or(drawn);
        let topic = format!("round-{round}");
        // Five members: replica sets of three (some members relay) or of all five.
        let replication = if size >= 5 && schedule.below(2) == 0 {
            5
        } else {
            3
        };
        create_topic(&cluster, &topic, replication).await;
        let (leader, replicas) = partition_zero(&cluster, &topic).await;

        // The members down for the whole burst (a minority), the rest publish.
        let minority = minority(fault, replication, cluster.members.len(), &mut schedule);
        for &index in &minority {
            kill(&mut cluster, index);
        }
        let mut producers = tokio::task::JoinSet::new();
        let mut survivors = BTreeSet::new();
        for (index, member) in cluster.members.iter().enumerate() {
            if minority.contains(&index) {
                continue;
            }
            if let Some(client) = producer_client(member, &tls).await {
                survivors.insert(index);
                producers.spawn(produce(client, topic.clone(), round, index));
            }
        }
        let (stop_group, group) = start_group(&cluster, &survivors, &topic, &mut schedule).await;

        // The fault, at a random moment of the burst.
        tokio::time::sleep(schedule.millis(100, 600)).await;
        let mut down = minority.clone();
        down.extend(
            inject(
                &mut cluster,
                &mut schedule,
                &topic,
                fault,
                leader,
                &replicas,
            )
            .await,
        );
        let mut published = Vec::new();
        while let Some(done) = producers.join_next().await {
            published.extend(done.expect("a producer task"));
        }
        if fault == Fault::MinorityLoss {
            // A majority stays: every publish through it is acknowledged.
            if let Some(failed) = published.iter().find(|p| p.outcome.is_err()) {
                panic!(
                    "REPRODUCE: SIDESTREAM_SEED={seed}: round {round} ({fault:?}, members {minority:?} down): {failed:?} failed"
                );
            }
        }
        for index in down {
            restart(&mut cluster, index);
        }
        let group = finish_group(stop_group, group, &cluster, &topic).await;
        let checked_round = read_and_check(&cluster, &topic, &published)
            .await
            .and_then(|()| check_group(&published, group.as_ref().map_err(Clone::clone)?));
        if let Err(violation) = checked_round {
            let logs = warnings(&mut cluster);
            panic!(
                "REPRODUCE: SIDESTREAM_SEED={seed}: round {round} ({fault:?}): {violation}; unacknowledged: {:#?}\n{logs}",
                unacknowledged(&published)
            );
        }
        delete_topic(&cluster, &topic).await;
        checked += 1;
        let history = group.unwrap_or_default();
        report_round(round, fault, &published, &history, started.elapsed());
    }
    assert_eq!(checked, usize::try_from(rounds).unwrap_or(0));
}

/// The members a round keeps down for its whole burst: a minority of every replica set.
fn minority(fault: Fault, replication: u32, members: usize, schedule: &mut Schedule) -> Vec<usize> {
    if fault != Fault::MinorityLoss {
        return Vec::new();
    }
    // With sets of three, one member of five; with sets of five, any two (a minority of the
    // metadata group's five voters as well).
    let count = (usize::try_from(replication).unwrap_or(3) - 1) / 2;
    let mut left: Vec<usize> = (0..members).collect();
    (0..count.min(members))
        .map(|_| left.remove(usize::try_from(schedule.below(left.len() as u64)).unwrap_or(0)))
        .collect()
}

/// The fault `SIDESTREAM_FAULT` names (`IsolateLeader`, say), to run in every round.
fn pinned_fault() -> Option<Fault> {
    let name = std::env::var("SIDESTREAM_FAULT").ok()?;
    FAULTS.into_iter().find(|f| format!("{f:?}") == name)
}

/// A client of member 1 for creating and deleting the rounds' topics: patient, as a member
/// that has just restarted takes a while to catch up with the metadata.
async fn admin_client(cluster: &ProxiedCluster) -> sidestream::Client {
    sidestream::Client::builder("fault-test-admin")
        .sidecar(cluster.members[0].process.addr().to_string())
        .tls_dir(&cluster.tls)
        .request_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("member 1 takes clients")
}

/// Creates the round's topic (two partitions) through member 1.
async fn create_topic(cluster: &ProxiedCluster, topic: &str, replication: u32) {
    let admin = admin_client(cluster).await;
    let settings = sidestream::TopicSettings::new()
        .partitions(2)
        .replication_factor(replication);
    admin
        .create_topic(topic, settings)
        .await
        .unwrap_or_else(|e| panic!("cannot create {topic}: {e}"));
    let _ = admin.close().await;
}

/// Deletes the round's topic, so that the cluster does not grow by two Raft groups a round
/// (every group heartbeats on its own).
async fn delete_topic(cluster: &ProxiedCluster, topic: &str) {
    let admin = admin_client(cluster).await;
    admin
        .delete_topic(topic)
        .await
        .unwrap_or_else(|e| panic!("cannot delete {topic}: {e}"));
    let _ = admin.close().await;
}

/// The members' warnings and errors (their processes are stopped to collect the logs).
fn warnings(cluster: &mut ProxiedCluster) -> String {
    let mut text = String::new();
    for member in &mut cluster.members {
        let log = member.process.kill();
        let lines: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        let _ = writeln!(text, "--- member {} ---\n{}", member.id, tail.join("\n"));
    }
    text
}

/// The first few publishes without a receipt, and why.
fn unacknowledged(published: &[Publish]) -> Vec<String> {
    published
        .iter()
        .filter_map(|p| {
            p.outcome
                .as_ref()
                .err()
                .map(|e| format!("{}: {e}", p.value))
        })
        .take(10)
        .collect()
}

/// Injects `fault` around partition 0's `leader` and `replicas`; the members it left down.
async fn inject(
    cluster: &mut ProxiedCluster,
    schedule: &mut Schedule,
    topic: &str,
    fault: Fault,
    leader: u64,
    replicas: &[u64],
) -> Vec<usize> {
    let leader_index = index_of(cluster, leader);
    match fault {
        Fault::KillLeader => {
            kill(cluster, leader_index);
            tokio::time::sleep(schedule.millis(200, 1200)).await;
            restart(cluster, leader_index);
        }
        Fault::KillFollower => {
            let followers: Vec<u64> = replicas.iter().copied().filter(|&r| r != leader).collect();
            let pick = usize::try_from(schedule.below(followers.len() as u64)).unwrap_or(0);
            let index = index_of(cluster, followers[pick]);
            kill(cluster, index);
            return vec![index];
        }
        Fault::IsolateLeader => {
            cluster.isolate(leader_index);
            tokio::time::sleep(schedule.millis(500, 1500)).await;
            cluster.heal();
        }
        Fault::RollingRestart => {
            // As an operator would: the next member goes once this one serves the topic again.
            for index in 0..cluster.members.len() {
                restart(cluster, index);
                let member = &cluster.members[index];
                wait_until(
                    member.process.addr(),
                    &cluster.tls,
                    "the topic again",
                    |m| m.topics.iter().any(|t| t.name == topic),
                )
                .await;
                tokio::time::sleep(schedule.millis(50, 400)).await;
            }
        }
        Fault::MinorityLoss => {}
    }
    Vec::new()
}

/// Starts the round's group consumer through one of the `live` members (the schedule picks
/// it); the sender that stops it, and its task.
async fn start_group(
    cluster: &ProxiedCluster,
    live: &BTreeSet<usize>,
    topic: &str,
    schedule: &mut Schedule,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<GroupHistory>,
) {
    let live: Vec<usize> = live.iter().copied().collect();
    let pick = usize::try_from(schedule.below(live.len() as u64)).unwrap_or(0);
    let through = *live.get(pick).expect("a member took a producer's client");
    let client = producer_client(&cluster.members[through], &cluster.tls)
        .await
        .unwrap_or_else(|| panic!("member {through} takes no client"));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(consume_group(client, topic.to_owned(), stopped));
    (stop, task)
}

/// Stops the round's group consumer (at most [`GROUP_STOP_WAIT`] and a margin), and adds a
/// last read of the group's committed offsets, through member 1, to its history.
async fn finish_group(
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<GroupHistory>,
    cluster: &ProxiedCluster,
    topic: &str,
) -> Result<GroupHistory, String> {
    let _ = stop.send(true);
    let mut history = tokio::time::timeout(GROUP_STOP_WAIT * 3, task)
        .await
        .map_err(|_| "the group consumer did not stop in time".to_owned())?
        .map_err(|e| format!("the group consumer failed: {e}"))?;
    let admin = admin_client(cluster).await;
    let offsets = admin
        .committed_offsets(GROUP, topic)
        .await
        .map_err(|e| format!("the group's committed offsets of {topic} after the round: {e}"));
    let _ = admin.close().await;
    history
        .committed
        .push(offsets?.iter().map(|c| (c.partition, c.offset)).collect());
    Ok(history)
}

/// Reads the round's topic back through every member and checks the history.
async fn read_and_check(
    cluster: &ProxiedCluster,
    topic: &str,
    published: &[Publish],
) -> Result<(), String> {
    let mut reads = BTreeMap::new();
    for member in &cluster.members {
        let delivered = read_all(member, &cluster.tls, topic, published).await?;
        reads.insert(member.id, delivered);
    }
    check(published, &reads)
}

/// Shows a round's result with the test's output.
fn report_round(
    round: u32,
    fault: Fault,
    published: &[Publish],
    group: &GroupHistory,
    took: Duration,
) {
    let acknowledged = published.iter().filter(|p| p.outcome.is_ok()).count();
    let published = published.len();
    let (delivered, reads) = (group.delivered.len(), group.committed.len());
    let last = group.committed.last();
    #[expect(
        clippy::print_stdout,
        reason = "each round's result is shown with the test's output"
    )]
    {
        println!(
            "round {round}: {fault:?}: {acknowledged} of {published} acknowledged; the group took {delivered}, read its offsets {reads} times, last {last:?}; all checked ({took:.1?})"
        );
    }
}

#[test]
fn the_checker_catches_lost_reordered_phantom_and_diverging_events() {
    let publish = |producer, value: &str, outcome| Publish {
        producer,
        value: value.to_owned(),
        outcome,
    };
    let published = vec![
        publish(0, "a", Ok((0, 0))),
        publish(0, "b", Ok((0, 1))),
        publish(1, "c", Err("timed out".to_owned())),
    ];
    let read = |items: &[((u32, u64), &str)]| -> Reads {
        items.iter().map(|(at, v)| (*at, (*v).to_owned())).collect()
    };
    let good = BTreeMap::from([(1, read(&[((0, 0), "a"), ((0, 1), "b"), ((0, 2), "c")]))]);
    assert_eq!(check(&published, &good), Ok(()));
    let lost = BTreeMap::from([(1, read(&[((0, 0), "a")]))]);
    assert!(
        check(&published, &lost)
            .unwrap_err()
            .contains("acknowledged \"b\"")
    );
    let phantom = BTreeMap::from([(1, read(&[((0, 0), "a"), ((0, 1), "b"), ((0, 2), "z")]))]);
    assert!(
        check(&published, &phantom)
            .unwrap_err()
            .contains("never published")
    );
    let twice = BTreeMap::from([(1, read(&[((0, 0), "a"), ((0, 1), "b"), ((0, 2), "b")]))]);
    assert!(check(&published, &twice).unwrap_err().contains("twice"));
    let backwards = BTreeMap::from([(1, read(&[((0, 1), "b"), ((0, 0), "a")]))]);
    assert!(check(&published, &backwards).unwrap_err().contains("after"));
    let diverging = BTreeMap::from([
        (1, read(&[((0, 0), "a"), ((0, 1), "b"), ((0, 2), "c")])),
        (2, read(&[((0, 0), "a"), ((0, 1), "b"), ((0, 2), "a")])),
    ]);
    assert!(check(&published, &diverging).is_err());
    let unacknowledged = vec![
        publish(0, "r0-p0-0", Err("timed out".to_owned())),
        publish(0, "r0-p0-1", Err("timed out".to_owned())),
    ];
    let swapped = BTreeMap::from([(1, read(&[((0, 0), "r0-p0-1"), ((0, 1), "r0-p0-0")]))]);
    assert!(
        check(&unacknowledged, &swapped)
            .unwrap_err()
            .contains("follows event 1")
    );
    let reordered = vec![publish(0, "a", Ok((0, 1))), publish(0, "b", Ok((0, 0)))];
    let both = BTreeMap::from([(1, read(&[((0, 0), "b"), ((0, 1), "a")]))]);
    assert!(
        check(&reordered, &both)
            .unwrap_err()
            .contains("before an earlier")
    );
}

#[test]
fn the_group_checker_catches_offsets_going_back_and_phantom_deliveries() {
    let published = vec![Publish {
        producer: 0,
        value: "a".to_owned(),
        outcome: Ok((0, 0)),
    }];
    let history = |committed: &[&[(u32, u64)]], delivered: &[&str]| GroupHistory {
        committed: committed
            .iter()
            .map(|read| read.iter().copied().collect())
            .collect(),
        delivered: delivered.iter().map(|v| (*v).to_owned()).collect(),
    };
    let good = history(
        &[&[], &[(0, 1)], &[(0, 1), (1, 3)], &[(0, 4), (1, 3)]],
        &["a"],
    );
    assert_eq!(check_group(&published, &good), Ok(()));
    let back = history(&[&[(0, 4)], &[(0, 2)]], &["a"]);
    assert!(
        check_group(&published, &back)
            .unwrap_err()
            .contains("went from 4")
    );
    let gone = history(&[&[(0, 4), (1, 1)], &[(0, 4)]], &[]);
    assert!(
        check_group(&published, &gone)
            .unwrap_err()
            .contains("to None")
    );
    let phantom = history(&[], &["z"]);
    assert!(
        check_group(&published, &phantom)
            .unwrap_err()
            .contains("never published")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sidecars_keep_every_acknowledged_event_through_seeded_faults() {
    run_rounds(3, 60).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sidecars_keep_every_acknowledged_event_through_seeded_faults() {
    run_rounds(5, 40).await;
}
