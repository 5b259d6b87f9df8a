//! A cluster member's replicated topics, kept in step with the cluster's metadata.
//!
//! The metadata log says which topics exist and which nodes hold each partition's replicas;
//! this task makes the sidecar's topics say the same: for each topic it opens its own replicas
//! (under `replicas/<name>-<id>/<partition>/`) and notes where the others are; for a topic
//! deleted it stops its replicas and removes their files.
//!
//! ```text
//!   metadata log ─▶ ClusterState (watch) ─▶ reconcile ─▶ Topics: install / uninstall
//!                                                └──────▶ ClusterMember: open_replica / close_replica
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::cluster::{ClusterMember, ClusterTopic};
use crate::groups::Groups;
use crate::topics::{Kind, Partition, Replicated, Stranded, Topic, Topics, log_config};

/// The largest batch a replica's log takes: the largest a peer frame carries.
const REPLICATED_BATCH_LIMIT: usize = 256 << 20;

/// Keeps `topics` in step with the cluster's metadata until `shutdown` turns true.
pub(super) async fn reconcile(
    cluster: Arc<ClusterMember>,
    topics: Arc<Topics>,
    groups: Arc<Groups>,
    root: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state = cluster.watch_state();
    let mut swept = false;
    loop {
        let now = state.borrow_and_update().clone();
        let reshaping = topics.reshaping().await;
        for topic in topics.all() {
            let Some(id) = topic.id() else { continue };
            let current = now.topics.get(&topic.spec().name).map(|t| t.id.as_str());
            if current != Some(id) {
                remove(&cluster, &topics, &groups, &topic).await;
            }
        }
        for (name, wanted) in &now.topics {
            if *shutdown.borrow() {
                return;
            }
            let held = topics.get(name);
            let same = held.as_deref().and_then(Topic::id) == Some(wanted.id.as_str());
            if !same {
                if let Some(older) = held.as_ref().filter(|t| t.id().is_some()) {
                    remove(&cluster, &topics, &groups, older).await;
                }
                open(&cluster, &topics, &root, wanted, None).await;
            } else if let Some(held) = held
                && placement(&held) != wanted.replicas
            {
                // Replicas moved (a node left): open the ones now here, close the ones gone.
                open(&cluster, &topics, &root, wanted, Some(&held)).await;
            }
        }
        topics.set_reconciled(now.applied_offset);
        drop(reshaping);
        if !swept
            && cluster.metadata_caught_up()
            && cluster.state().applied_offset == now.applied_offset
        {
            swept = true;
            let (root, topics, now) = (root.clone(), Arc::clone(&topics), now.clone());
            let me = cluster.node_id();
            let _ = tokio::task::spawn_blocking(move || sweep(&root, &topics, &now, me)).await;
        }
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|down| *down) => return,
        }
    }
}

/// Removes the replica directories under `root` that the metadata no longer accounts for:
/// of topics deleted, and of replicas moved to other nodes, while this node was away. Called
/// once this node has applied its whole metadata log and opened what it names: a topic whose
/// replica this node held is then known again, unless it was deleted. A replica placed on this
/// node `me` stays, even one that could not be opened.
fn sweep(
    root: &std::path::Path,
    topics: &Topics,
    state: &crate::cluster::ClusterState,
    me: crate::cluster::NodeId,
) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(wanted) = state.topics.values().find(|t| t.group_name() == name) else {
            tracing::info!(dir = %entry.path().display(), "removing the replicas of a topic deleted while this node was away");
            topics.discard(&entry.path());
            continue;
        };
        let Some(installed) = topics
            .get(&wanted.spec.name)
            .filter(|t| t.id() == Some(wanted.id.as_str()))
        else {
            continue;
        };
        let Ok(partitions) = std::fs::read_dir(entry.path()) else {
            continue;
        };
        for partition in partitions.flatten() {
            let number = partition.file_name().to_string_lossy().parse::<u32>().ok();
            let moved = number
                .and_then(|n| installed.partition(n))
                .is_some_and(|p| matches!(p.kind(), Kind::Remote(set) if !set.contains(&me)));
            if moved {
                tracing::info!(dir = %partition.path().display(), "removing a replica moved to another node while this node was away");
                topics.discard(&partition.path());
            }
        }
    }
}

/// Each partition's replica set as `topic` holds it.
fn placement(topic: &Topic) -> Vec<Vec<u64>> {
    topic
        .partitions()
        .iter()
        .map(|p| match p.kind() {
            Kind::Replicated(replicated) => replicated.replicas(),
            Kind::Remote(replicas) => replicas.clone(),
            Kind::Local(_) => Vec::new(),
        })
        .collect()
}

/// Opens this node's replicas of `wanted` and installs the topic; with `held`, the topic as
/// installed so far (its replica sets changed): partitions whose replica is here stay the
/// same objects and take their new set (a replica moved away keeps serving as a voter until
/// its group no longer counts it: `converge` then stops it), new replicas here are opened.
async fn open(
    cluster: &ClusterMember,
    topics: &Topics,
    root: &std::path::Path,
    wanted: &ClusterTopic,
    held: Option<&Arc<Topic>>,
) {
    let dir = root.join(wanted.group_name());
    let mut config = log_config(&wanted.spec, topics.settings());
    // The leader checked each batch's size against its own limit: a follower takes what its
    // leader took (whatever its own setting), or its Raft would stop at the batch.
    config.max_batch_bytes = REPLICATED_BATCH_LIMIT;
    let me = cluster.node_id();
    let mut partitions = Vec::with_capacity(wanted.replicas.len());
    for (number, set) in (0_u32..).zip(&wanted.replicas) {
        let before = held.and_then(|topic| topic.partition(number));
        if let Some(before) = before
            && let Kind::Replicated(replicated) = before.kind()
        {
            // Same replica, same publishers' table: only its set changes.
            replicated.set_replicas(set.clone());
            partitions.push(Arc::clone(before));
            continue;
        }
        if !set.contains(&me) {
            partitions.push(Arc::new(Partition::remote(number, set.clone())));
            continue;
        }
        let partition_dir = dir.join(number.to_string());
        match cluster
            .open_replica(wanted, number, &partition_dir, config.clone())
            .await
        {
            Ok(replica) => partitions.push(Arc::new(Partition::replicated(
                number,
                Replicated::new(me, set.clone(), replica),
            ))),
            Err(error) => {
                // The other replicas serve it; this node passes its requests on to them.
                tracing::error!(topic = %wanted.spec.name, partition = number, %error, "cannot open this node's replica; serving the partition through the others");
                partitions.push(Arc::new(Partition::remote(number, set.clone())));
            }
        }
    }
    if let Some(held) = held {
        topics.replace(Arc::new(held.with_partitions(partitions)));
        return;
    }
    tracing::info!(topic = %wanted.spec.name, partitions = partitions.len(), "replicated topic opened");
    topics.install(Arc::new(Topic::replicated(
        dir,
        wanted.id.clone(),
        wanted.spec.clone(),
        partitions,
    )));
}

/// Stops the replicas of `topic` that were moved away and that their groups no longer count
/// as voters, removes their files (through the trash), and serves those partitions as held
/// elsewhere from then on.
async fn drain(cluster: &ClusterMember, topics: &Arc<Topics>, topic: &Topic) {
    let Some(id) = topic.id() else { return };
    let _reshaping = topics.reshaping().await;
    let Some(topic) = installed(topics, &topic.spec().name, id) else {
        return;
    };
    let group = format!("{}-{id}", topic.spec().name);
    let mut changed = false;
    let mut partitions = Vec::with_capacity(topic.partitions().len());
    for partition in topic.partitions() {
        let Kind::Replicated(replicated) = partition.kind() else {
            partitions.push(Arc::clone(partition));
            continue;
        };
        if !replicated.drained() {
            partitions.push(Arc::clone(partition));
            continue;
        }
        partition.close("this sidecar no longer holds a replica of the partition (it moved to another node); subscribe again");
        cluster.close_replica(&group, partition.number()).await;
        let doomed = topic.dir().join(partition.number().to_string());
        let trash = Arc::clone(topics);
        let _ = tokio::task::spawn_blocking(move || trash.discard(&doomed)).await;
        tracing::info!(topic = %topic.spec().name, partition = partition.number(), "replica moved away from this node");
        partitions.push(Arc::new(Partition::remote(
            partition.number(),
            replicated.replicas(),
        )));
        changed = true;
    }
    if changed {
        topics.replace(Arc::new(topic.with_partitions(partitions)));
    }
}

/// The topic installed under `name`, if it is still instance `id`.
fn installed(topics: &Topics, name: &str, id: &str) -> Option<Arc<Topic>> {
    topics.get(name).filter(|topic| topic.id() == Some(id))
}

/// Restarts this node's replica of each partition of `topic` numbered in `stranded` as its
/// group's only voter, if the group is still cut off (its other voter left the cluster for
/// good: see `Replicated::stranded`), and serves the partition through the new replica;
/// subscriptions of the old one end with a message that says to subscribe again. The
/// group's new leader then takes the partition's other replicas in (`converge`).
async fn recover(
    cluster: &ClusterMember,
    topics: &Topics,
    topic: &Topic,
    stranded: &[u32],
    departed: &std::collections::BTreeSet<crate::cluster::NodeId>,
) {
    let Some(id) = topic.id() else { return };
    if stranded.is_empty() {
        return;
    }
    let _reshaping = topics.reshaping().await;
    let Some(topic) = installed(topics, &topic.spec().name, id) else {
        return;
    };
    let group = format!("{}-{id}", topic.spec().name);
    let mut partitions = topic.partitions().to_vec();
    let mut changed = false;
    for &number in stranded {
        let Some(slot) = partitions.iter_mut().find(|p| p.number() == number) else {
            continue;
        };
        let Kind::Replicated(replicated) = slot.kind() else {
            continue;
        };
        // Judged a moment ago (other partitions' changes may have taken a while since).
        if !replicated.cut_off(departed) {
            continue;
        }
        let dir = topic.dir().join(number.to_string());
        let replica = replicated.replica().clone();
        match cluster.restart_alone(&group, number, &dir, replica).await {
            Ok(replica) => {
                slot.close("the partition's replica on this sidecar restarted as its only voter (its other replicas left the cluster for good); subscribe again");
                let me = cluster.node_id();
                let replicated = Replicated::new(me, replicated.replicas(), replica);
                *slot = Arc::new(Partition::replicated(number, replicated));
                changed = true;
            }
            Err(error) => {
                tracing::error!(topic = %topic.spec().name, partition = number, %error, "cannot restart a replica whose group lost its other voter; this node serves the partition only once a retry succeeds");
            }
        }
    }
    if changed {
        topics.replace(Arc::new(topic.with_partitions(partitions)));
    }
}

/// How often a member checks that the partitions it leads have the replica sets the
/// metadata names.
const CONVERGE_EVERY: Duration = Duration::from_secs(1);

/// Makes the Raft group of every partition this member leads match the replica set the
/// metadata names (a replica moved after a node left), one partition at a time, until
/// `shutdown` turns true.
pub(super) async fn converge(
    cluster: Arc<ClusterMember>,
    topics: Arc<Topics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        // Metadata behind the group (a restart): changing the group now could undo a move. A
        // node that left is cut off from the metadata, whose last word it has: it hands the
        // partitions it leads over.
        let state = cluster.state();
        let ready = state.departed.contains(&cluster.node_id())
            || (cluster.metadata_caught_up() && topics.reconciled() >= state.applied_offset);
        for topic in topics.all() {
            let mut stranded = Vec::new();
            for partition in topic.partitions().iter().filter(|_| ready) {
                if *shutdown.borrow() {
                    return;
                }
                let Kind::Replicated(replicated) = partition.kind() else {
                    continue;
                };
                match replicated.stranded(&state.departed) {
                    Stranded::No => {}
                    Stranded::Waiting => continue,
                    Stranded::Now => {
                        stranded.push(partition.number());
                        continue;
                    }
                }
                if let Err(reason) = replicated.converge(&state.nodes).await {
                    tracing::warn!(topic = %topic.spec().name, partition = partition.number(), %reason, "replica set change not done yet");
                }
                balance(&cluster, &topic, partition.number(), replicated, &state).await;
            }
            drain(&cluster, &topics, &topic).await;
            recover(&cluster, &topics, &topic, &stranded, &state.departed).await;
        }
        tokio::select! {
            () = tokio::time::sleep(CONVERGE_EVERY) => {}
            _ = shutdown.wait_for(|down| *down) => return,
        }
    }
}

/// Hands the leadership of a partition this node leads over to its preferred replica (the
/// replica set's first) once that one has kept up for a while: leaders spread over the nodes
/// as the placement spreads preferred replicas, after restarts and failovers too.
async fn balance(
    cluster: &ClusterMember,
    topic: &Topic,
    partition: u32,
    replicated: &Replicated,
    state: &crate::cluster::ClusterState,
) {
    let Some(to) = replicated.balance_due() else {
        return;
    };
    let (Some(id), Some(node)) = (topic.id(), state.nodes.get(&to)) else {
        return;
    };
    let group = format!("{}-{id}", topic.spec().name);
    let ask = cluster.ask_to_stand(&group, partition, to, &node.peer_address);
    match replicated.hand_over(to, ask).await {
        Ok(true) => {}
        Ok(false) => replicated.balance_failed(),
        Err(reason) => {
            replicated.balance_failed();
            tracing::warn!(topic = %topic.spec().name, partition, to, %reason, "leadership not handed over to the preferred replica");
        }
    }
}

/// Before this node stops (a rolling restart, an upgrade): hands the leadership of every
/// partition it leads over to the other voter that holds the most of its log, all at once,
/// within `wait`, so that publishes move to the new leaders without waiting out an election
/// timeout. Returns how many of those it led moved.
pub(crate) async fn hand_away(cluster: &ClusterMember, topics: &Topics, wait: Duration) -> usize {
    let state = cluster.state();
    let mut handovers = Vec::new();
    for topic in topics.all() {
        let Some(id) = topic.id() else { continue };
        for partition in topic.partitions() {
            let Kind::Replicated(replicated) = partition.kind() else {
                continue;
            };
            let Some(to) = replicated.successor() else {
                continue;
            };
            let Some(node) = state.nodes.get(&to) else {
                continue;
            };
            let group = format!("{}-{id}", topic.spec().name);
            let number = partition.number();
            let address = node.peer_address.clone();
            let partition = Arc::clone(partition);
            let name = topic.spec().name.clone();
            handovers.push(async move {
                let Kind::Replicated(replicated) = partition.kind() else {
                    return false;
                };
                let ask = cluster.ask_to_stand(&group, number, to, &address);
                match replicated.hand_over(to, ask).await {
                    Ok(moved) => moved,
                    Err(reason) => {
                        tracing::warn!(topic = %name, partition = number, to, %reason, "leadership not handed over before stopping");
                        false
                    }
                }
            });
        }
    }
    if handovers.is_empty() {
        return 0;
    }
    let led = handovers.len();
    // Counted as each ends: those that moved before the bound count even if others did not.
    let moved = std::sync::atomic::AtomicUsize::new(0);
    let counted = handovers.into_iter().map(|handover| {
        let moved = &moved;
        async move {
            if handover.await {
                moved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    });
    let _ = tokio::time::timeout(wait, futures_util::future::join_all(counted)).await;
    let moved = moved.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        led,
        moved,
        "handed partition leadership over before stopping"
    );
    moved
}

/// Uninstalls `topic`, stops this node's replicas of it and removes their files.
async fn remove(
    cluster: &ClusterMember,
    topics: &Arc<Topics>,
    groups: &Groups,
    topic: &Arc<Topic>,
) {
    let Some(id) = topic.id() else { return };
    topics.uninstall(&topic.spec().name, id);
    // Each member keeps the offsets of the groups it served: a topic created again under the
    // name must not start from them.
    if let Err(error) = groups.forget_topic(&topic.spec().name).await {
        tracing::error!(topic = %topic.spec().name, %error, "cannot forget the group offsets of a deleted topic");
    }
    let group = format!("{}-{id}", topic.spec().name);
    for partition in topic.partitions() {
        if matches!(partition.kind(), Kind::Replicated(_)) {
            cluster.close_replica(&group, partition.number()).await;
        }
    }
    let topics = Arc::clone(topics);
    let dir = topic.dir().to_path_buf();
    let _ = tokio::task::spawn_blocking(move || topics.discard(&dir)).await;
    tracing::info!(topic = %topic.spec().name, "replicated topic removed");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterState;
    use crate::topics::{Cleanup, LogSettings, TopicSpec};

    fn spec(name: &str) -> TopicSpec {
        TopicSpec {
            name: name.to_owned(),
            partitions: 2,
            replication_factor: 1,
            retention_ms: -1,
            retention_bytes: -1,
            cleanup: Cleanup::Delete,
            fsync: sidestream_log::FsyncPolicy::Always,
        }
    }

    #[test]
    fn sweeping_removes_replicas_the_metadata_no_longer_names() {
        let dir = tempfile::tempdir().unwrap();
        let topics = Topics::open(dir.path(), LogSettings::default()).unwrap();
        let root = dir.path().join("replicas");
        for partition in ["kept-a/0", "kept-a/1", "kept-a/9", "gone-b/0"] {
            std::fs::create_dir_all(root.join(partition)).unwrap();
        }
        // Topic `kept` (instance `a`): partition 1 moved to node 2 while this node (node 1) was
        // away; partition 0 is placed here but could not be opened. Topic `gone` was deleted
        // meanwhile.
        let kept = ClusterTopic {
            spec: spec("kept"),
            id: "a".to_owned(),
            replicas: vec![vec![1], vec![2]],
            created: vec![vec![1], vec![1]],
        };
        let mut state = ClusterState::default();
        state.topics.insert("kept".to_owned(), kept);
        let installed = Topic::replicated(
            root.join("kept-a"),
            "a".to_owned(),
            spec("kept"),
            vec![
                Arc::new(Partition::remote(0, vec![1])),
                Arc::new(Partition::remote(1, vec![2])),
            ],
        );
        topics.install(Arc::new(installed));

        sweep(&root, &topics, &state, 1);
        assert!(!root.join("gone-b").exists());
        assert!(!root.join("kept-a/1").exists());
        // A replica placed here stays, and what the topic does not know.
        assert!(root.join("kept-a/0").exists());
        assert!(root.join("kept-a/9").exists());
    }
}
