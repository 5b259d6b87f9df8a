//! The cluster's metadata: a replicated log of commands, folded into [`ClusterState`].
//!
//! The metadata group is a Raft group like a partition's (the same log store, state machine and
//! peer calls) over the internal topic [`METADATA_TOPIC`], partition 0, as Kafka's `KRaft` keeps
//! its metadata in the `__cluster_metadata` topic. Each command is one record whose value is
//! the command's JSON; every member folds the committed records, in offset order, into the same
//! state. Its voters are the first three nodes to join, and the first five once five have (the
//! fourth follows as a learner until the fifth comes, as four voters tolerate no more failures
//! than three); later ones follow as learners, so a large cluster does not make a large voting
//! group.
//!
//! ```text
//!   join / topic admin ─▶ metadata leader: client_write(command batch) ─▶ committed on a majority
//!                                                                              │
//!   every member: follow() reads below its high watermark ─▶ ClusterState (watch) ◀─ readers
//! ```

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sidestream_log::{BatchBody, RecordBatch};
use tokio::sync::watch;

use super::replica::PartitionReplica;
use super::type_config::{NodeId, PartitionWrite};
use crate::topics::TopicSpec;

/// The internal topic whose partition 0 holds the cluster's metadata log.
pub const METADATA_TOPIC: &str = "__cluster";

/// The most voters the metadata group has: five once five nodes have joined, so that any two
/// of them may be down at once (as any two replicas of a partition of five may).
pub const MAX_VOTERS: usize = 5;

/// A change to the cluster's metadata: one record of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
#[non_exhaustive]
pub enum MetadataCommand {
    /// A node is a member, reachable at these addresses (a later registration of the same id
    /// replaces the addresses).
    RegisterNode {
        /// The node.
        node_id: NodeId,
        /// Where other sidecars reach it.
        peer_address: String,
        /// Where services reach it.
        client_address: String,
    },
    /// A node left the cluster.
    DeregisterNode {
        /// The node.
        node_id: NodeId,
    },
    /// A topic was created: its settings, its instance id and where its partitions live.
    CreateTopic {
        /// The topic's settings.
        spec: TopicSpec,
        /// The topic instance's id (32 hex digits): a topic deleted and created again under
        /// the same name is another instance, with other Raft groups and other files.
        id: String,
        /// Each partition's replica set, preferred leader first.
        replicas: Vec<Vec<NodeId>>,
    },
    /// A topic was deleted.
    DeleteTopic {
        /// The topic's name.
        name: String,
        /// The instance deleted (a later instance of the same name is not).
        id: String,
    },
}

impl MetadataCommand {
    /// The command as the batch proposed to the metadata group.
    pub(crate) fn to_write(&self) -> PartitionWrite {
        let json = serde_json::to_vec(self).unwrap_or_default();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let batch = RecordBatch::from_records([(None, Some(Bytes::from(json)), now_ms)]);
        // A batch of one small record always encodes.
        PartitionWrite::from(Bytes::from(batch.encode().unwrap_or_default()))
    }
}

/// A node as the metadata log describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Where other sidecars reach it.
    pub peer_address: String,
    /// Where services reach it.
    pub client_address: String,
}

/// A replicated topic as the metadata log describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTopic {
    /// The topic's settings.
    pub spec: TopicSpec,
    /// The topic instance's id.
    pub id: String,
    /// Each partition's replica set, preferred leader first.
    pub replicas: Vec<Vec<NodeId>>,
    /// Each partition's replica set when the topic was created: these replicas form the
    /// partition's Raft group; a replica added later joins it through its leader.
    pub created: Vec<Vec<NodeId>>,
}

impl ClusterTopic {
    /// The name of partition `partition`'s Raft group: the topic instance's, so that no call of
    /// a deleted instance's group reaches the group of a topic created again under its name.
    pub fn group_name(&self) -> String {
        format!("{}-{}", self.spec.name, self.id)
    }
}

/// The cluster's metadata as of some offset of the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// The registered nodes, by id.
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    /// The replicated topics, by name.
    pub topics: BTreeMap<String, ClusterTopic>,
    /// Nodes that left: their ids are never registered again (a node that came back under one,
    /// without its old state, could vote in a group as if it had it).
    pub departed: std::collections::BTreeSet<NodeId>,
    /// The offset after the last command applied.
    pub applied_offset: u64,
}

impl ClusterState {
    fn apply(&mut self, command: MetadataCommand) {
        match command {
            MetadataCommand::RegisterNode {
                node_id,
                peer_address,
                client_address,
            } => {
                if self.departed.contains(&node_id) {
                    tracing::warn!(
                        node = node_id,
                        "ignoring the registration of a node id that left the cluster"
                    );
                    return;
                }
                let known = self.nodes.insert(
                    node_id,
                    NodeInfo {
                        peer_address,
                        client_address,
                    },
                );
                if known.is_none() {
                    self.grow(node_id);
                }
            }
            MetadataCommand::DeregisterNode { node_id } => {
                self.nodes.remove(&node_id);
                self.departed.insert(node_id);
                self.reassign(node_id);
            }
            MetadataCommand::CreateTopic { spec, id, replicas } => {
                // A second creation under a name in use lost a race at the leader: the first
                // stays.
                if !self.topics.contains_key(&spec.name) {
                    let name = spec.name.clone();
                    let created = replicas.clone();
                    let topic = ClusterTopic {
                        spec,
                        id,
                        replicas,
                        created,
                    };
                    self.topics.insert(name, topic);
                }
            }
            MetadataCommand::DeleteTopic { name, id } => {
                if self.topics.get(&name).is_some_and(|topic| topic.id == id) {
                    self.topics.remove(&name);
                }
            }
        }
    }

    /// Moves every replica on node `gone` (which left the cluster) to another registered node:
    /// the one, not in the partition's set yet, that holds the fewest replicas (the lowest id
    /// among equals). Every member applies the same commands in the same order, so every
    /// member moves the same replicas to the same nodes. A partition with no node left to take
    /// the replica keeps one replica fewer.
    fn reassign(&mut self, gone: NodeId) {
        let mut load: BTreeMap<NodeId, usize> = self.nodes.keys().map(|&id| (id, 0)).collect();
        for topic in self.topics.values() {
            for id in topic.replicas.iter().flatten() {
                if let Some(count) = load.get_mut(id) {
                    *count += 1;
                }
            }
        }
        for topic in self.topics.values_mut() {
            for set in &mut topic.replicas {
                let Some(at) = set.iter().position(|&id| id == gone) else {
                    continue;
                };
                let replacement = load
                    .iter()
                    .filter(|(id, _)| !set.contains(id))
                    .min_by_key(|&(&id, &count)| (count, id))
                    .map(|(&id, _)| id);
                match replacement {
                    Some(id) => {
                        set[at] = id;
                        *load.entry(id).or_default() += 1;
                    }
                    None => {
                        set.remove(at);
                    }
                }
            }
        }
    }

    /// Gives node `joined` (just registered) a replica of every partition whose set shrank
    /// below its topic's replication factor (a node left when no other could take its
    /// replicas), after the others in the set: the partition's leader takes it in as a
    /// learner, and makes it a voter once it has caught up. A partition with no replica left
    /// has nothing to grow from.
    fn grow(&mut self, joined: NodeId) {
        for topic in self.topics.values_mut() {
            let factor = usize::try_from(topic.spec.replication_factor).unwrap_or(0);
            for set in &mut topic.replicas {
                if !set.is_empty() && set.len() < factor && !set.contains(&joined) {
                    set.push(joined);
                }
            }
        }
    }

    /// Places the `partitions` partitions of a new topic on `replication_factor` of the
    /// registered nodes each: consecutive nodes (in id order) from a starting node that moves
    /// one node per partition, and one node further for every topic already placed, so that
    /// preferred leaders (each set's first node) and replicas spread evenly over the nodes.
    ///
    /// Returns `None` when fewer nodes are registered than the replication factor.
    pub fn place(&self, partitions: u32, replication_factor: u32) -> Option<Vec<Vec<NodeId>>> {
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        let factor = usize::try_from(replication_factor).ok()?;
        if factor == 0 || factor > nodes.len() {
            return None;
        }
        let shift = self.topics.len();
        let placed = (0..partitions)
            .map(|partition| {
                let start = usize::try_from(partition).unwrap_or(0) + shift;
                (0..factor)
                    .map(|i| nodes[(start + i) % nodes.len()])
                    .collect()
            })
            .collect();
        Some(placed)
    }
}

/// Folds the metadata log's committed commands into `state`, from the start of the log, as the
/// replica's high watermark moves; returns when the replica's state machine is gone.
///
/// A record that is not a command this version knows is skipped with a warning (a newer
/// sidecar wrote it); a batch that cannot be read stops the follower with an error in the log
/// (the replica's Raft reports the same storage fault).
pub(crate) async fn follow(replica: PartitionReplica, state: watch::Sender<ClusterState>) {
    let mut high_watermark = replica.high_watermark.clone();
    let mut next = replica.log.state().start_offset;
    loop {
        let end = *high_watermark.borrow_and_update();
        while next < end {
            let fetched = match replica.log.read_committed(next, 1 << 20, end) {
                Ok(fetched) => fetched,
                Err(error) => {
                    tracing::error!(%error, offset = next, "cannot read the metadata log");
                    return;
                }
            };
            let mut changed = state.borrow().clone();
            for batch in &fetched.batches {
                apply_batch(&mut changed, batch);
            }
            next = fetched.next_offset;
            changed.applied_offset = next;
            state.send_replace(changed);
        }
        if high_watermark.changed().await.is_err() {
            return;
        }
    }
}

fn apply_batch(state: &mut ClusterState, batch: &Bytes) {
    let records = match RecordBatch::decode(batch) {
        Ok(RecordBatch {
            body: BatchBody::Records(records),
            ..
        }) => records,
        Ok(_) => return,
        Err(error) => {
            tracing::error!(%error, "unreadable batch in the metadata log");
            return;
        }
    };
    for record in records {
        let Some(value) = record.value else { continue };
        match serde_json::from_slice::<MetadataCommand>(&value) {
            Ok(command) => state.apply(command),
            Err(error) => {
                tracing::warn!(%error, "skipping a metadata record this sidecar does not know");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaving_nodes_replicas_go_to_the_least_loaded_nodes_outside_each_set() {
        let mut state = ClusterState::default();
        for id in 1..=4 {
            state.apply(MetadataCommand::RegisterNode {
                node_id: id,
                peer_address: format!("p{id}"),
                client_address: format!("c{id}"),
            });
        }
        let spec = |name: &str| TopicSpec {
            name: name.to_owned(),
            partitions: 2,
            replication_factor: 3,
            retention_ms: -1,
            retention_bytes: -1,
            cleanup: crate::topics::Cleanup::Delete,
            fsync: sidestream_log::FsyncPolicy::Always,
        };
        let replicas = state.place(2, 3).unwrap();
        assert_eq!(replicas, vec![vec![1, 2, 3], vec![2, 3, 4]]);
        state.apply(MetadataCommand::CreateTopic {
            spec: spec("t"),
            id: "a".into(),
            replicas,
        });
        state.apply(MetadataCommand::DeregisterNode { node_id: 2 });
        let topic = &state.topics["t"];
        // Node 4 held one replica, node 1 one: 1 is the only node outside {2, 3, 4}, and 4 the
        // only one outside {1, 2, 3}.
        assert_eq!(topic.replicas, vec![vec![1, 4, 3], vec![1, 3, 4]]);
        assert_eq!(topic.created, vec![vec![1, 2, 3], vec![2, 3, 4]]);
        // A node id that left is not registered again.
        state.apply(MetadataCommand::RegisterNode {
            node_id: 2,
            peer_address: "p2".into(),
            client_address: "c2".into(),
        });
        assert!(!state.nodes.contains_key(&2));
        // No node left to take a replica: the set shrinks.
        state.apply(MetadataCommand::DeregisterNode { node_id: 4 });
        assert_eq!(state.topics["t"].replicas, vec![vec![1, 3], vec![1, 3]]);
        // A node that joins later takes a replica of every set that shrank; registering
        // again (a restart) changes nothing more.
        for _ in 0..2 {
            state.apply(MetadataCommand::RegisterNode {
                node_id: 5,
                peer_address: "p5".into(),
                client_address: "c5".into(),
            });
            assert_eq!(
                state.topics["t"].replicas,
                vec![vec![1, 3, 5], vec![1, 3, 5]]
            );
        }
        assert_eq!(
            state.topics["t"].created,
            vec![vec![1, 2, 3], vec![2, 3, 4]]
        );
    }

    #[test]
    fn commands_fold_into_the_state_and_unknown_ones_are_skipped() {
        let register = |id: u64, port: u16| MetadataCommand::RegisterNode {
            node_id: id,
            peer_address: format!("127.0.0.1:{port}"),
            client_address: format!("127.0.0.1:{}", port - 1),
        };
        let mut state = ClusterState::default();
        let deregister = MetadataCommand::DeregisterNode { node_id: 3 };
        for command in [
            register(1, 7401),
            register(2, 7411),
            register(3, 7431),
            register(1, 7421),
            deregister,
        ] {
            apply_batch(&mut state, &command.to_write().0);
        }
        let unknown = RecordBatch::from_records([(
            None,
            Some(Bytes::from(r#"{"command":"from_the_future"}"#)),
            0,
        )]);
        apply_batch(&mut state, &Bytes::from(unknown.encode().unwrap()));
        assert_eq!(state.nodes.len(), 2);
        assert_eq!(state.nodes[&1].peer_address, "127.0.0.1:7421");
        assert_eq!(state.nodes[&2].client_address, "127.0.0.1:7410");
        assert_eq!(
            serde_json::to_string(&register(3, 7431)).unwrap(),
            r#"{"command":"register_node","node_id":3,"peer_address":"127.0.0.1:7431","client_address":"127.0.0.1:7430"}"#
        );
    }
}
