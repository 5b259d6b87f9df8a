//! Partition replication over the real peer port: three nodes in one process, each with its
//! own log on disk and its own QUIC endpoint on 127.0.0.1, joined by mutual TLS.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use openraft::BasicNode;
use sidestream::transport::QuicTuning;
use sidestream_log::{BatchHeader, LogConfig, RecordBatch};
use tempfile::TempDir;

use super::replica::Formation;
use super::type_config::{NodeId, PartitionWrite};
use super::{PartitionReplica, PeerNode};
use crate::tls::{DevCertificates, PeerTls};
use sidestream_proto::peer::v1::PeerErrorCode;

const TOPIC: &str = "orders";

struct Member {
    node: PeerNode,
    replica: PartitionReplica,
}

struct Cluster {
    dir: TempDir,
    tls: PeerTls,
    members: BTreeMap<NodeId, Member>,
}

impl Cluster {
    /// Three nodes holding partition 0 of `orders`, its group formed with all three as voters.
    async fn start() -> Self {
        Self::start_with(3).await
    }

    /// Nodes 1 to `count` holding partition 0 of `orders`, its group formed with all of them
    /// as voters.
    async fn start_with(count: NodeId) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let certificates = DevCertificates::ensure(dir.path(), &[]).unwrap();
        let tls = PeerTls::from_dev(&certificates).unwrap();
        let mut cluster = Self {
            dir,
            tls,
            members: BTreeMap::new(),
        };
        // As a sidecar does: every replica forms the group with the same three voters.
        let nodes: Vec<(NodeId, PeerNode)> = (1..=count)
            .map(|id| {
                (
                    id,
                    cluster.start_node(id, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
                )
            })
            .collect();
        let voters: BTreeMap<NodeId, BasicNode> = nodes
            .iter()
            .map(|(id, node)| (*id, BasicNode::new(node.local_addr().unwrap())))
            .collect();
        for (id, node) in nodes {
            let formation = Formation {
                voters: voters.clone(),
                preferred: 1,
            };
            let member = cluster.open_on(id, node, Some(formation)).await;
            cluster.members.insert(id, member);
        }
        cluster
    }

    fn start_node(&self, id: NodeId, addr: SocketAddr) -> PeerNode {
        PeerNode::start(id, addr, None, self.tls.clone(), &QuicTuning::default()).unwrap()
    }

    /// Starts node `id` on `addr` with its replica of the partition, from whatever its
    /// directory holds.
    async fn open(&self, id: NodeId, addr: SocketAddr) -> Member {
        let node = self.start_node(id, addr);
        self.open_on(id, node, None).await
    }

    async fn open_on(&self, id: NodeId, node: PeerNode, form: Option<Formation>) -> Member {
        let log_dir = self.dir.path().join(format!("node-{id}"));
        let replica = node
            .open_partition(TOPIC, 0, &log_dir, LogConfig::default(), form)
            .await
            .unwrap();
        Member { node, replica }
    }

    /// Stops node `id`; returns its peer address.
    async fn stop(&mut self, id: NodeId) -> SocketAddr {
        let member = self.members.remove(&id).unwrap();
        let addr = member.node.local_addr().unwrap();
        member.node.shutdown().await;
        addr
    }

    /// Waits until every member's high watermark is `offset`.
    async fn wait_high_watermark(&self, offset: u64) {
        for (id, member) in &self.members {
            let mut watermark = member.replica.high_watermark.clone();
            let reached = tokio::time::timeout(
                Duration::from_secs(10),
                watermark.wait_for(|&hwm| hwm >= offset),
            )
            .await
            .map(|found| found.map(|hwm| *hwm));
            assert!(
                reached.is_ok(),
                "node {id}: high watermark {} never reached {offset}",
                *watermark.borrow()
            );
            assert_eq!(*watermark.borrow(), offset, "node {id}");
        }
    }

    /// The leader all live members agree on, waiting up to `within` for one.
    async fn leader(&self, within: Duration) -> NodeId {
        let deadline = Instant::now() + within;
        loop {
            let seen: BTreeSet<Option<NodeId>> = self
                .members
                .values()
                .map(|m| m.replica.raft.metrics().borrow().current_leader)
                .collect();
            if let [Some(leader)] = seen.into_iter().collect::<Vec<_>>()[..]
                && self.members.contains_key(&leader)
            {
                return leader;
            }
            if Instant::now() >= deadline {
                let states: Vec<String> = self
                    .members
                    .iter()
                    .map(|(id, m)| {
                        let metrics = m.replica.raft.metrics().borrow().clone();
                        format!(
                            "node {id}: {:?}, leader {:?}, vote {}, last log {:?}",
                            metrics.state,
                            metrics.current_leader,
                            metrics.vote,
                            metrics.last_log_index
                        )
                    })
                    .collect();
                panic!("no leader within {within:?}:\n{}", states.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes `count` batches of two records each through the leader; returns each
    /// batch's base offset.
    async fn publish(&self, leader: NodeId, first: usize, count: usize) -> Vec<u64> {
        let raft = &self.members[&leader].replica.raft;
        let mut offsets = Vec::new();
        for i in first..first + count {
            let written = raft.client_write(batch(i)).await.unwrap();
            offsets.push(written.data.base_offset);
        }
        offsets
    }

    /// Waits until every member has applied through the leader's last log index.
    async fn wait_applied(&self, leader: NodeId) {
        let last = self.members[&leader]
            .replica
            .raft
            .metrics()
            .borrow()
            .last_log_index;
        let deadline = Instant::now() + Duration::from_secs(10);
        for (id, member) in &self.members {
            let mut metrics = member.replica.raft.metrics();
            loop {
                let applied = metrics.borrow().last_applied.map(|l| l.index);
                if applied >= last {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "node {id} applied only {applied:?} of {last:?}"
                );
                let _ = tokio::time::timeout(left, metrics.changed()).await;
            }
        }
    }

    /// Every member's data batches, which must be the same bytes on each.
    fn assert_identical_data(&self) -> Vec<Bytes> {
        let mut logs = self.members.iter().map(|(id, m)| (*id, data_batches(m)));
        let (first_id, first) = logs.next().unwrap();
        for (id, data) in logs {
            assert_eq!(
                data.len(),
                first.len(),
                "node {id} holds {} data batches, node {first_id} {}",
                data.len(),
                first.len()
            );
            for (i, (a, b)) in data.iter().zip(&first).enumerate() {
                assert!(
                    a == b,
                    "data batch {i} differs between node {id} and node {first_id}"
                );
            }
        }
        first
    }

    async fn shutdown(self) {
        for (_, member) in self.members {
            member.node.shutdown().await;
        }
    }
}

fn batch(i: usize) -> PartitionWrite {
    let records = (0..2).map(|r| {
        (
            Some(Bytes::from(format!("order-{i}"))),
            Some(Bytes::from(format!("event {i}.{r}"))),
            1_700_000_000_000 + i64::try_from(i).unwrap(),
        )
    });
    PartitionWrite::from(Bytes::from(
        RecordBatch::from_records(records).encode().unwrap(),
    ))
}

fn data_batches(member: &Member) -> Vec<Bytes> {
    member
        .replica
        .log
        .read_entries(0..u64::MAX)
        .unwrap()
        .into_iter()
        .filter(|b| !BatchHeader::parse(b).unwrap().control)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_hold_the_leaders_batches_at_the_same_offsets_and_survive_its_loss() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader(Duration::from_secs(10)).await;

    let offsets = cluster.publish(leader, 0, 40).await;
    assert_eq!(offsets, (0..40).map(|i| i * 2).collect::<Vec<u64>>());
    cluster.wait_applied(leader).await;
    cluster.wait_high_watermark(80).await;
    let data = cluster.assert_identical_data();
    assert_eq!(data.len(), 40);
    for (i, batch) in data.iter().enumerate() {
        let header = BatchHeader::parse(batch).unwrap();
        assert_eq!(header.base_offset, 2 * i as u64);
        // The stamped bytes are the producer's batch with the sidecar's fields filled in.
        assert_eq!(batch[28..], batch_bytes(i)[28..]);
    }

    // The leader goes away: the other two elect a new one, which continues the offsets.
    let stopping = Instant::now();
    cluster.stop(leader).await;
    let new_leader = cluster.leader(Duration::from_secs(10)).await;
    // Not asserted (timing is for benchmarks); shown with --nocapture.
    eprintln!("new leader {new_leader} after {:?}", stopping.elapsed());
    let more = cluster.publish(new_leader, 40, 10).await;
    assert_eq!(more, (40..50).map(|i| i * 2).collect::<Vec<u64>>());
    cluster.wait_applied(new_leader).await;
    cluster.wait_high_watermark(100).await;
    assert_eq!(cluster.assert_identical_data().len(), 50);
    cluster.shutdown().await;
}

/// Every replica forms a new group before its peers reach it, so the group's first leader may
/// die the moment it is elected (before its first entry reached anyone) and the two left
/// still hold the membership to elect another with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_groups_first_leader_may_die_at_once_and_the_others_elect_one() {
    for _ in 0..3 {
        let mut cluster = Cluster::start().await;
        let first = cluster.leader(Duration::from_secs(10)).await;
        cluster.stop(first).await;
        for member in cluster.members.values() {
            let membership = member
                .replica
                .raft
                .metrics()
                .borrow()
                .membership_config
                .clone();
            let voters: BTreeSet<NodeId> = membership.membership().voter_ids().collect();
            assert_eq!(voters, BTreeSet::from([1, 2, 3]));
        }
        let next = cluster.leader(Duration::from_secs(10)).await;
        assert_ne!(next, first);
        assert_eq!(cluster.publish(next, 0, 1).await.len(), 1);
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_follower_catches_up_from_its_own_log() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    cluster.publish(leader, 0, 20).await;
    cluster.wait_applied(leader).await;

    // One follower stops; the other two keep committing without it.
    let follower = *cluster.members.keys().find(|&&id| id != leader).unwrap();
    assert_eq!(data_batches(&cluster.members[&follower]).len(), 20);
    let addr = cluster.stop(follower).await;
    let offsets = cluster.publish(leader, 20, 30).await;
    assert_eq!(offsets.last(), Some(&98));
    cluster.wait_high_watermark(100).await;

    // It comes back on the same address with what it had on disk, and catches up.
    let member = cluster.open(follower, addr).await;
    assert!(
        data_batches(&member).len() >= 20,
        "a restarted replica starts from its own log"
    );
    cluster.members.insert(follower, member);
    cluster.wait_applied(leader).await;
    cluster.wait_high_watermark(100).await;
    let data = cluster.assert_identical_data();
    assert_eq!(data.len(), 50);

    // Its committed data reads back below its high watermark, batch by batch.
    let restarted = &cluster.members[&follower].replica;
    let fetched = restarted.log.read_committed(0, usize::MAX, 100).unwrap();
    assert_eq!(fetched.batches, data);
    cluster.shutdown().await;
}

/// A replica whose other voters are gone for good restarts as its group's only voter: it
/// leads at once, in a term above any the group used, keeps every committed batch at its
/// offset, goes on committing, and stays the only voter after a restart of its own (the
/// membership it appended is in its log). (The sidecar does this to groups of two voters
/// only, where each committed batch is on both; here every batch is on node 1 too.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_other_voters_are_gone_restarts_alone_and_keeps_its_log() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    cluster.publish(leader, 0, 20).await;
    cluster.wait_applied(leader).await;
    for id in [2, 3] {
        cluster.stop(id).await;
    }
    // Alone among three voters, it can neither elect itself nor commit.
    let survivor = cluster.members.remove(&1).unwrap();
    let old_term = survivor.replica.raft.metrics().borrow().current_term;
    let dir = cluster.dir.path().join("node-1");
    let replica = survivor
        .node
        .restart_alone(TOPIC, 0, &dir, survivor.replica)
        .await
        .unwrap();
    cluster.members.insert(
        1,
        Member {
            node: survivor.node,
            replica,
        },
    );
    assert_eq!(cluster.leader(Duration::from_secs(10)).await, 1);
    let metrics = cluster.members[&1].replica.raft.metrics().borrow().clone();
    let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().collect();
    assert_eq!(voters, [1]);
    assert!(metrics.current_term > old_term, "{metrics:?}");
    let offsets = cluster.publish(1, 20, 5).await;
    assert_eq!(offsets, [40, 42, 44, 46, 48]);
    cluster.wait_high_watermark(50).await;
    let data = data_batches(&cluster.members[&1]);
    assert_eq!(data.len(), 25);
    for (i, batch) in data.iter().enumerate() {
        assert_eq!(batch[28..], batch_bytes(i)[28..], "batch {i}");
    }

    // Stopped and opened again from its files, it is still the group's only voter (on any
    // port: nobody else calls it).
    cluster.stop(1).await;
    let member = cluster
        .open(1, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await;
    cluster.members.insert(1, member);
    assert_eq!(cluster.leader(Duration::from_secs(10)).await, 1);
    assert_eq!(cluster.publish(1, 25, 1).await, [50]);
    cluster.shutdown().await;
}

/// Whether `replicated`'s group is cut off, given the nodes `gone` for good, within `within`.
async fn cut_off_within(
    replicated: &crate::topics::Replicated,
    gone: &BTreeSet<NodeId>,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while !replicated.cut_off(gone) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Only a group of two whose other voter left the cluster for good, and that has no leader
/// (or only this replica, without a quorum), is cut off: not while the other is a member or
/// answers, nor a group of three that lost both others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_group_of_two_without_its_departed_other_voter_is_cut_off() {
    use crate::topics::Replicated;
    let departed = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<NodeId>>();

    let mut pair = Cluster::start_with(2).await;
    let leader = pair.leader(Duration::from_secs(10)).await;
    pair.publish(leader, 0, 5).await;
    let one = Replicated::new(1, vec![1, 2], pair.members[&1].replica.clone());
    // Both answer: whoever leads, the group goes on, departed or not.
    assert!(!one.cut_off(&departed(&[])));
    assert!(!one.cut_off(&departed(&[2])));
    pair.stop(2).await;
    // Node 2 is gone, but not out of the cluster: it may come back.
    assert!(!cut_off_within(&one, &departed(&[]), Duration::from_secs(2)).await);
    // Out of the cluster for good: node 1 is cut off once it has had no leader (or, if it
    // led, no answer from node 2) for a while.
    assert!(cut_off_within(&one, &departed(&[2]), Duration::from_secs(10)).await);
    pair.shutdown().await;

    let mut three = Cluster::start().await;
    let leader = three.leader(Duration::from_secs(10)).await;
    three.publish(leader, 0, 5).await;
    let one = Replicated::new(1, vec![1, 2, 3], three.members[&1].replica.clone());
    for id in [2, 3] {
        three.stop(id).await;
    }
    assert!(!cut_off_within(&one, &departed(&[2, 3]), Duration::from_secs(3)).await);
    three.shutdown().await;
}

/// A follower that missed entries the leader has since purged is sent a snapshot that carries
/// the leader's batches from its log start (DESIGN "Retention and snapshots"): it ends up with
/// the same batches at the same offsets, takes the entries after them, and can lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_leaders_log_start_gets_the_batches_with_the_snapshot() {
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    cluster.publish(leader, 0, 20).await;
    cluster.wait_applied(leader).await;
    let follower = *cluster.members.keys().find(|&&id| id != leader).unwrap();
    let addr = cluster.stop(follower).await;
    cluster.publish(leader, 20, 30).await;
    cluster.wait_applied(leader).await;

    // The leader snapshots and purges its log up to an entry the follower never had.
    let raft = cluster.members[&leader].replica.raft.clone();
    let applied = raft.metrics().borrow().last_applied.map(|l| l.index);
    raft.trigger().snapshot().await.unwrap();
    let mut metrics = raft.metrics();
    let snapshotted = tokio::time::timeout(
        Duration::from_secs(10),
        metrics.wait_for(|m| m.snapshot.map(|s| s.index) >= applied),
    )
    .await
    .is_ok_and(|built| built.is_ok());
    assert!(snapshotted, "no snapshot built");
    let purge_through = applied.unwrap() - 8;
    raft.trigger().purge_log(purge_through).await.unwrap();
    let leader_log = Arc::clone(&cluster.members[&leader].replica.log);
    let deadline = Instant::now() + Duration::from_secs(10);
    while leader_log.state().last_purged.map(|p| p.index) != Some(purge_through) {
        assert!(Instant::now() < deadline, "the leader never purged its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        leader_log.state().start_offset > 40,
        "{:?}",
        leader_log.state()
    );

    // The follower comes back behind the leader's log start: a snapshot brings it the rest.
    let member = cluster.open(follower, addr).await;
    cluster.members.insert(follower, member);
    cluster.wait_high_watermark(100).await;
    // (A replica back from a stop may stand for election before the leader reaches it: the
    // new leader's blank entry then follows.)
    let leader = cluster.leader(Duration::from_secs(10)).await;
    cluster.wait_applied(leader).await;
    let leader_log = Arc::clone(&cluster.members[&leader].replica.log);
    let restored = Arc::clone(&cluster.members[&follower].replica.log);
    let deadline = Instant::now() + Duration::from_secs(10);
    while restored.state().last != leader_log.state().last {
        assert!(Instant::now() < deadline, "the follower never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(entries(&restored), entries(&leader_log));
    assert_eq!(
        restored.state().start_offset,
        leader_log.state().start_offset
    );
    assert!(
        !restored.dir().join(super::bundle::INCOMING_FILE).exists(),
        "the received bundle is removed once installed"
    );

    // It takes what comes next, reads it back, and the group survives the leader's loss.
    cluster.publish(leader, 50, 5).await;
    cluster.wait_applied(leader).await;
    cluster.wait_high_watermark(110).await;
    let start = leader_log.state().start_offset;
    let fetched = restored.read_committed(start, usize::MAX, 110).unwrap();
    let expected = leader_log.read_committed(start, usize::MAX, 110).unwrap();
    assert_eq!(fetched.batches, expected.batches);
    cluster.stop(leader).await;
    let next = cluster.leader(Duration::from_secs(10)).await;
    assert_eq!(cluster.publish(next, 55, 1).await, vec![110]);
    cluster.shutdown().await;
}

/// Every entry a log holds: its Raft id and offset, and its bytes if it is a data batch (a
/// control batch carries the time its replica wrote it).
fn entries(log: &sidestream_log::Log) -> Vec<(sidestream_log::RaftLogId, u64, Option<Bytes>)> {
    log.read_entries(0..u64::MAX)
        .unwrap()
        .into_iter()
        .map(|batch| {
            let header = BatchHeader::parse(&batch).unwrap();
            let data = (!header.control).then_some(batch);
            (header.raft, header.base_offset, data)
        })
        .collect()
}

fn batch_bytes(i: usize) -> Bytes {
    batch(i).0
}

/// Peer clients of a node that holds no group: introduces itself as node 99 and serves no
/// calls on its connections.
fn bare_clients(tls: &PeerTls) -> super::peer::PeerClients {
    let endpoint = tls
        .bind(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            &QuicTuning::default(),
        )
        .unwrap();
    let hello = sidestream_proto::peer::v1::Hello {
        node_id: 99,
        peer_address: endpoint.local_addr().unwrap().to_string(),
    };
    super::peer::PeerClients::new(endpoint, Duration::from_secs(5), hello, Arc::new(|_| {}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_make_their_calls_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let tls = PeerTls::from_dev(&DevCertificates::ensure(dir.path(), &[]).unwrap()).unwrap();
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let start = |id| PeerNode::start(id, loopback, None, tls.clone(), &QuicTuning::default());
    let (a, b) = (start(1).unwrap(), start(2).unwrap());
    let (a_addr, b_addr) = (
        a.local_addr().unwrap().to_string(),
        b.local_addr().unwrap().to_string(),
    );

    // A calls B first (into a group B does not hold: the answer is still an answer).
    let answer = a
        .clients()
        .call(&b_addr, &vote_call("orders"))
        .await
        .unwrap();
    assert_eq!(answer.code, i32::from(PeerErrorCode::UnknownGroup));
    // B learns who opened the connection, then makes its own call on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.clients().connected(&a_addr) {
        assert!(
            Instant::now() < deadline,
            "B never took A's connection for its calls"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let answer = b
        .clients()
        .call(&a_addr, &vote_call("orders"))
        .await
        .unwrap();
    assert_eq!(answer.code, i32::from(PeerErrorCode::UnknownGroup));
    assert_eq!((a.open_connections(), b.open_connections()), (1, 1));
    a.shutdown().await;
    b.shutdown().await;
}

/// A vote call for partition 0 of `topic`, as a candidate of term 1 would make it.
fn vote_call(topic: &str) -> sidestream_proto::peer::v1::PeerRequest {
    use sidestream_proto::peer::v1::{PeerRequest, peer_request};
    let vote = openraft::raft::VoteRequest::<NodeId>::new(openraft::Vote::new(1, 9), None);
    PeerRequest {
        group: Some(super::peer::wire::group(topic, 0)),
        body: Some(peer_request::Body::Vote(
            serde_json::to_vec(&vote).unwrap().into(),
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_port_serves_sidecars_only_and_names_unknown_groups() {
    use super::peer::CallError;

    let cluster = Cluster::start().await;
    // Elected first, so the stray vote below (term 1) cannot disturb the election.
    cluster.leader(Duration::from_secs(10)).await;
    let target = cluster.members[&1].node.local_addr().unwrap().to_string();
    let other_dir = tempfile::tempdir().unwrap();

    // A sidecar of the same CA: served; a group it does not hold is named as unknown.
    let certificates = DevCertificates::in_data_dir(cluster.dir.path());
    let sidecar_tls = PeerTls::from_dev(&certificates).unwrap();
    let sidecar = bare_clients(&sidecar_tls);
    let answer = sidecar.call(&target, &vote_call("payments")).await.unwrap();
    assert_eq!(answer.code, i32::from(PeerErrorCode::UnknownGroup));
    assert!(
        answer.message.contains("\"payments\""),
        "{}",
        answer.message
    );
    let answer = sidecar.call(&target, &vote_call(TOPIC)).await.unwrap();
    assert_eq!(
        answer.code,
        i32::from(PeerErrorCode::Ok),
        "{}",
        answer.message
    );

    // A service's certificate of the same CA: the connection is closed before any call.
    let service_tls = PeerTls::from_paths(
        &certificates.ca_cert(),
        &certificates.client_cert(),
        &certificates.client_key(),
    )
    .unwrap();
    let service = bare_clients(&service_tls);
    let refused = service.call(&target, &vote_call(TOPIC)).await.unwrap_err();
    assert!(
        matches!(
            refused,
            CallError::Connection { .. } | CallError::Stream { .. } | CallError::Answer { .. }
        ),
        "{refused}"
    );
    // The close reason names it when it arrives before the stream fails; on a busy machine
    // the stream may fail first, with the connection simply gone.
    let text = refused.to_string();
    assert!(
        text.contains("not a sidecar") || text.contains("connection lost"),
        "{refused:?}"
    );

    // A sidecar of another cluster (another CA): the handshake fails.
    let other = DevCertificates::ensure(other_dir.path(), &[]).unwrap();
    let stranger_tls = PeerTls::from_dev(&other).unwrap();
    let stranger = bare_clients(&stranger_tls);
    let refused = stranger.call(&target, &vote_call(TOPIC)).await.unwrap_err();
    assert!(matches!(refused, CallError::Connect { .. }), "{refused}");

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_port_given_new_certificates_presents_and_checks_them_in_new_connections() {
    use super::peer::CallError;

    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tls_a = PeerTls::from_dev(&DevCertificates::ensure(dir_a.path(), &[]).unwrap()).unwrap();
    let tls_b = PeerTls::from_dev(&DevCertificates::ensure(dir_b.path(), &[]).unwrap()).unwrap();
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let node = PeerNode::start(1, loopback, None, tls_a.clone(), &QuicTuning::default()).unwrap();
    let target = node.local_addr().unwrap().to_string();
    let unknown_group = i32::from(PeerErrorCode::UnknownGroup);

    // Started with CA A: a sidecar of A is served, one of B refused in the handshake.
    let of_a = bare_clients(&tls_a);
    assert_eq!(
        of_a.call(&target, &vote_call("t")).await.unwrap().code,
        unknown_group
    );
    let refused = bare_clients(&tls_b)
        .call(&target, &vote_call("t"))
        .await
        .unwrap_err();
    assert!(matches!(refused, CallError::Connect { .. }), "{refused}");

    node.reload_tls(&tls_b);
    // The connection made before goes on; new ones are checked against B.
    assert_eq!(
        of_a.call(&target, &vote_call("t")).await.unwrap().code,
        unknown_group
    );
    assert_eq!(
        bare_clients(&tls_b)
            .call(&target, &vote_call("t"))
            .await
            .unwrap()
            .code,
        unknown_group
    );
    let refused = bare_clients(&tls_a)
        .call(&target, &vote_call("t"))
        .await
        .unwrap_err();
    assert!(matches!(refused, CallError::Connect { .. }), "{refused}");

    // The connections the node opens itself present B's certificate and trust B's CA.
    let other = PeerNode::start(2, loopback, None, tls_b, &QuicTuning::default()).unwrap();
    let other_addr = other.local_addr().unwrap().to_string();
    assert_eq!(
        node.clients()
            .call(&other_addr, &vote_call("t"))
            .await
            .unwrap()
            .code,
        unknown_group
    );
    node.shutdown().await;
    other.shutdown().await;
}
