//! Forming a cluster from sidecars started together, all with the same settings: a Kubernetes
//! `DaemonSet`'s pods, each given the same seeds (a headless Service's DNS name) and no data.
//! None of them can be the one started without seeds, so they agree on which forms it.
//!
//! ```text
//!   fresh sidecar, seeds, bootstrap_expect = N
//!     │ every round: resolve the seeds (a name stands for each of its addresses), probe each
//!     ├─ a seed is a member (or joining) ─────────────▶ join through it, as any fresh sidecar
//!     ├─ fewer than N taking part, or a lower id seen ─▶ wait, probe again
//!     └─ lowest id of ≥ N taking part: ask each for a promise
//!          ├─ N promised (itself included) ──────────▶ form the cluster alone; the others
//!          │                                          find it formed and join it
//!          └─ fewer ───────────────────────────────────▶ release them, back off, probe again
//! ```
//!
//! Each sidecar promises one candidate at a time (itself, while it is one), so two candidates
//! cannot both gather N promises when N is more than half of the sidecars taking part: set
//! `bootstrap_expect` to the number of sidecars started together (or to more than half of
//! them). A promise a candidate does not take back (it died) lapses after [`PROMISE_LAPSE`];
//! a candidate forms only if it gathered its promises within [`GATHER_WITHIN`], far less. A
//! sidecar promises only a candidate with a lower id than its own, and does not stand while a
//! lower one has called it in that time, so the lowest wins as soon as it sees enough. Promises are not kept on disk: a sidecar restarted while the cluster
//! forms has promised no one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sidestream_proto::peer::v1::{Bootstrap, BootstrapStep, peer_request};

use super::peer::PeerClients;
use super::type_config::NodeId;

/// How long a promise holds if its candidate does not take it back or form the cluster.
pub(crate) const PROMISE_LAPSE: Duration = Duration::from_secs(30);

/// The longest a candidate may take from its first promise asked to its decision; past it,
/// it releases what it gathered and tries again (a promise older than [`PROMISE_LAPSE`] could
/// have lapsed by then).
pub(crate) const GATHER_WITHIN: Duration = Duration::from_secs(5);

/// How long a probe or a promise call may take.
const CALL_WAIT: Duration = Duration::from_secs(2);

/// Between two rounds of probes.
const ROUND_PAUSE: Duration = Duration::from_millis(500);

/// Where this sidecar stands in forming a cluster, as its peers are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BootstrapAnswer {
    /// The callee's node id.
    pub(crate) node_id: NodeId,
    /// The callee is a member of a cluster, or joining one (its metadata replica is open).
    pub(crate) formed: bool,
    /// The callee, fresh, takes part in forming a cluster.
    pub(crate) taking_part: bool,
    /// The candidate the callee promised, after the call.
    pub(crate) promised: Option<NodeId>,
}

/// This sidecar's part in forming a cluster: whether it takes part, the lowest id it has heard
/// of, and its promise.
#[derive(Debug, Default)]
pub(crate) struct BootstrapState {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    taking_part: bool,
    /// The lowest id of another sidecar taking part that called this one, and when it last
    /// did (a caller that died stops counting after [`PROMISE_LAPSE`]).
    lowest_caller: Option<(NodeId, Instant)>,
    /// The candidate promised, and when.
    promised: Option<(NodeId, Instant)>,
}

impl Inner {
    /// The candidate promised, if the promise has not lapsed.
    fn promised(&mut self, now: Instant) -> Option<NodeId> {
        if self
            .promised
            .is_some_and(|(_, at)| now.duration_since(at) >= PROMISE_LAPSE)
        {
            self.promised = None;
        }
        self.promised.map(|(candidate, _)| candidate)
    }
}

impl BootstrapState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This sidecar takes part in forming a cluster from now on.
    pub(crate) fn take_part(&self) {
        self.lock().taking_part = true;
    }

    /// This sidecar has stopped taking part (it formed the cluster, or joins one).
    pub(crate) fn stop(&self) {
        let mut inner = self.lock();
        inner.taking_part = false;
        inner.promised = None;
    }

    /// The answer of this sidecar (`own`; `formed` if its metadata replica is open) to a
    /// `step` called by `candidate`.
    pub(crate) fn answer(
        &self,
        own: NodeId,
        formed: bool,
        step: BootstrapStep,
        candidate: NodeId,
    ) -> BootstrapAnswer {
        let now = Instant::now();
        let mut inner = self.lock();
        let taking_part = inner.taking_part && !formed;
        if taking_part && step != BootstrapStep::Probe && candidate != own {
            inner.lowest_caller = match inner.lowest_caller {
                Some((lowest, at))
                    if lowest < candidate && now.duration_since(at) < PROMISE_LAPSE =>
                {
                    Some((lowest, at))
                }
                _ => Some((candidate, now)),
            };
            let promised = inner.promised(now);
            match step {
                BootstrapStep::Promise
                    if candidate < own && promised.is_none_or(|p| p == candidate) =>
                {
                    inner.promised = Some((candidate, now));
                }
                BootstrapStep::Release if promised == Some(candidate) => inner.promised = None,
                _ => {}
            }
        }
        let promised = if taking_part {
            inner.promised(now)
        } else {
            None
        };
        BootstrapAnswer {
            node_id: own,
            formed,
            taking_part,
            promised,
        }
    }

    /// The lowest id of a sidecar taking part that has called this one.
    fn lowest_caller(&self) -> Option<NodeId> {
        self.lock()
            .lowest_caller
            .filter(|(_, at)| at.elapsed() < PROMISE_LAPSE)
            .map(|(id, _)| id)
    }

    /// Promises this sidecar (`own`) to itself, as a candidate; false if it promised another.
    fn promise_self(&self, own: NodeId) -> bool {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.promised(now) {
            Some(other) if other != own => false,
            _ => {
                inner.promised = Some((own, now));
                true
            }
        }
    }

    /// Takes back this sidecar's promise to itself.
    fn release_self(&self, own: NodeId) {
        let mut inner = self.lock();
        if inner
            .promised
            .is_some_and(|(candidate, _)| candidate == own)
        {
            inner.promised = None;
        }
    }
}

/// What a fresh sidecar taking part does once the sidecars agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Form the cluster alone: the others join it.
    Form,
    /// Join the cluster through these peer addresses, which are members (or joining).
    Join(Vec<String>),
}

/// Takes part in forming a cluster until this sidecar (`own`, at `own_address`) forms it or
/// finds it formed: probes every address of `seeds` each round, and asks for promises when it
/// is the lowest id of at least `expect` sidecars taking part.
pub(crate) async fn settle(
    clients: &PeerClients,
    state: &BootstrapState,
    own: NodeId,
    seeds: &[String],
    expect: u32,
) -> Settled {
    state.take_part();
    let expect = usize::try_from(expect).unwrap_or(usize::MAX);
    let mut round = 0_u64;
    loop {
        round += 1;
        let addresses = resolve_all(seeds).await;
        let answers = call_each(clients, &addresses, own, BootstrapStep::Probe).await;
        let formed: Vec<String> = answers
            .iter()
            .filter(|(_, answer)| answer.formed && answer.node_id != own)
            .map(|(address, _)| address.clone())
            .collect();
        if !formed.is_empty() {
            state.stop();
            tracing::info!(node = own, members = ?formed, "found the cluster formed: joining it");
            return Settled::Join(formed);
        }
        let taking_part: BTreeMap<NodeId, String> = answers
            .into_iter()
            .filter(|(_, answer)| answer.taking_part && answer.node_id != own)
            .map(|(address, answer)| (answer.node_id, address))
            .collect();
        let seen: BTreeSet<NodeId> = taking_part.keys().copied().chain([own]).collect();
        let lowest = seen
            .iter()
            .copied()
            .chain(state.lowest_caller())
            .min()
            .unwrap_or(own);
        if seen.len() >= expect && lowest == own && state.promise_self(own) {
            if gather(clients, state, own, &taking_part, expect).await {
                state.stop();
                tracing::info!(node = own, sidecars = ?seen, "forming the cluster: the sidecars taking part agreed");
                return Settled::Form;
            }
            // Apart, so that two candidates that see each other late do not keep colliding.
            tokio::time::sleep(ROUND_PAUSE + jitter(own, round)).await;
            continue;
        }
        if round.is_multiple_of(20) {
            tracing::info!(
                node = own,
                expect,
                seen = ?seen,
                "waiting for the sidecars that form the cluster together (cluster.bootstrap_expect)"
            );
        }
        tokio::time::sleep(ROUND_PAUSE).await;
    }
}

/// Asks each sidecar of `taking_part` (by id) for its promise; true if `expect` promised,
/// this one included, within [`GATHER_WITHIN`]. Otherwise takes every promise back.
async fn gather(
    clients: &PeerClients,
    state: &BootstrapState,
    own: NodeId,
    taking_part: &BTreeMap<NodeId, String>,
    expect: usize,
) -> bool {
    let started = Instant::now();
    let addresses: Vec<String> = taking_part.values().cloned().collect();
    let answers = call_each(clients, &addresses, own, BootstrapStep::Promise).await;
    let granted: Vec<String> = answers
        .into_iter()
        .filter(|(_, answer)| answer.promised == Some(own))
        .map(|(address, _)| address)
        .collect();
    if granted.len() + 1 >= expect && started.elapsed() < GATHER_WITHIN {
        return true;
    }
    tracing::debug!(
        node = own,
        granted = granted.len() + 1,
        expect,
        "not enough promises to form the cluster: taking them back"
    );
    let _ = call_each(clients, &granted, own, BootstrapStep::Release).await;
    state.release_self(own);
    false
}

/// Makes bootstrap call `step` to every address at once; the answers of those that answered.
async fn call_each(
    clients: &PeerClients,
    addresses: &[String],
    own: NodeId,
    step: BootstrapStep,
) -> Vec<(String, BootstrapAnswer)> {
    let calls = addresses.iter().map(|address| async move {
        let body = peer_request::Body::Bootstrap(Bootstrap {
            candidate: own,
            step: step.into(),
        });
        let answer = clients
            .call_json::<BootstrapAnswer>(address, None, body, "bootstrap answer", CALL_WAIT)
            .await;
        match answer {
            Ok(answer) => Some((address.clone(), answer)),
            Err(error) => {
                tracing::debug!(%address, %error, "no bootstrap answer");
                None
            }
        }
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Every address the seeds stand for, as `ip:port`, in order and once each: a seed that is
/// an address stands for itself, a DNS name for each address it resolves to now. A name that
/// does not resolve (yet: a Service whose pods are not up) stands for none.
pub(crate) async fn resolve_all(seeds: &[String]) -> Vec<String> {
    let mut addresses = Vec::new();
    for seed in seeds {
        if seed.parse::<std::net::SocketAddr>().is_ok() {
            addresses.push(seed.clone());
            continue;
        }
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(resolved) => addresses.extend(resolved.map(|addr| addr.to_string())),
            Err(error) => tracing::debug!(%seed, %error, "seed does not resolve"),
        }
    }
    let mut seen = BTreeSet::new();
    addresses.retain(|address| seen.insert(address.clone()));
    addresses
}

/// A pause of up to 1 s that differs between sidecars and rounds.
fn jitter(own: NodeId, round: u64) -> Duration {
    let mixed = (own ^ round.rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    Duration::from_millis((mixed >> 32) % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(
        state: &BootstrapState,
        own: NodeId,
        step: BootstrapStep,
        candidate: NodeId,
    ) -> BootstrapAnswer {
        state.answer(own, false, step, candidate)
    }

    #[test]
    fn a_sidecar_promises_one_lower_candidate_at_a_time() {
        let state = BootstrapState::default();
        // Not taking part: no promise, whoever asks.
        let refused = answer(&state, 5, BootstrapStep::Promise, 2);
        assert!(!refused.taking_part);
        assert_eq!(refused.promised, None);

        state.take_part();
        // A higher candidate is refused: this sidecar would win over it.
        assert_eq!(answer(&state, 5, BootstrapStep::Promise, 7).promised, None);
        assert_eq!(
            answer(&state, 5, BootstrapStep::Promise, 3).promised,
            Some(3)
        );
        // Asked again by the same candidate: still granted; another lower one is refused.
        assert_eq!(
            answer(&state, 5, BootstrapStep::Promise, 3).promised,
            Some(3)
        );
        assert_eq!(
            answer(&state, 5, BootstrapStep::Promise, 2).promised,
            Some(3)
        );
        // Only the candidate promised takes the promise back.
        assert_eq!(
            answer(&state, 5, BootstrapStep::Release, 2).promised,
            Some(3)
        );
        assert_eq!(answer(&state, 5, BootstrapStep::Release, 3).promised, None);
        assert_eq!(
            answer(&state, 5, BootstrapStep::Promise, 2).promised,
            Some(2)
        );
        // Callers are remembered: the lowest one stops this sidecar from standing.
        assert_eq!(state.lowest_caller(), Some(2));
        // A probe changes nothing.
        let probed = answer(&state, 5, BootstrapStep::Probe, 1);
        assert_eq!(probed.promised, Some(2));
        assert_eq!(state.lowest_caller(), Some(2));
    }

    #[test]
    fn a_candidate_promised_to_itself_promises_no_other() {
        let state = BootstrapState::default();
        state.take_part();
        assert!(state.promise_self(4));
        assert_eq!(
            answer(&state, 4, BootstrapStep::Promise, 2).promised,
            Some(4)
        );
        state.release_self(4);
        assert_eq!(
            answer(&state, 4, BootstrapStep::Promise, 2).promised,
            Some(2)
        );
        // Promised to 2: it cannot stand itself until 2 releases it.
        assert!(!state.promise_self(4));
        assert_eq!(answer(&state, 4, BootstrapStep::Release, 2).promised, None);
        assert!(state.promise_self(4));
    }

    #[test]
    fn a_formed_sidecar_promises_nothing_and_says_so() {
        let state = BootstrapState::default();
        state.take_part();
        let formed = state.answer(9, true, BootstrapStep::Promise, 1);
        assert!(formed.formed);
        assert!(!formed.taking_part);
        assert_eq!(formed.promised, None);
        state.stop();
        let stopped = answer(&state, 9, BootstrapStep::Promise, 1);
        assert!(!stopped.taking_part);
        assert_eq!(stopped.promised, None);
    }

    #[tokio::test]
    async fn seeds_stand_for_every_address_once() {
        let seeds = [
            "127.0.0.1:7401".to_owned(),
            "localhost:7401".to_owned(),
            "127.0.0.2:7401".to_owned(),
            "no-such-host.invalid:7401".to_owned(),
        ];
        let addresses = resolve_all(&seeds).await;
        assert_eq!(
            addresses.first().map(String::as_str),
            Some("127.0.0.1:7401")
        );
        assert!(
            addresses.contains(&"127.0.0.2:7401".to_owned()),
            "{addresses:?}"
        );
        assert_eq!(
            addresses.iter().filter(|a| *a == "127.0.0.1:7401").count(),
            1,
            "{addresses:?}"
        );
        assert!(
            !addresses.iter().any(|a| a.contains("invalid")),
            "{addresses:?}"
        );
    }
}
