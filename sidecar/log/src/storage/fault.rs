//! A fault-injecting, in-memory [`Storage`] for crash-consistency tests.
//!
//! Each file keeps two images: `live` (what reads see) and `durable` (what survived the last
//! `sync_data`). Directory entries are likewise live or durable (after `sync_dir`). After a
//! given number of operations every further operation fails, optionally after writing part of
//! its buffer. [`FaultStorage::crash`] builds the storage a restart would find: the durable
//! images, plus for a file whose live image extends its durable one, a torn tail of the
//! unsynced bytes (kept as written, or zeroed as a file system may leave them).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Storage, StorageFile};

#[derive(Debug, Default)]
pub(crate) struct FaultStorage {
    state: Mutex<Dirs>,
    control: Arc<Control>,
}

/// How the unsynced tail of a file looks after a crash.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tail {
    /// Nothing unsynced survives.
    Lost,
    /// The first `n` unsynced bytes survive as written.
    Kept(usize),
    /// The first `n` unsynced bytes survive as zeros.
    Zeroed(usize),
}

#[derive(Debug, Default)]
struct Dirs {
    live: BTreeMap<PathBuf, Arc<Node>>,
    durable: BTreeMap<PathBuf, Arc<Node>>,
    directories: BTreeSet<PathBuf>,
}

#[derive(Debug, Default)]
struct Node {
    images: Mutex<Images>,
}

#[derive(Debug, Default, Clone)]
struct Images {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug)]
struct Control {
    /// Operations left before faults start; `u64::MAX` means never.
    ops_left: AtomicU64,
    /// Fail `sync_data` calls only (the fsyncgate case), leaving other operations working.
    failing_syncs: AtomicU64,
    ops: AtomicU64,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            ops_left: AtomicU64::new(u64::MAX),
            failing_syncs: AtomicU64::new(0),
            ops: AtomicU64::new(0),
        }
    }
}

impl Control {
    fn tick(&self) -> io::Result<()> {
        self.ops.fetch_add(1, Ordering::Relaxed);
        let left = self.ops_left.load(Ordering::Relaxed);
        if left == u64::MAX {
            return Ok(());
        }
        if left == 0 {
            return Err(io::Error::other("injected fault"));
        }
        self.ops_left.store(left - 1, Ordering::Relaxed);
        Ok(())
    }
}

impl FaultStorage {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Every operation after the next `n` fails.
    pub(crate) fn fail_after(&self, n: u64) {
        self.control.ops_left.store(n, Ordering::Relaxed);
    }

    /// The next `n` calls of `sync_data` fail (other operations work).
    pub(crate) fn fail_syncs(&self, n: u64) {
        self.control.failing_syncs.store(n, Ordering::Relaxed);
    }

    /// The storage a restart finds: durable directory entries with durable contents, and each
    /// file's unsynced tail as `tail` says (applied to files whose live image extends the
    /// durable one).
    pub(crate) fn crash(&self, tail: impl Fn(&Path) -> Tail) -> FaultStorage {
        self.crash_with_entries(false, tail)
    }

    /// As [`FaultStorage::crash`]; with `live_entries`, every directory entry survives, synced
    /// or not (as a journaling file system often keeps them).
    pub(crate) fn crash_with_entries(
        &self,
        live_entries: bool,
        tail: impl Fn(&Path) -> Tail,
    ) -> FaultStorage {
        let state = self.state.lock().unwrap();
        let mut dirs = Dirs {
            directories: state.directories.clone(),
            ..Dirs::default()
        };
        let entries = if live_entries {
            &state.live
        } else {
            &state.durable
        };
        for (path, node) in entries {
            let images = node.images.lock().unwrap();
            let mut image = images.durable.clone();
            let extends = images.live.len() > image.len() && images.live.starts_with(&image);
            if extends {
                let unsynced = &images.live[image.len()..];
                match tail(path) {
                    Tail::Lost => {}
                    Tail::Kept(n) => image.extend_from_slice(&unsynced[..n.min(unsynced.len())]),
                    Tail::Zeroed(n) => image.resize(image.len() + n.min(unsynced.len()), 0),
                }
            }
            let node = Arc::new(Node {
                images: Mutex::new(Images {
                    live: image.clone(),
                    durable: image,
                }),
            });
            dirs.live.insert(path.clone(), node.clone());
            dirs.durable.insert(path.clone(), node);
        }
        FaultStorage {
            state: Mutex::new(dirs),
            control: Arc::new(Control::default()),
        }
    }

    /// How many unsynced bytes `path` holds past its durable image (0 if it does not extend it).
    pub(crate) fn unsynced_len(&self, path: &Path) -> usize {
        let state = self.state.lock().unwrap();
        state.live.get(path).map_or(0, |node| {
            let images = node.images.lock().unwrap();
            if images.live.starts_with(&images.durable) {
                images.live.len() - images.durable.len()
            } else {
                0
            }
        })
    }

    /// Flips one bit of a file's live and durable images.
    pub(crate) fn corrupt(&self, path: &Path, pos: usize) {
        let state = self.state.lock().unwrap();
        let node = state.live.get(path).expect("no such file");
        let mut images = node.images.lock().unwrap();
        images.live[pos] ^= 0x40;
        if pos < images.durable.len() {
            images.durable[pos] ^= 0x40;
        }
    }

    /// Paths of the live files.
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.state.lock().unwrap().live.keys().cloned().collect()
    }
}

impl Storage for FaultStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.control.tick()?;
        let mut state = self.state.lock().unwrap();
        for ancestor in dir.ancestors() {
            state.directories.insert(ancestor.to_path_buf());
        }
        Ok(())
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        self.control.tick()?;
        let mut state = self.state.lock().unwrap();
        let node = match state.live.get(path) {
            Some(node) => node.clone(),
            None if create => {
                let parent = path.parent().unwrap_or(Path::new(""));
                if !state.directories.contains(parent) {
                    return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
                }
                let node = Arc::new(Node::default());
                state.live.insert(path.to_path_buf(), node.clone());
                node
            }
            None => return Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        };
        Ok(Arc::new(FaultFile {
            node,
            control: self.control.clone(),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.control.tick()?;
        let state = self.state.lock().unwrap();
        if !state.directories.contains(dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        Ok(state
            .live
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.control.tick()?;
        let mut state = self.state.lock().unwrap();
        state
            .live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.control.tick()?;
        let mut state = self.state.lock().unwrap();
        let node = state
            .live
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        state.live.insert(to.to_path_buf(), node);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.control.tick()?;
        let mut state = self.state.lock().unwrap();
        let state = &mut *state;
        state.durable.retain(|p, _| p.parent() != Some(dir));
        for (path, node) in &state.live {
            if path.parent() == Some(dir) {
                state.durable.insert(path.clone(), node.clone());
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct FaultFile {
    node: Arc<Node>,
    control: Arc<Control>,
}

impl StorageFile for FaultFile {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let images = self.node.images.lock().unwrap();
        let start = usize::try_from(pos)
            .unwrap_or(usize::MAX)
            .min(images.live.len());
        let n = buf.len().min(images.live.len() - start);
        buf[..n].copy_from_slice(&images.live[start..start + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let fault = self.control.tick();
        let mut images = self.node.images.lock().unwrap();
        let pos = usize::try_from(pos).unwrap();
        // A failing write may still have written a part of its buffer.
        let n = if fault.is_err() {
            buf.len() / 2
        } else {
            buf.len()
        };
        if images.live.len() < pos + n {
            images.live.resize(pos + n, 0);
        }
        images.live[pos..pos + n].copy_from_slice(&buf[..n]);
        fault
    }

    fn sync_data(&self) -> io::Result<()> {
        self.control.tick()?;
        let failing = self.control.failing_syncs.load(Ordering::Relaxed);
        if failing > 0 {
            self.control
                .failing_syncs
                .store(failing - 1, Ordering::Relaxed);
            return Err(io::Error::other("injected fsync failure"));
        }
        let mut images = self.node.images.lock().unwrap();
        images.durable = images.live.clone();
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.control.tick()?;
        let mut images = self.node.images.lock().unwrap();
        images.live.resize(usize::try_from(len).unwrap(), 0);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.node.images.lock().unwrap().live.len() as u64)
    }
}
