//! Telling whether a file changed since it was read, without reading it: for certificates
//! taken again when their files are renewed in place (a Kubernetes Secret mounted as a
//! volume is updated with no signal).

use std::path::Path;
use std::time::SystemTime;

/// A file as seen at one moment: its modification and status-change times, its inode and its
/// length, or that it could not be looked at. Two stamps of one path differ when the file was
/// written, replaced (a Secret's files are swapped by renaming a directory: a new inode) or
/// removed in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp(Option<Seen>);

/// What a file that could be looked at was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    modified: SystemTime,
    /// Status-change time (seconds, nanoseconds) and inode, where the platform has them.
    status: Option<(i64, i64, u64)>,
    len: u64,
}

impl FileStamp {
    /// `path` as it is now.
    pub fn of(path: &Path) -> Self {
        Self(Self::look(path))
    }

    /// Each of `paths` as it is now.
    pub fn of_each<P: AsRef<Path>, const N: usize>(paths: &[P; N]) -> [Self; N] {
        paths.each_ref().map(|path| Self::of(path.as_ref()))
    }

    fn look(path: &Path) -> Option<Seen> {
        let metadata = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let status = {
            use std::os::unix::fs::MetadataExt as _;
            Some((metadata.ctime(), metadata.ctime_nsec(), metadata.ino()))
        };
        #[cfg(not(unix))]
        let status = None;
        Some(Seen {
            modified: metadata.modified().ok()?,
            status,
            len: metadata.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_when_the_file_is_replaced_written_or_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cert.pem");
        std::fs::write(&path, "one").unwrap();
        let first = FileStamp::of(&path);
        assert_eq!(first, FileStamp::of(&path));

        // Same length, written through a new file renamed into place: a new inode.
        let next = dir.path().join("next.pem");
        std::fs::write(&next, "two").unwrap();
        std::fs::rename(&next, &path).unwrap();
        let replaced = FileStamp::of(&path);
        assert_ne!(first, replaced);

        std::fs::write(&path, "three").unwrap();
        assert_ne!(replaced, FileStamp::of(&path));

        std::fs::remove_file(&path).unwrap();
        assert_eq!(FileStamp::of(&path), FileStamp(None));
    }
}
