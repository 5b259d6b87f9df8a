//! When a partition replica stands for election: a timer of Sidestream's own, re-drawn at
//! random for every round, in place of openraft's.
//!
//! openraft 0.9 draws a node's election timeout once, when its Raft starts, and checks it only
//! on its tick (every 1.5 heartbeat intervals). Two survivors of a leader whose ticks were in
//! step and whose timeouts fell within the same tick stood for election together in every term,
//! each refusing the other, for ever (seen in the replication tests: 21 split terms in 10 s).
//! Raft's cure is a new random timeout for every election, so openraft's own elections are off
//! (`enable_elect: false`) and this timer triggers them (`Raft::trigger().elect()`, which
//! openraft ignores on a leader and on a learner). The choice of *when* is all that moves here:
//! votes, terms and logs remain openraft's.
//!
//! A replica has heard from its group when a leader's append-entries call (a heartbeat or
//! entries) or snapshot call reached it, or when it granted a vote; it stands once it has heard
//! nothing for a random time in [`ELECTION_TIMEOUT`], then draws a new time before it may stand
//! again. It waits longer after meeting a replica whose log is at least as long as its own
//! ([`Heard::yield_to`]; openraft's own timer does so after a candidate refused for a longer
//! log): with no pre-vote in openraft 0.9, a replica that cannot win would otherwise keep
//! raising the term past the one that can.

use std::ops::Range;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::type_config::PartitionRaft;

/// How long a follower waits without hearing from its group before it stands for election,
/// drawn afresh for every round. Longer than the leader lease openraft keeps (the
/// `election_timeout_max` of [`partition_raft_config`](super::partition_raft_config), 250 ms),
/// so that the other followers no longer refuse a vote for the dead leader's sake; short
/// enough that a new leader is in place within the 1 s failover budget.
pub const ELECTION_TIMEOUT: Range<Duration> =
    Duration::from_millis(300)..Duration::from_millis(600);

/// When a replica last heard from its group.
#[derive(Debug)]
pub(crate) struct Heard(Mutex<Instant>);

impl Heard {
    /// Heard just now.
    pub(crate) fn new() -> Self {
        Self(Mutex::new(Instant::now()))
    }

    /// Records that the group was heard from now.
    pub(crate) fn now(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// Lets another replica stand first: one whose log is at least as long as this one's
    /// (a candidate met, or a voter that refused this one). Counts the group as heard
    /// [`YIELD`] from now, so this replica stands no sooner than `YIELD` plus a fresh timeout
    /// (600–900 ms), after the other's next try (300–600 ms).
    pub(crate) fn yield_to(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now() + YIELD;
    }

    /// When the group was last heard from (in the future after [`Heard::yield_to`]).
    fn last(&self) -> Instant {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How much longer than its timeout a replica waits before standing after it met a replica with
/// a log at least as long as its own.
///
/// openraft 0.9 has no pre-vote: a candidate raises its term whether or not it can win. A replica
/// whose log is shorter than another survivor's cannot win, yet each of its candidacies raised
/// the term past the one that could win, which was then refused for its lower term; the two took
/// turns for 8 s after a leader was killed (seen in the failover bench). Yielding lets the
/// longer log stand twice (once to learn the term, once above it) before this replica stands
/// again.
const YIELD: Duration = ELECTION_TIMEOUT.start;

/// Triggers an election of `raft` whenever it has not heard from its group for a fresh random
/// time in [`ELECTION_TIMEOUT`]; runs until the Raft stops.
pub(crate) async fn run(raft: openraft::Raft<PartitionRaft>, heard: std::sync::Arc<Heard>) {
    loop {
        let timeout = random_timeout();
        // Hearing from the group meanwhile moves the deadline on.
        loop {
            let due = heard.last() + timeout;
            if Instant::now() >= due {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        // Quiet for a whole timeout: stand (openraft ignores this on a leader or a learner).
        // A stopped Raft answers with a fatal error: the timer is done.
        if raft.trigger().elect().await.is_err() {
            return;
        }
        heard.now();
    }
}

/// How long after it last heard from its group a replica asked to stand (by a leader handing
/// over) stands: once openraft's leader lease (250 ms, `election_timeout_max`) has run out on
/// the other voters too, so that they grant their votes; before the earliest election timeout
/// of theirs ([`ELECTION_TIMEOUT`]), so that it stands first.
const STAND_AFTER: Duration = Duration::from_millis(270);

/// How long a replica asked to stand waits for its group to go quiet: a leader that goes on
/// sending heartbeats has given up handing over (it holds publishes back for at most 0.2 s
/// before it stops its heartbeats).
const STAND_WITHIN: Duration = Duration::from_millis(1500);

/// Stands for election at the request of `leader`, which hands its leadership over (it has
/// stopped proposing and sending heartbeats): once the group has been quiet for
/// [`STAND_AFTER`], within [`STAND_WITHIN`]. Whether it will: not if this replica follows
/// another leader or does not vote.
pub(crate) fn stand_for(
    raft: openraft::Raft<PartitionRaft>,
    heard: std::sync::Arc<Heard>,
    leader: super::type_config::NodeId,
) -> bool {
    {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == m.id);
        if m.current_leader != Some(leader) || !voter {
            return false;
        }
    }
    tokio::spawn(async move {
        let give_up = Instant::now() + STAND_WITHIN;
        loop {
            let due = heard.last() + STAND_AFTER;
            if Instant::now() >= due {
                break;
            }
            if due > give_up {
                return;
            }
            tokio::time::sleep_until(due.into()).await;
        }
        tracing::info!(
            from = leader,
            "standing for election: the leader hands over"
        );
        if raft.trigger().elect().await.is_ok() {
            heard.now();
        }
    });
    true
}

/// A random time in [`ELECTION_TIMEOUT`].
fn random_timeout() -> Duration {
    let span = ELECTION_TIMEOUT.end.saturating_sub(ELECTION_TIMEOUT.start);
    let (random, _) = uuid::Uuid::new_v4().as_u64_pair();
    let micros = u64::try_from(span.as_micros()).unwrap_or(u64::MAX).max(1);
    ELECTION_TIMEOUT.start + Duration::from_micros(random % micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_drawn_in_range_and_differ() {
        let drawn: Vec<Duration> = (0..64).map(|_| random_timeout()).collect();
        assert!(drawn.iter().all(|t| ELECTION_TIMEOUT.contains(t)));
        let distinct: std::collections::BTreeSet<_> = drawn.iter().collect();
        assert!(distinct.len() > 32, "{distinct:?}");
    }
}
