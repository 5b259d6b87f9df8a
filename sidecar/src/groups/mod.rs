//! Consumer groups: who consumes a topic in a group, and where the group stands in each
//! partition.
//!
//! Committed offsets are kept in a log of their own (`groups/offsets/` in the data directory,
//! the same segment format as a partition, fsync `always`): each commit appends one record
//! whose key names group, topic and partition and whose value is the offset. Opening reads
//! the log once to rebuild the table in memory, the way Kafka rebuilds its group coordinator
//! from `__consumer_offsets`.
//!
//! Membership: one member per group and topic. A new member takes the partitions over (the
//! old one is told to stop), so a restarted service does not wait for its old connection to
//! time out; each takeover starts a new generation, and a commit from an older generation is
//! refused. Multi-member assignment with cooperative rebalancing is a later step.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use sidestream_log::batch::{BatchBuilder, RecordIter, validate};
use sidestream_log::{
    AppendError, Clock as _, FileStorage, FsyncPolicy, Log, LogConfig, OpenError, ReadError,
    SyncError, SystemClock,
};
use tokio::sync::watch;

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GroupError {
    #[error(
        "group {group:?} is not consuming topic {topic:?} in generation {given}; generation {current} took it over"
    )]
    StaleGeneration {
        group: String,
        topic: String,
        given: u64,
        current: u64,
    },
    #[error("cannot store the committed offset: {0}")]
    Append(#[from] AppendError),
    #[error("cannot store the committed offset: {0}")]
    Sync(#[from] SyncError),
    #[error("the offsets store failed: {0}")]
    Task(String),
}

/// Why the offsets log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenGroupsError {
    /// The log itself.
    #[error("group offsets log: {0}")]
    Open(#[from] OpenError),
    /// A batch of it.
    #[error("group offsets log: {0}")]
    Read(#[from] ReadError),
}

type GroupTopic = (String, String);

#[derive(Debug)]
struct Member {
    generation: u64,
    evict: watch::Sender<bool>,
}

/// A member's place in its group.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) generation: u64,
    /// Becomes `true` when a newer member takes the group's partitions over.
    pub(crate) evicted: watch::Receiver<bool>,
}

/// Committed offsets and members of every group.
#[derive(Debug)]
pub(crate) struct Groups {
    log: Arc<Log>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    offsets: HashMap<GroupTopic, BTreeMap<u32, u64>>,
    members: HashMap<GroupTopic, Member>,
    /// The latest generation ever given per group and topic (kept when its member leaves,
    /// so that an older member's late commit is still refused).
    generations: HashMap<GroupTopic, u64>,
    next_generation: u64,
    /// Writes to the offsets log are numbered in log order; a write updates the table only
    /// if no later write of the same key has already done so.
    writes: u64,
    applied: HashMap<(GroupTopic, u32), u64>,
}

/// One record to store: group, topic, partition, and the offset (`None`: a tombstone).
type Entry<'a> = (&'a str, &'a str, u32, Option<u64>);

impl Groups {
    /// Opens (or creates) the offsets log under `data_dir` and rebuilds the table from it.
    pub(crate) fn open(data_dir: &Path) -> Result<Self, OpenGroupsError> {
        let config = LogConfig {
            fsync: FsyncPolicy::Always,
            segment_bytes: 64 << 20,
            ..LogConfig::default()
        };
        let log = Log::open(
            Arc::new(FileStorage),
            data_dir.join("groups").join("offsets"),
            config,
        )?;
        let offsets = rebuild(&log)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(1));
        Ok(Self {
            log: Arc::new(log),
            state: Mutex::new(State {
                offsets,
                members: HashMap::new(),
                generations: HashMap::new(),
                // Generations grow across restarts: they start from the clock.
                next_generation: now,
                writes: 0,
                applied: HashMap::new(),
            }),
        })
    }

    /// Joins `group` for `topic`, taking its partitions over from any earlier member.
    pub(crate) fn join(&self, group: &str, topic: &str) -> Membership {
        let generation = self.new_generation(0);
        self.join_as(group, topic, generation)
    }

    /// A generation no member of this sidecar was given yet, above `above` (a generation the
    /// partitions of a replicated topic say another sidecar gave).
    pub(crate) fn new_generation(&self, above: u64) -> u64 {
        let mut state = lock(&self.state);
        state.next_generation = state.next_generation.max(above).saturating_add(1);
        state.next_generation
    }

    /// Joins `group` for `topic` in `generation` (from [`Self::new_generation`]), taking its
    /// partitions over from any earlier member of this sidecar.
    pub(crate) fn join_as(&self, group: &str, topic: &str, generation: u64) -> Membership {
        let key = (group.to_owned(), topic.to_owned());
        let (evict, evicted) = watch::channel(false);
        let mut state = lock(&self.state);
        state.generations.insert(key.clone(), generation);
        if let Some(old) = state.members.insert(key, Member { generation, evict }) {
            old.evict.send_replace(true);
        }
        Membership {
            generation,
            evicted,
        }
    }

    /// Stops the member of `group` in `generation`, if it is still this sidecar's member: a
    /// later generation took its partitions over on another sidecar.
    pub(crate) fn evict(&self, group: &str, topic: &str, generation: u64) {
        let mut state = lock(&self.state);
        let key = (group.to_owned(), topic.to_owned());
        if state
            .members
            .get(&key)
            .is_some_and(|m| m.generation == generation)
            && let Some(member) = state.members.remove(&key)
        {
            member.evict.send_replace(true);
        }
    }

    /// Leaves `group` if `generation` is still its member.
    pub(crate) fn leave(&self, group: &str, topic: &str, generation: u64) {
        let mut state = lock(&self.state);
        let key = (group.to_owned(), topic.to_owned());
        if state
            .members
            .get(&key)
            .is_some_and(|m| m.generation == generation)
        {
            state.members.remove(&key);
        }
    }

    /// The committed offsets of `group` in `topic`, by partition; `None` for a group this
    /// sidecar has never seen for the topic.
    pub(crate) fn committed(&self, group: &str, topic: &str) -> Option<BTreeMap<u32, u64>> {
        let key = (group.to_owned(), topic.to_owned());
        let state = lock(&self.state);
        match state.offsets.get(&key) {
            Some(offsets) => Some(offsets.clone()),
            None if state.members.contains_key(&key) => Some(BTreeMap::new()),
            None => None,
        }
    }

    /// Every group's committed offset in partition `partition` of `topic`.
    pub(crate) fn committed_in(&self, topic: &str, partition: u32) -> Vec<(String, u64)> {
        let state = lock(&self.state);
        state
            .offsets
            .iter()
            .filter(|((_, of), _)| of == topic)
            .filter_map(|((group, _), offsets)| Some((group.clone(), *offsets.get(&partition)?)))
            .collect()
    }

    /// Commits `offset` for `group` in a partition, durably. A commit that names a
    /// generation older than the group's latest is refused.
    pub(crate) async fn commit(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        generation: Option<u64>,
    ) -> Result<(), GroupError> {
        self.store(&[(group, topic, partition, Some(offset))], generation)
            .await
    }

    /// Forgets every group's offsets in a topic, durably (one tombstone per partition), so
    /// that a new topic of the same name starts without them.
    pub(crate) async fn forget_topic(&self, topic: &str) -> Result<(), GroupError> {
        self.forget(|t| t == topic).await
    }

    /// Forgets one partition's offset of a group (a commit that raced with its topic's
    /// deletion).
    pub(crate) async fn forget_partition(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(), GroupError> {
        self.store(&[(group, topic, partition, None)], None).await
    }

    /// Forgets the offsets of every topic that `exists` says is gone (a crash between a
    /// topic's deletion and its tombstones leaves some).
    pub(crate) async fn forget_missing(
        &self,
        exists: impl Fn(&str) -> bool,
    ) -> Result<(), GroupError> {
        self.forget(|t| !exists(t)).await
    }

    async fn forget(&self, doomed: impl Fn(&str) -> bool) -> Result<(), GroupError> {
        let keys: Vec<(String, String, u32)> = lock(&self.state)
            .offsets
            .iter()
            .filter(|((_, t), _)| doomed(t))
            .flat_map(|((g, t), parts)| parts.keys().map(|p| (g.clone(), t.clone(), *p)))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let entries: Vec<Entry<'_>> = keys
            .iter()
            .map(|(group, topic, partition)| (group.as_str(), topic.as_str(), *partition, None))
            .collect();
        self.store(&entries, None).await
    }

    /// Appends one record per entry, waits until it is durable, then updates the table
    /// (unless a later write of the same key got there first).
    async fn store(
        &self,
        entries: &[Entry<'_>],
        generation: Option<u64>,
    ) -> Result<(), GroupError> {
        let mut builder = BatchBuilder::with_capacity(128 * entries.len());
        let timestamp = SystemClock.now_ms();
        for &(group, topic, partition, offset) in entries {
            let key = format!("{group}\0{topic}\0{partition}");
            let value = offset.map(u64::to_le_bytes);
            builder
                .push(
                    timestamp,
                    Some(key.as_bytes()),
                    value.as_ref().map(|v| &v[..]),
                    &[],
                )
                .map_err(|e| GroupError::Task(e.to_string()))?;
        }
        let batch = builder
            .finish()
            .map_err(|e| GroupError::Task(e.to_string()))?;
        let (appended, write) = {
            let mut state = lock(&self.state);
            if let Some(given) = generation {
                for &(group, topic, ..) in entries {
                    let key = (group.to_owned(), topic.to_owned());
                    if let Some(&current) = state.generations.get(&key)
                        && current > given
                    {
                        return Err(GroupError::StaleGeneration {
                            group: group.to_owned(),
                            topic: topic.to_owned(),
                            given,
                            current,
                        });
                    }
                }
            }
            // Appended under the lock, so log order is write-number order.
            let appended = self.log.append(&batch)?;
            state.writes += 1;
            (appended, state.writes)
        };
        let log = Arc::clone(&self.log);
        tokio::task::spawn_blocking(move || log.wait_durable(&appended))
            .await
            .map_err(|e| GroupError::Task(e.to_string()))??;
        let mut state = lock(&self.state);
        for &(group, topic, partition, offset) in entries {
            let key = (group.to_owned(), topic.to_owned());
            let newest = state
                .applied
                .get(&(key.clone(), partition))
                .is_none_or(|&applied| applied < write);
            if !newest {
                continue;
            }
            state.applied.insert((key.clone(), partition), write);
            match offset {
                Some(offset) => {
                    state
                        .offsets
                        .entry(key)
                        .or_default()
                        .insert(partition, offset);
                }
                None => {
                    if let Some(partitions) = state.offsets.get_mut(&key) {
                        partitions.remove(&partition);
                        if partitions.is_empty() {
                            state.offsets.remove(&key);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    pub(crate) fn sync(&self) {
        if let Err(error) = self.log.sync() {
            tracing::error!(%error, "final sync of the group offsets failed");
        }
    }
}

/// Reads the whole offsets log: the last record of each key wins.
fn rebuild(log: &Log) -> Result<HashMap<GroupTopic, BTreeMap<u32, u64>>, OpenGroupsError> {
    let mut offsets: HashMap<GroupTopic, BTreeMap<u32, u64>> = HashMap::new();
    let mut at = log.state().start_offset;
    loop {
        let fetched = log.read(at, 4 << 20)?;
        if fetched.batches.is_empty() {
            break;
        }
        for batch in &fetched.batches {
            let Ok(header) = validate(batch) else {
                continue;
            };
            let body = &batch[sidestream_log::batch::HEADER_LEN..];
            for record in RecordIter::new(&header, body).flatten() {
                let Some((group, topic, partition)) = record.key.and_then(parse_key) else {
                    continue;
                };
                let entry = offsets.entry((group, topic)).or_default();
                match record.value.map(<[u8; 8]>::try_from) {
                    Some(Ok(bytes)) => {
                        entry.insert(partition, u64::from_le_bytes(bytes));
                    }
                    // A tombstone: the topic was deleted.
                    None => {
                        entry.remove(&partition);
                    }
                    Some(Err(_)) => {}
                }
            }
        }
        at = fetched.next_offset;
    }
    offsets.retain(|_, partitions| !partitions.is_empty());
    Ok(offsets)
}

fn parse_key(key: &[u8]) -> Option<(String, String, u32)> {
    let text = std::str::from_utf8(key).ok()?;
    let mut parts = text.split('\0');
    let group = parts.next()?.to_owned();
    let topic = parts.next()?.to_owned();
    let partition = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((group, topic, partition))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn offsets_survive_reopen_and_stale_generations_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let groups = Groups::open(dir.path()).unwrap();
        assert_eq!(groups.committed("g", "t"), None);
        let first = groups.join("g", "t");
        groups
            .commit("g", "t", 0, 10, Some(first.generation))
            .await
            .unwrap();
        groups.commit("g", "t", 1, 5, None).await.unwrap();
        let second = groups.join("g", "t");
        assert!(*first.evicted.borrow());
        assert!(second.generation > first.generation);
        let stale = groups.commit("g", "t", 0, 11, Some(first.generation)).await;
        assert!(matches!(stale, Err(GroupError::StaleGeneration { .. })));
        groups
            .commit("g", "t", 0, 12, Some(second.generation))
            .await
            .unwrap();
        drop(groups);

        let groups = Groups::open(dir.path()).unwrap();
        let committed = groups.committed("g", "t").unwrap();
        assert_eq!(committed.into_iter().collect::<Vec<_>>(), [(0, 12), (1, 5)]);
        groups.forget_topic("t").await.unwrap();
        drop(groups);
        let groups = Groups::open(dir.path()).unwrap();
        assert_eq!(groups.committed("g", "t"), None);
    }
}
