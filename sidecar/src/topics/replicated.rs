//! Publishing to a replicated partition: through the partition's Raft group, on its leader.
//!
//! The leader checks each batch against the idempotent producers' table before it proposes it,
//! so that batches of a producer enter the log in sequence order whatever order retries arrive
//! in. The table it checks is its own table of *proposed* batches: the committed table (the
//! state machine's) as it stood when this term's first entry was applied, plus every batch
//! proposed since. Proposals are sent to Raft under the table's lock, so the log takes them in
//! the order they were checked.
//!
//! ```text
//!   publish ─▶ leader here? ── no ──▶ Routed::Leader(peer address): the caller passes it on
//!                 │ yes
//!                 ▼
//!   proposals (lock): new term? start from the committed table ─▶ check sequence
//!        Append    ─▶ client_write_ff(batch) ─▶ acks=none: answer now
//!                                             ─▶ acks=leader: when the leader's log has it
//!                                             ─▶ acks=all: when it is committed (applied)
//!        Duplicate ─▶ answer the first copy's offsets once it is committed
//!        Early     ─▶ wait for the next proposal (up to 5 s), check again
//! ```

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use openraft::error::ClientWriteError;
use openraft::raft::ClientWriteResponse;
use sidestream_log::batch::BatchHeader;
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::partition::{PublishError, PublishOutcome};
use super::producers::{Producers, Sequence};
use crate::cluster::{
    AppendNotice, GroupApplied, GroupCommand, GroupPosition, NodeId, PartitionRaft,
    PartitionReplica, PartitionWrite, matched,
};

/// Longest an early batch of an idempotent producer waits for its predecessor.
const EARLY_BATCH_WAIT: Duration = Duration::from_secs(5);

/// Longest one step of a replica set change may take (a new replica catching up included).
const CONVERGE_WAIT: Duration = Duration::from_secs(30);

/// Longest adding a learner to a group may take (a membership entry to commit; the learner
/// catches up after).
const LEARNER_WAIT: Duration = Duration::from_secs(5);

/// How long retention waits for a snapshot it asked for (a few hundred bytes of state).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

/// Longest a leader handing over waits, publishes held back, for the preferred replica to
/// have its whole log (it was at most [`BALANCE_LAG`] entries behind).
const CATCH_UP_WAIT: Duration = Duration::from_millis(200);

/// Longest a leader handing over waits, publishes held back, for another leader.
const HANDOVER_WAIT: Duration = Duration::from_secs(1);

/// How far behind the leader's log the preferred replica may be for a handover to start.
const BALANCE_LAG: u64 = 64;

/// For how many checks in a row (one a second) leadership must be worth handing to the
/// preferred replica before it is handed over: a replica back from a restart first shows
/// that it keeps up.
const BALANCE_CHECKS: i32 = 5;

/// For how many checks in a row (one a second at most) a replica's group must be cut off (no
/// leader, and the other voter left the cluster for good) before the replica is restarted as
/// its only voter: a departed node that still leads the group while its replicas move (a
/// decommission of a live node) is heard from all along.
const STRANDED_CHECKS: u32 = 5;

/// How long a leader may go without a quorum's answer before its group counts as without a
/// leader (heartbeats go out every 100 ms).
const QUORUM_LOST: Duration = Duration::from_secs(1);

/// How many checks a failed handover waits before the next attempt.
const BALANCE_BACKOFF: i32 = 30;

/// Longest a leader waits for its high watermark to reach an offset a group commits (a
/// follower may apply a commit before its leader does).
const HIGH_WATERMARK_WAIT: Duration = Duration::from_secs(1);

/// How long a group command waits before asking again when leadership moved under it.
const LEADER_CHANGE_PAUSE: Duration = Duration::from_millis(20);

/// Offsets recorded for a batch proposed but not yet appended.
const PENDING: (u64, u64) = (u64::MAX, u64::MAX);

/// Whether a replica's group lost its other voters for good (see [`Replicated::stranded`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stranded {
    /// No: the group goes on as it is.
    No,
    /// It looks so: wait for the next checks, and change nothing meanwhile.
    Waiting,
    /// Yes: restart the replica as the group's only voter.
    Now,
}

/// When a publish is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ack {
    /// Once proposed.
    None,
    /// Once the leader's log has it.
    Leader,
    /// Once a majority of the replica set has it (committed).
    All,
}

/// Where a publish went.
#[derive(Debug)]
pub(crate) enum Routed {
    /// This sidecar leads the partition and answered.
    Here(PublishOutcome),
    /// Another sidecar leads it, at this peer address. `proposed`: this sidecar led it a
    /// moment ago and proposed the batch, which the new leader may still commit.
    Leader {
        /// The leader's peer address.
        address: String,
        /// Whether a copy was proposed here.
        proposed: bool,
    },
}

/// Who answered a request of the partition's leader.
#[derive(Debug)]
pub(crate) enum Led<T> {
    /// This sidecar leads the partition and answered.
    Here(T),
    /// Another sidecar leads it, at this peer address.
    Elsewhere(String),
}

impl<T> Led<T> {
    /// The answer here turned into another.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Led<U> {
        match self {
            Self::Here(answer) => Led::Here(f(answer)),
            Self::Elsewhere(address) => Led::Elsewhere(address),
        }
    }
}

/// This sidecar's replica of a partition, as publishers use it.
pub(crate) struct Replicated {
    node_id: NodeId,
    /// The partition's replica set as the cluster's metadata places it (it changes when a
    /// node leaves).
    replicas: Mutex<Vec<NodeId>>,
    replica: PartitionReplica,
    proposals: tokio::sync::Mutex<Proposals>,
    /// Woken after every proposal, for batches waiting for their predecessor.
    proposed: Notify,
    /// Checks in a row that found leadership worth handing to the preferred replica
    /// (negative: backing off after a failed handover).
    balance_checks: std::sync::atomic::AtomicI32,
    /// Checks in a row that found this replica stranded (see [`Replicated::stranded`]).
    stranded_checks: std::sync::atomic::AtomicU32,
}

/// The leader's table of proposed batches, valid for one term.
#[derive(Default)]
struct Proposals {
    /// The term the table is valid in; 0 when it must be rebuilt.
    term: u64,
    producers: Producers,
}

impl std::fmt::Debug for Replicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicated")
            .field("node_id", &self.node_id)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

impl Replicated {
    pub(crate) fn new(node_id: NodeId, replicas: Vec<NodeId>, replica: PartitionReplica) -> Self {
        Self {
            node_id,
            replicas: Mutex::new(replicas),
            replica,
            proposals: tokio::sync::Mutex::new(Proposals::default()),
            proposed: Notify::new(),
            balance_checks: std::sync::atomic::AtomicI32::new(0),
            stranded_checks: std::sync::atomic::AtomicU32::new(0),
        }
    }

    pub(crate) fn replica(&self) -> &PartitionReplica {
        &self.replica
    }

    /// The partition's replica set.
    pub(crate) fn replicas(&self) -> Vec<NodeId> {
        lock(&self.replicas).clone()
    }

    /// Takes the partition's new replica set (a node left).
    pub(crate) fn set_replicas(&self, replicas: Vec<NodeId>) {
        *lock(&self.replicas) = replicas;
    }

    /// Whether this replica was moved away and the group's committed voters no longer
    /// include it: it may be stopped and its files removed.
    pub(crate) fn drained(&self) -> bool {
        if self.replicas().contains(&self.node_id) {
            return false;
        }
        let metrics = self.replica.raft.metrics().borrow().clone();
        let membership = &metrics.membership_config;
        let committed = membership
            .log_id()
            .is_some_and(|log| metrics.last_applied.is_some_and(|applied| applied >= log));
        committed
            && !membership
                .membership()
                .voter_ids()
                .any(|id| id == self.node_id)
    }

    /// Whether this replica's group is cut off for good: its membership is two voters, not
    /// joint, this replica and a node that left the cluster for good (`departed`), and the
    /// group has no leader, or this replica leads it without a quorum's answer for
    /// [`QUORUM_LOST`]. Such a group could only go on if that node came back; this replica
    /// holds every entry the group committed (a majority of two is both), so it may go on
    /// alone (`PeerNode::restart_alone`). A larger group that lost all its other voters is
    /// not: an entry may have been committed by the others without this replica.
    pub(crate) fn cut_off(&self, departed: &std::collections::BTreeSet<NodeId>) -> bool {
        let metrics = self.replica.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let other_gone = membership.get_joint_config().len() == 1
            && voters.len() == 2
            && voters.contains(&self.node_id)
            && voters
                .iter()
                .all(|id| *id == self.node_id || departed.contains(id));
        let leaderless = match metrics.current_leader {
            None => true,
            Some(leader) if leader == self.node_id => without_quorum(&metrics),
            Some(_) => false,
        };
        other_gone && leaderless
    }

    /// Whether to restart this replica as its group's only voter, called once a second at
    /// most: [`Stranded::Now`] once the group was [cut off](Self::cut_off) for
    /// [`STRANDED_CHECKS`] calls in a row; meanwhile the replica's set is not to be changed (a
    /// leader without a quorum would wait for that in vain).
    pub(crate) fn stranded(&self, departed: &std::collections::BTreeSet<NodeId>) -> Stranded {
        use std::sync::atomic::Ordering;
        if !self.cut_off(departed) {
            self.stranded_checks.store(0, Ordering::Relaxed);
            return Stranded::No;
        }
        if self.stranded_checks.fetch_add(1, Ordering::Relaxed) + 1 >= STRANDED_CHECKS {
            Stranded::Now
        } else {
            Stranded::Waiting
        }
    }

    /// Publishes `batch` (validated, a data batch) if this sidecar leads the partition, or says
    /// where the leader is. Waits for a leader up to `deadline`.
    pub(crate) async fn publish(
        &self,
        partition: u32,
        batch: Bytes,
        header: &BatchHeader,
        ack: Ack,
        deadline: Instant,
    ) -> Result<Routed, PublishError> {
        let started = Instant::now();
        let early_deadline = deadline.min(started + EARLY_BATCH_WAIT);
        let producer = header.producer;
        // Once a copy was proposed, a failure may hide a write: it is answered as one whose
        // outcome is unknown, never as a refusal (the client would then number it anew).
        let mut proposed = false;
        let uncertain = |proposed: bool, error: PublishError| {
            if proposed {
                unacknowledged(started)
            } else {
                error
            }
        };
        loop {
            if Instant::now() >= deadline {
                return Err(unacknowledged(started));
            }
            let leading = self
                .leading(deadline)
                .await
                .map_err(|e| uncertain(proposed, e))?;
            let term = match leading {
                Leading::Here(term) => term,
                Leading::Elsewhere(address) => {
                    return Ok(Routed::Leader { address, proposed });
                }
            };
            let step = self
                .propose(term, partition, &batch, header, ack, deadline)
                .await
                .map_err(|e| uncertain(proposed, e))?;
            let sent = match step {
                Step::Sent(sent) => {
                    proposed = true;
                    sent
                }
                Step::Moved => continue,
                Step::Duplicate(offsets) => {
                    let offsets = self
                        .committed_duplicate(header, offsets, deadline)
                        .await
                        .map_err(|()| unacknowledged(started))?;
                    return Ok(Routed::Here(PublishOutcome {
                        offsets: Some(offsets),
                        duplicate: true,
                    }));
                }
                Step::Early(expected, notified) => {
                    if tokio::time::timeout_at(early_deadline, notified)
                        .await
                        .is_err()
                    {
                        return Err(uncertain(
                            proposed,
                            PublishError::OutOfOrder {
                                producer_id: producer.producer_id,
                                partition,
                                expected,
                                got: producer.base_sequence,
                            },
                        ));
                    }
                    continue;
                }
            };
            match self
                .acknowledged(partition, sent, deadline, started)
                .await?
            {
                Some(offsets) => {
                    return Ok(Routed::Here(PublishOutcome {
                        offsets,
                        duplicate: false,
                    }));
                }
                // Leadership moved on; the batch may still be committed by the next leader,
                // whose table then answers the retry as a duplicate.
                None => self.invalidate(term).await,
            }
        }
    }

    /// Checks the batch against the table of proposals of this leader's `term` and, if it is
    /// its producer's next, proposes it.
    async fn propose(
        &self,
        term: u64,
        partition: u32,
        batch: &Bytes,
        header: &BatchHeader,
        ack: Ack,
        deadline: Instant,
    ) -> Result<Step<'_>, PublishError> {
        let mut proposals = self.proposals.lock().await;
        if proposals.term != term {
            drop(proposals);
            if !self.wait_term_applied(term, deadline).await? {
                return Ok(Step::Moved);
            }
            proposals = self.proposals.lock().await;
            if proposals.term != term {
                proposals.producers = lock(&self.replica.producers).clone();
                proposals.term = term;
            }
        }
        let producer = header.producer;
        match proposals.producers.check_from_start(producer) {
            Sequence::Append => {}
            Sequence::Duplicate(offsets) => return Ok(Step::Duplicate(offsets)),
            Sequence::Early { expected } => {
                return Ok(Step::Early(expected, self.proposed.notified()));
            }
            Sequence::Stale { expected } => {
                return Err(PublishError::Stale {
                    producer_id: producer.producer_id,
                    expected,
                    got: producer.base_sequence,
                });
            }
            Sequence::Fenced { current } => {
                return Err(PublishError::Fenced {
                    producer_id: producer.producer_id,
                    got: producer.producer_epoch,
                    current,
                });
            }
        }
        let (notice, appended) = match ack {
            Ack::Leader => {
                let (notice, appended) = AppendNotice::new();
                (notice, Some(appended))
            }
            Ack::None | Ack::All => (AppendNotice::default(), None),
        };
        if Instant::now() >= deadline {
            // Late (it may have waited for the lock or a term): its client has given up and
            // may have numbered its batches anew; proposing it now could put it after them.
            return Err(PublishError::Expired);
        }
        let write = PartitionWrite(batch.clone(), notice);
        let applied = match self.replica.raft.client_write_ff(write).await {
            Ok(applied) => applied,
            Err(fatal) => {
                proposals.term = 0;
                return Err(PublishError::Storage {
                    partition,
                    reason: fatal.to_string(),
                });
            }
        };
        proposals
            .producers
            .appended(producer, header.record_count, PENDING);
        drop(proposals);
        self.proposed.notify_waiters();
        Ok(Step::Sent(Sent {
            term,
            ack,
            applied,
            appended,
        }))
    }

    /// Waits for a proposed batch's acknowledgement: its offsets (`None` for acks=none), or
    /// `None` when leadership moved on before it.
    async fn acknowledged(
        &self,
        partition: u32,
        sent: Sent,
        deadline: Instant,
        started: Instant,
    ) -> Result<Option<Option<(u64, u64)>>, PublishError> {
        let term = sent.term;
        match (sent.ack, sent.appended) {
            (Ack::None, _) => Ok(Some(None)),
            (Ack::Leader, Some(appended)) => {
                match tokio::time::timeout_at(deadline, appended).await {
                    Ok(Ok(offsets)) => Ok(Some(Some(offsets))),
                    // The entry was dropped before the log had it.
                    Ok(Err(_)) => Ok(None),
                    Err(_) => Err(unacknowledged(started)),
                }
            }
            (Ack::Leader | Ack::All, _) => {
                match tokio::time::timeout_at(deadline, sent.applied).await {
                    Ok(Ok(Ok(written))) => Ok(Some(Some((
                        written.data.base_offset,
                        written.data.high_watermark,
                    )))),
                    Ok(Ok(Err(ClientWriteError::ForwardToLeader(_))) | Err(_)) => Ok(None),
                    Ok(Ok(Err(error))) => {
                        self.invalidate(term).await;
                        Err(PublishError::Storage {
                            partition,
                            reason: error.to_string(),
                        })
                    }
                    Err(_) => Err(unacknowledged(started)),
                }
            }
        }
    }

    /// Marks the table of proposals of `term` stale: the next publish rebuilds it.
    async fn invalidate(&self, term: u64) {
        let mut proposals = self.proposals.lock().await;
        if proposals.term == term {
            proposals.term = 0;
        }
    }

    /// Applies the topic's retention to this replica's log (every replica does, on its own
    /// log): the whole segments retention lets go, at or below the high watermark, are purged
    /// through openraft, once a snapshot covers them (one is taken when none does). openraft
    /// deletes them when no follower is being sent them; a follower that needs them later gets
    /// them from the leader's log start, with a snapshot. Returns what it did, for the log.
    pub(crate) async fn apply_retention(&self) -> Result<Option<u64>, String> {
        let replica = &self.replica;
        let high_watermark = *replica.high_watermark.borrow();
        let log = Arc::clone(&replica.log);
        let point = tokio::task::spawn_blocking(move || log.retention_point(high_watermark))
            .await
            .map_err(|e| e.to_string())?;
        let Some(point) = point else {
            return Ok(None);
        };
        // Batches an installed snapshot brought, which openraft let go already.
        let store = replica.store.clone();
        let released = tokio::task::spawn_blocking(move || store.purge_released(point))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot delete segments through entry {point}: {e}"))?;
        if released {
            return Ok(Some(point.index));
        }
        let (purged, snapshot, applied) = {
            let metrics = replica.raft.metrics();
            let metrics = metrics.borrow();
            (
                metrics.purged.map(|p| p.index),
                metrics.snapshot.map(|s| s.index),
                metrics.last_applied.map(|a| a.index),
            )
        };
        if purged >= Some(point.index) || applied < Some(point.index) {
            // Asked for already (openraft purges once no follower is being sent those
            // entries), or not applied yet (a control entry at the end of the segment).
            return Ok(None);
        }
        let raft = &replica.raft;
        if snapshot < Some(point.index) {
            raft.trigger()
                .snapshot()
                .await
                .map_err(|e| format!("cannot take a snapshot: {e}"))?;
            let covered = raft
                .wait(Some(SNAPSHOT_WAIT))
                .metrics(
                    |m| m.snapshot.map(|s| s.index) >= Some(point.index),
                    "a snapshot covers the retention point",
                )
                .await;
            if covered.is_err() {
                return Ok(None);
            }
        }
        raft.trigger()
            .purge_log(point.index)
            .await
            .map_err(|e| format!("cannot purge through entry {point}: {e}"))?;
        Ok(Some(point.index))
    }

    /// Sweeps the log store's recent entries (every second: an idle partition keeps little).
    /// If this replica leads the partition and its Raft group's voters are not the replica
    /// set the metadata names, changes them: the new replicas join as learners (their peer
    /// addresses in `nodes`), are waited for until they have caught up (at most
    /// [`CONVERGE_WAIT`]), then the voters become the replica set. Does nothing elsewhere.
    pub(crate) async fn converge(
        &self,
        nodes: &std::collections::BTreeMap<NodeId, crate::cluster::NodeInfo>,
    ) -> Result<(), String> {
        let metrics = self.replica.raft.metrics().borrow().clone();
        let leading = metrics.current_leader == Some(self.node_id);
        self.replica.store.sweep_recent(leading);
        let replicas = self.replicas();
        if metrics.current_leader != Some(self.node_id) || replicas.is_empty() {
            return Ok(());
        }
        let membership = metrics.membership_config.membership().clone();
        let wanted: std::collections::BTreeSet<NodeId> = replicas.iter().copied().collect();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters == wanted {
            return Ok(());
        }
        if without_quorum(&metrics) {
            // A change could not commit (see `stranded`).
            return Err("the leader has not heard from a quorum for a while".to_owned());
        }
        let raft = &self.replica.raft;
        let last = metrics.last_log_index.unwrap_or(0);
        for &id in wanted.difference(&voters) {
            if membership.get_node(&id).is_none() {
                let node = nodes
                    .get(&id)
                    .ok_or_else(|| format!("node {id} is not registered"))?;
                let added =
                    raft.add_learner(id, openraft::BasicNode::new(&node.peer_address), false);
                tokio::time::timeout(LEARNER_WAIT, added)
                    .await
                    .map_err(|_| format!("adding node {id} took longer than {LEARNER_WAIT:?}"))?
                    .map_err(|e| format!("cannot add node {id}: {e}"))?;
            }
            let caught_up = raft
                .wait(Some(CONVERGE_WAIT))
                .metrics(
                    |m| matched(m, id) >= Some(last),
                    format!("node {id} catches up"),
                )
                .await;
            caught_up.map_err(|e| format!("node {id} has not caught up: {e}"))?;
        }
        let change = raft.change_membership(wanted.clone(), false);
        tokio::time::timeout(CONVERGE_WAIT, change)
            .await
            .map_err(|_| {
                format!("the change to voters {wanted:?} took longer than {CONVERGE_WAIT:?}")
            })?
            .map_err(|e| format!("cannot make {wanted:?} the voters: {e}"))?;
        tracing::info!(voters = ?wanted, "partition replica set changed");
        Ok(())
    }

    /// The replica to hand leadership over to now, called once a second: the replica set's
    /// first (its preferred leader; placement spreads them evenly), once for
    /// [`BALANCE_CHECKS`] calls in a row this replica led, the group's committed voters were
    /// the replica set, and the preferred replica was a voter close behind the leader's log.
    pub(crate) fn balance_due(&self) -> Option<NodeId> {
        use std::sync::atomic::Ordering;
        let Some(to) = self.preferred_elsewhere() else {
            // Backing off stays backing off; anything else starts again.
            let _ = self
                .balance_checks
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.min(0)));
            return None;
        };
        let checks = self.balance_checks.fetch_add(1, Ordering::Relaxed) + 1;
        (checks >= BALANCE_CHECKS).then(|| {
            self.balance_checks.store(0, Ordering::Relaxed);
            to
        })
    }

    /// The voter to hand this replica's leadership to before this node stops, if it leads:
    /// the other voter of the group's committed membership that holds the most of the log,
    /// the preferred replica among equals.
    pub(crate) fn successor(&self) -> Option<NodeId> {
        let m = self.replica.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.node_id) {
            return None;
        }
        let preferred = self.replicas().first().copied();
        m.membership_config
            .membership()
            .voter_ids()
            .filter(|&id| id != self.node_id)
            .filter_map(|id| matched(&m, id).map(|index| (index, Some(id) == preferred, id)))
            .max()
            .map(|(_, _, id)| id)
    }

    /// After a failed handover: wait [`BALANCE_BACKOFF`] checks before the next.
    pub(crate) fn balance_failed(&self) {
        self.balance_checks
            .store(-BALANCE_BACKOFF, std::sync::atomic::Ordering::Relaxed);
    }

    /// The preferred replica, if this replica leads in its place, the group's committed voters
    /// are the replica set, and the preferred one is at most [`BALANCE_LAG`] entries behind.
    fn preferred_elsewhere(&self) -> Option<NodeId> {
        let replicas = self.replicas();
        let preferred = *replicas.first()?;
        let m = self.replica.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.node_id) || preferred == self.node_id {
            return None;
        }
        let membership = &m.membership_config;
        let committed = membership
            .log_id()
            .is_some_and(|log| m.last_applied.is_some_and(|applied| applied >= log));
        let voters: std::collections::BTreeSet<NodeId> =
            membership.membership().voter_ids().collect();
        let wanted: std::collections::BTreeSet<NodeId> = replicas.iter().copied().collect();
        let matched = matched(&m, preferred)?;
        (committed && voters == wanted && matched + BALANCE_LAG >= m.last_log_index.unwrap_or(0))
            .then_some(preferred)
    }

    /// Hands this replica's leadership over to `to`: asks it to stand (`ask`: the peer call,
    /// whether it will; before anything is held back, so an unreachable replica costs
    /// publishes nothing); then, with proposals held back, waits (at most [`CATCH_UP_WAIT`])
    /// until `to` has the whole log, stops sending heartbeats so that the voters' leases run
    /// out, and waits (at most [`HANDOVER_WAIT`]) for another leader; then sends heartbeats
    /// again (should it lead again) and lets publishes go on (to the new leader). Whether
    /// leadership moved.
    pub(crate) async fn hand_over(
        &self,
        to: NodeId,
        ask: impl Future<Output = Result<bool, String>>,
    ) -> Result<bool, String> {
        if !ask.await? {
            return Err(format!("node {to} does not stand"));
        }
        let proposals = self.proposals.lock().await;
        let raft = &self.replica.raft;
        let me = self.node_id;
        // The Raft takes calls in order and appends a proposal to the log before its next
        // call: after this one, the log holds every proposal made before the lock.
        raft.with_raft_state(|_| ())
            .await
            .map_err(|e| e.to_string())?;
        let last = self.replica.log.state().last.map_or(0, |l| l.index);
        let caught_up = raft
            .wait(Some(CATCH_UP_WAIT))
            .metrics(
                |m| m.current_leader != Some(me) || matched(m, to) >= Some(last),
                format!("node {to} has the whole log"),
            )
            .await
            .map_err(|e| format!("node {to} did not catch up: {e}"))?;
        if caught_up.current_leader != Some(me) {
            return Ok(false);
        }
        raft.runtime_config().heartbeat(false);
        // Heartbeats again however this ends, the wait cancelled (a shutdown's bound) included.
        let heartbeats = HeartbeatsBack(raft);
        let moved = raft
            .wait(Some(HANDOVER_WAIT))
            .metrics(|m| m.current_leader != Some(me), "leadership moves")
            .await
            .is_ok();
        drop(heartbeats);
        // A new leader means a new term, which rebuilds the table of proposals.
        drop(proposals);
        tracing::info!(to, moved, "leadership handed over");
        Ok(moved)
    }

    /// Proposes a group's `command` if this sidecar leads the partition and answers what
    /// applying it did, or says where the leader is. Waits for a leader up to `deadline`.
    ///
    /// A command whose outcome was lost with a leader is proposed again to the next one:
    /// claiming or committing twice is the same as once.
    pub(crate) async fn group_command(
        &self,
        partition: u32,
        command: &GroupCommand,
        deadline: Instant,
    ) -> Result<Led<GroupApplied>, PublishError> {
        let started = Instant::now();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let batch = command
            .to_batch(now_ms)
            .map_err(|reason| PublishError::Storage { partition, reason })?;
        loop {
            if Instant::now() >= deadline {
                return Err(unacknowledged(started));
            }
            if let Leading::Elsewhere(address) = self.leading(deadline).await? {
                return Ok(Led::Elsewhere(address));
            }
            // A commit names an offset a consumer read: committed, though a follower may have
            // applied it before this leader did.
            if let GroupCommand::Commit { offset, .. } = command {
                let mut applied = self.replica.high_watermark.clone();
                let reached = applied.wait_for(|high_watermark| high_watermark >= offset);
                if !matches!(
                    tokio::time::timeout(HIGH_WATERMARK_WAIT, reached).await,
                    Ok(Ok(_))
                ) {
                    let high_watermark = *applied.borrow();
                    return Ok(Led::Here(GroupApplied::PastHighWatermark {
                        high_watermark,
                    }));
                }
            }
            // Held back with publishes while leadership is handed over.
            let proposals = self.proposals.lock().await;
            if Instant::now() >= deadline {
                // Its caller has given up and may have sent a later command.
                return Err(PublishError::Expired);
            }
            let write = PartitionWrite(batch.clone(), AppendNotice::default());
            let applied = self.replica.raft.client_write_ff(write).await;
            drop(proposals);
            let applied = applied.map_err(|fatal| PublishError::Storage {
                partition,
                reason: fatal.to_string(),
            })?;
            match tokio::time::timeout_at(deadline, applied).await {
                Ok(Ok(Ok(written))) => {
                    let outcome = written.data.group.ok_or_else(|| PublishError::Storage {
                        partition,
                        reason: "a group command was applied as data".to_owned(),
                    })?;
                    return Ok(Led::Here(outcome));
                }
                // Leadership moved on before it was applied: ask again.
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(_))) | Err(_)) => {
                    tokio::time::sleep(LEADER_CHANGE_PAUSE).await;
                }
                Ok(Ok(Err(error))) => {
                    return Err(PublishError::Storage {
                        partition,
                        reason: error.to_string(),
                    });
                }
                Err(_) => return Err(unacknowledged(started)),
            }
        }
    }

    /// A group's position in the partition as committed when the call was made (a
    /// linearizable read: this replica confirms with a majority that it still leads, and
    /// applies up to its commit index first), or where the leader is.
    pub(crate) async fn group_position(
        &self,
        group: &str,
        deadline: Instant,
    ) -> Result<Led<Option<GroupPosition>>, PublishError> {
        loop {
            if let Leading::Elsewhere(address) = self.leading(deadline).await? {
                return Ok(Led::Elsewhere(address));
            }
            match tokio::time::timeout_at(deadline, self.replica.raft.ensure_linearizable()).await {
                Ok(Ok(_)) => {
                    let groups = lock(&self.replica.groups);
                    return Ok(Led::Here(groups.get(group).cloned()));
                }
                Ok(Err(openraft::error::RaftError::APIError(_))) => {
                    if Instant::now() + LEADER_CHANGE_PAUSE >= deadline {
                        return Err(PublishError::NoLeader);
                    }
                    tokio::time::sleep(LEADER_CHANGE_PAUSE).await;
                }
                Ok(Err(openraft::error::RaftError::Fatal(_))) => {
                    return Err(PublishError::Stopped);
                }
                Err(_) => return Err(PublishError::NoLeader),
            }
        }
    }

    /// Resolves once this replica knows a leader other than the one at `address`; never if
    /// the replica stops.
    pub(crate) async fn leader_moved_from(&self, address: &str) {
        let mut metrics = self.replica.raft.metrics();
        loop {
            let moved = {
                let m = metrics.borrow_and_update();
                m.current_leader
                    .and_then(|leader| m.membership_config.membership().get_node(&leader).cloned())
                    .is_some_and(|node| node.addr != address)
            };
            if moved {
                return;
            }
            if metrics.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits for the partition to have a leader; this node's current term if it is the leader.
    async fn leading(&self, deadline: Instant) -> Result<Leading, PublishError> {
        let mut metrics = self.replica.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                match m.current_leader {
                    Some(leader) if leader == self.node_id => {
                        return Ok(Leading::Here(m.current_term));
                    }
                    Some(leader) => {
                        if let Some(node) = m.membership_config.membership().get_node(&leader) {
                            return Ok(Leading::Elsewhere(node.addr.clone()));
                        }
                    }
                    None => {}
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(PublishError::Stopped),
                Err(_) => return Err(PublishError::NoLeader),
            }
        }
    }

    /// Waits until this node, leader in `term`, has applied an entry of `term` and every entry
    /// its log held when the wait began: the committed producers' table then has every batch
    /// proposed before. For a newly elected leader that last entry is the term's blank one. A
    /// leader restarted within its term (openraft restores a leader whose vote was committed)
    /// may hold entries of `term` its previous process proposed and nobody applied yet: a table
    /// without them would take a retry of one of those batches as new and write it twice.
    /// `false` when the node no longer leads in `term`.
    async fn wait_term_applied(&self, term: u64, deadline: Instant) -> Result<bool, PublishError> {
        let me = self.node_id;
        let leads = move |m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>| {
            m.current_term == term && m.current_leader == Some(me)
        };
        let mut metrics = self.replica.raft.metrics();
        let last_entry = metrics.borrow().last_log_index;
        let wait = metrics.wait_for(|m| {
            !leads(m)
                || m.last_applied.is_some_and(|applied| {
                    applied.leader_id.term >= term && Some(applied.index) >= last_entry
                })
        });
        match tokio::time::timeout_at(deadline, wait).await {
            Ok(Ok(m)) => Ok(leads(&m)),
            Ok(Err(_)) => Err(PublishError::Stopped),
            Err(_) => Err(PublishError::NoLeader),
        }
    }

    /// The offsets of the first copy of a duplicate batch, once that copy is committed.
    async fn committed_duplicate(
        &self,
        header: &BatchHeader,
        proposed: (u64, u64),
        deadline: Instant,
    ) -> Result<(u64, u64), ()> {
        if proposed != PENDING {
            return Ok(proposed);
        }
        let mut high_watermark = self.replica.high_watermark.clone();
        loop {
            let committed = lock(&self.replica.producers).check(header.producer);
            if let Sequence::Duplicate(offsets) = committed {
                return Ok(offsets);
            }
            match tokio::time::timeout_at(deadline, high_watermark.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Err(()),
            }
        }
    }
}

/// What checking a batch against the proposals led to.
enum Step<'a> {
    /// Proposed.
    Sent(Sent),
    /// This node no longer leads in the term the check was for.
    Moved,
    /// A copy was proposed before, at these offsets ([`PENDING`] while not appended).
    Duplicate((u64, u64)),
    /// Its producer's previous batch has not come yet (the sequence expected); woken at the
    /// next proposal.
    Early(i32, tokio::sync::futures::Notified<'a>),
}

/// Why openraft did not take a proposal.
type Refused = ClientWriteError<NodeId, openraft::BasicNode>;

/// A proposed batch, and where its acknowledgement will come from.
struct Sent {
    term: u64,
    ack: Ack,
    applied: oneshot::Receiver<Result<ClientWriteResponse<PartitionRaft>, Refused>>,
    appended: Option<oneshot::Receiver<(u64, u64)>>,
}

enum Leading {
    Here(u64),
    Elsewhere(String),
}

fn unacknowledged(started: Instant) -> PublishError {
    PublishError::Unacknowledged {
        waited: started.elapsed(),
    }
}

/// Whether a leader with these metrics has had no quorum's answer for [`QUORUM_LOST`]: nothing
/// it proposes can commit now.
fn without_quorum(metrics: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> bool {
    metrics
        .millis_since_quorum_ack
        .is_none_or(|ms| Duration::from_millis(ms) >= QUORUM_LOST)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Turns a replica's heartbeats back on when dropped.
struct HeartbeatsBack<'a>(&'a openraft::Raft<PartitionRaft>);

impl Drop for HeartbeatsBack<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}
