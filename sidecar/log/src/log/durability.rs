//! Group commit: one `fdatasync` covers every append that arrived while the previous one ran.
//!
//! Every append gets a sequence number. A caller that needs its append durable calls
//! [`Durability::wait`] with that number:
//!
//! ```text
//!   appender A ──append #5──┐                       ┌── #5..#7 durable ──▶ A, B, C return
//!   appender B ──append #6──┼─ A finds no sync      │
//!   appender C ──append #7──┘  running: it becomes  │
//!                              the syncer for #7 ───┴── (B and C wait on the condvar)
//!   appender D ──append #8──── a sync is running: D waits, then syncs #8.. itself
//! ```
//!
//! The syncer notes the highest appended number *before* it syncs, so the sync covers it; it
//! releases the lock while the disk works. A failed sync poisons the log: every waiter and every
//! later append gets an error until the log is reopened (after a failed fsync the kernel may
//! have dropped the dirty pages, so retrying could report data durable that is not).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::error::SyncError;

#[derive(Debug, Default)]
pub(crate) struct Durability {
    state: Mutex<SyncState>,
    synced: Condvar,
}

#[derive(Debug, Default)]
struct SyncState {
    appended: u64,
    durable: u64,
    syncing: bool,
    poisoned: bool,
}

impl Durability {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that append number `seq` is written (called in append order).
    pub(crate) fn appended(&self, seq: u64) {
        self.lock().appended = seq;
    }

    pub(crate) fn appended_seq(&self) -> u64 {
        self.lock().appended
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.lock().poisoned
    }

    pub(crate) fn poison(&self) {
        self.lock().poisoned = true;
        self.synced.notify_all();
    }

    /// Records that everything appended up to `seq` was synced by someone else (a roll).
    pub(crate) fn synced_through(&self, seq: u64) {
        let mut state = self.lock();
        state.durable = state.durable.max(seq);
        self.synced.notify_all();
    }

    /// Returns once append `seq` is durable, running the sync itself (`sync`) if no other
    /// thread is syncing.
    pub(crate) fn wait(
        &self,
        seq: u64,
        sync: impl Fn() -> std::io::Result<()>,
    ) -> Result<(), SyncError> {
        let mut state = self.lock();
        loop {
            if state.poisoned {
                return Err(SyncError::Poisoned);
            }
            if state.durable >= seq {
                return Ok(());
            }
            if state.syncing {
                state = self
                    .synced
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.syncing = true;
            let target = state.appended;
            drop(state);
            let result = sync();
            state = self.lock();
            state.syncing = false;
            match result {
                Ok(()) => state.durable = state.durable.max(target),
                Err(e) => {
                    tracing::error!(error = %e, "fsync failed; the log refuses writes until reopened");
                    state.poisoned = true;
                }
            }
            self.synced.notify_all();
        }
    }
}
