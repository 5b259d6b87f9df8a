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
//! a candidate forms only if it gathered its promises within [`GATHER_WITHIN`], far less, and a
//! release takes back only the promise of its own round. A sidecar promises only a candidate
//! with a lower id than its own, and does not stand while a lower one has called it lately, so
//! the lowest wins as soon as it sees enough. Promises are not kept on disk: a sidecar promises
//! nobody in its first [`GATHER_WITHIN`] of taking part, by when any candidate it promised
//! before a restart has decided.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sidestream_proto::peer::v1::{
    Bootstrap, BootstrapStep, PeerErrorCode, PeerRequest, peer_request,
};

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

/// This sidecar's part in forming a cluster: whether it takes part (since when), the lowest
/// id it has heard of, and its promise. Every method takes the time it acts at.
#[derive(Debug, Default)]
pub(crate) struct BootstrapState {
    inner: Mutex<Inner>,
}

/// A promise: to whom, for which of its gathering rounds, and when.
#[derive(Debug, Clone, Copy)]
struct Promise {
    candidate: NodeId,
    round: u64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    /// Since when this sidecar takes part, if it does.
    taking_part: Option<Instant>,
    /// The lowest id of another sidecar taking part that called this one, and when it last
    /// did (a caller that died stops counting after [`PROMISE_LAPSE`]).
    lowest_caller: Option<(NodeId, Instant)>,
    promised: Option<Promise>,
}

impl Inner {
    /// The promise, if it has not lapsed.
    fn promise(&mut self, now: Instant) -> Option<Promise> {
        if self
            .promised
            .is_some_and(|p| now.saturating_duration_since(p.at) >= PROMISE_LAPSE)
        {
            self.promised = None;
        }
        self.promised
    }
}

impl BootstrapState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This sidecar takes part in forming a cluster from `now` on. It promises nobody for
    /// [`GATHER_WITHIN`]: had it promised a candidate before it restarted, that candidate
    /// decides within that time, so it cannot also promise another meanwhile.
    pub(crate) fn take_part(&self, now: Instant) {
        let mut inner = self.lock();
        if inner.taking_part.is_none() {
            inner.taking_part = Some(now);
        }
    }

    /// This sidecar has stopped taking part (it formed the cluster, or joins one).
    pub(crate) fn stop(&self) {
        let mut inner = self.lock();
        inner.taking_part = None;
        inner.promised = None;
    }

    /// The answer of this sidecar (`own`; `formed` if its metadata group is formed) at `now`
    /// to `step` called by `candidate` in its gathering round `round`.
    pub(crate) fn answer(
        &self,
        own: NodeId,
        formed: bool,
        call: (BootstrapStep, NodeId, u64),
        now: Instant,
    ) -> BootstrapAnswer {
        let (step, candidate, round) = call;
        let mut inner = self.lock();
        let since = inner.taking_part.filter(|_| !formed);
        if let Some(since) = since
            && step != BootstrapStep::Probe
            && candidate != own
        {
            inner.lowest_caller = match inner.lowest_caller {
                Some((lowest, at))
                    if lowest < candidate && now.saturating_duration_since(at) < PROMISE_LAPSE =>
                {
                    Some((lowest, at))
                }
                _ => Some((candidate, now)),
            };
            let promise = inner.promise(now);
            let settled_in = now.saturating_duration_since(since) >= GATHER_WITHIN;
            match step {
                BootstrapStep::Promise
                    if settled_in
                        && candidate < own
                        && promise.is_none_or(|p| p.candidate == candidate) =>
                {
                    inner.promised = Some(Promise {
                        candidate,
                        round,
                        at: now,
                    });
                }
                // Only the round it was made for: a release that arrives late must not take
                // back the promise of the candidate's next round.
                BootstrapStep::Release
                    if promise.is_some_and(|p| p.candidate == candidate && p.round == round) =>
                {
                    inner.promised = None;
                }
                _ => {}
            }
        }
        let promised = if since.is_some() {
            inner.promise(now).map(|p| p.candidate)
        } else {
            None
        };
        BootstrapAnswer {
            node_id: own,
            formed,
            taking_part: since.is_some(),
            promised,
        }
    }

    /// The lowest id of a sidecar taking part that has called this one lately.
    fn lowest_caller(&self, now: Instant) -> Option<NodeId> {
        self.lock()
            .lowest_caller
            .filter(|(_, at)| now.saturating_duration_since(*at) < PROMISE_LAPSE)
            .map(|(id, _)| id)
    }

    /// Promises this sidecar (`own`) to itself, as a candidate, at `now`; false if it promised
    /// another.
    fn promise_self(&self, own: NodeId, now: Instant) -> bool {
        let mut inner = self.lock();
        match inner.promise(now) {
            Some(other) if other.candidate != own => false,
            _ => {
                inner.promised = Some(Promise {
                    candidate: own,
                    round: 0,
                    at: now,
                });
                true
            }
        }
    }

    /// Takes back this sidecar's promise to itself.
    fn release_self(&self, own: NodeId) {
        let mut inner = self.lock();
        if inner.promised.is_some_and(|p| p.candidate == own) {
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
    let expect = usize::try_from(expect).unwrap_or(usize::MAX);
    let mut round = 0_u64;
    loop {
        round += 1;
        let addresses = resolve_all(seeds).await;
        let answers = call_each(clients, &addresses, (own, round), BootstrapStep::Probe).await;
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
        // Only once no seed is a member: a sidecar that could join takes no part.
        state.take_part(Instant::now());
        let taking_part: BTreeMap<NodeId, String> = answers
            .into_iter()
            .filter(|(_, answer)| answer.taking_part && answer.node_id != own)
            .map(|(address, answer)| (answer.node_id, address))
            .collect();
        let seen: BTreeSet<NodeId> = taking_part.keys().copied().chain([own]).collect();
        let lowest = seen
            .iter()
            .copied()
            .chain(state.lowest_caller(Instant::now()))
            .min()
            .unwrap_or(own);
        if seen.len() >= expect && lowest == own && state.promise_self(own, Instant::now()) {
            if gather(clients, state, (own, round), &taking_part, expect).await {
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

/// Asks each sidecar of `taking_part` (by id) for its promise to this one (`own`, in its
/// gathering round `round`); true if `expect` promised, this one included, within
/// [`GATHER_WITHIN`]. Otherwise takes every promise of the round back.
async fn gather(
    clients: &PeerClients,
    state: &BootstrapState,
    (own, round): (NodeId, u64),
    taking_part: &BTreeMap<NodeId, String>,
    expect: usize,
) -> bool {
    let started = Instant::now();
    let addresses: Vec<String> = taking_part.values().cloned().collect();
    let answers = call_each(clients, &addresses, (own, round), BootstrapStep::Promise).await;
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
    let _ = call_each(clients, &granted, (own, round), BootstrapStep::Release).await;
    state.release_self(own);
    false
}

/// Makes bootstrap call `step` of this sidecar (`own`, in its round `round`) to every address
/// at once; the answers of those that answered. A sidecar that does not know the call (a
/// version before it) is a member of a cluster: only members run such versions.
async fn call_each(
    clients: &PeerClients,
    addresses: &[String],
    (own, round): (NodeId, u64),
    step: BootstrapStep,
) -> Vec<(String, BootstrapAnswer)> {
    let request = PeerRequest {
        group: None,
        body: Some(peer_request::Body::Bootstrap(Bootstrap {
            candidate: own,
            step: step.into(),
            round,
        })),
    };
    let request = &request;
    let calls = addresses.iter().map(|address| async move {
        let answer = match tokio::time::timeout(CALL_WAIT, clients.call(address, request)).await {
            Err(_) => Err(format!("no answer within {CALL_WAIT:?}")),
            Ok(Err(error)) => Err(error.to_string()),
            Ok(Ok(response)) if response.code == i32::from(PeerErrorCode::Unsupported) => {
                Ok(BootstrapAnswer {
                    node_id: 0,
                    formed: true,
                    taking_part: false,
                    promised: None,
                })
            }
            Ok(Ok(response)) if response.code != i32::from(PeerErrorCode::Ok) => {
                Err(format!("refused: {}", response.message))
            }
            Ok(Ok(response)) => super::peer::wire::from_json(&response.result, "bootstrap answer")
                .map_err(|e| e.to_string()),
        };
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

    /// A state taking part since `start`, long enough ago to promise at `start + GATHER_WITHIN`.
    fn taking_part(start: Instant) -> BootstrapState {
        let state = BootstrapState::default();
        state.take_part(start);
        state
    }

    fn ask(
        state: &BootstrapState,
        own: NodeId,
        step: BootstrapStep,
        candidate: NodeId,
        at: Instant,
    ) -> Option<NodeId> {
        state.answer(own, false, (step, candidate, 1), at).promised
    }

    #[test]
    fn a_sidecar_promises_one_lower_candidate_at_a_time() {
        let start = Instant::now();
        let now = start + GATHER_WITHIN;
        // Not taking part: no promise, whoever asks.
        let idle = BootstrapState::default();
        let refused = idle.answer(5, false, (BootstrapStep::Promise, 2, 1), now);
        assert!(!refused.taking_part);
        assert_eq!(refused.promised, None);

        let state = taking_part(start);
        // A higher candidate is refused: this sidecar would win over it.
        assert_eq!(ask(&state, 5, BootstrapStep::Promise, 7, now), None);
        assert_eq!(ask(&state, 5, BootstrapStep::Promise, 3, now), Some(3));
        // Asked again by the same candidate: still granted; another lower one is refused.
        assert_eq!(ask(&state, 5, BootstrapStep::Promise, 3, now), Some(3));
        assert_eq!(ask(&state, 5, BootstrapStep::Promise, 2, now), Some(3));
        // Only the candidate promised takes the promise back.
        assert_eq!(ask(&state, 5, BootstrapStep::Release, 2, now), Some(3));
        assert_eq!(ask(&state, 5, BootstrapStep::Release, 3, now), None);
        assert_eq!(ask(&state, 5, BootstrapStep::Promise, 2, now), Some(2));
        // Callers are remembered: the lowest one stops this sidecar from standing, for a while.
        assert_eq!(state.lowest_caller(now), Some(2));
        assert_eq!(state.lowest_caller(now + PROMISE_LAPSE), None);
        // A probe changes nothing.
        let probed = state.answer(5, false, (BootstrapStep::Probe, 1, 1), now);
        assert_eq!(probed.promised, Some(2));
        // A promise not taken back lapses.
        assert_eq!(
            ask(&state, 5, BootstrapStep::Promise, 1, now + PROMISE_LAPSE),
            Some(1)
        );
    }

    #[test]
    fn a_sidecar_that_just_started_promises_nobody() {
        let start = Instant::now();
        let state = taking_part(start);
        // It may have promised another candidate before it restarted: that one decides within
        // GATHER_WITHIN.
        assert_eq!(ask(&state, 5, BootstrapStep::Promise, 2, start), None);
        assert_eq!(
            ask(&state, 5, BootstrapStep::Promise, 2, start + GATHER_WITHIN),
            Some(2)
        );
    }

    #[test]
    fn a_late_release_does_not_take_back_a_later_rounds_promise() {
        let start = Instant::now();
        let now = start + GATHER_WITHIN;
        let state = taking_part(start);
        let call = |step, round| state.answer(5, false, (step, 2, round), now).promised;
        assert_eq!(call(BootstrapStep::Promise, 1), Some(2));
        assert_eq!(call(BootstrapStep::Release, 1), None);
        assert_eq!(call(BootstrapStep::Promise, 2), Some(2));
        // Round 1's release again (a retry that arrived late): round 2's promise holds.
        assert_eq!(call(BootstrapStep::Release, 1), Some(2));
        assert_eq!(call(BootstrapStep::Release, 2), None);
    }

    #[test]
    fn a_candidate_promised_to_itself_promises_no_other() {
        let start = Instant::now();
        let now = start + GATHER_WITHIN;
        let state = taking_part(start);
        assert!(state.promise_self(4, now));
        assert_eq!(ask(&state, 4, BootstrapStep::Promise, 2, now), Some(4));
        state.release_self(4);
        assert_eq!(ask(&state, 4, BootstrapStep::Promise, 2, now), Some(2));
        // Promised to 2: it cannot stand itself until 2 releases it.
        assert!(!state.promise_self(4, now));
        assert_eq!(ask(&state, 4, BootstrapStep::Release, 2, now), None);
        assert!(state.promise_self(4, now));
    }

    #[test]
    fn a_formed_sidecar_promises_nothing_and_says_so() {
        let start = Instant::now();
        let now = start + GATHER_WITHIN;
        let state = taking_part(start);
        let formed = state.answer(9, true, (BootstrapStep::Promise, 1, 1), now);
        assert!(formed.formed);
        assert!(!formed.taking_part);
        assert_eq!(formed.promised, None);
        state.stop();
        let stopped = state.answer(9, false, (BootstrapStep::Promise, 1, 1), now);
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
