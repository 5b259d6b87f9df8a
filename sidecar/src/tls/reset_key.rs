//! The key a sidecar's QUIC endpoints sign their stateless resets with, kept in its data
//! directory so that it outlives the process.
//!
//! A sidecar that crashed and started again on the same port no longer knows the
//! connections its clients (and peers) still hold. When their packets arrive it answers each
//! with a stateless reset: a packet ending in a token derived from this key and the
//! connection's id, which the client checks against the token the old process gave it when
//! the connection was made. With the same key the tokens match, and the client drops the
//! connection at once and reconnects; with a new key each start (quinn's default) the reset
//! is ignored and the client waits out its idle timeout (30 s) first. The connection ids are
//! signed with a key derived from it too: quinn answers only packets whose id it could have
//! issued, and ids of the process before count.
//!
//! Anyone who knows the key can end this sidecar's connections, so it is written with mode
//! 0600, like the development CA's key (and made so again, with a warning, if it was not).
//! Each port signs with a key of its own derived from it ([`ResetKey::for_port`]): a port
//! answers a connection id it could have issued with that id's reset token, so ports sharing
//! a key would hand out each other's tokens.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn_proto::HashedConnectionIdGenerator;
use ring::hmac;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::atomic_file::write_atomically;

/// The file in the data directory that holds the key: 64 random bytes.
const RESET_KEY_FILE: &str = "stateless-reset.key";

const KEY_LEN: usize = 64;

/// The stateless reset key of a sidecar's endpoints.
#[derive(Clone)]
pub struct ResetKey(Arc<hmac::Key>);

/// Why the reset key could not be read or made.
#[derive(Debug, thiserror::Error)]
#[error("stateless reset key {path}: {source}")]
pub struct ResetKeyError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl ResetKey {
    /// The key in `data_dir`, made (and written) on the first start. A file of the wrong
    /// length (cut short by a crash while it was first written elsewhere, or edited) is
    /// replaced by a new key, which only means that connections made before this start are
    /// not reset.
    pub fn in_data_dir(data_dir: &Path) -> Result<Self, ResetKeyError> {
        let path = data_dir.join(RESET_KEY_FILE);
        let error = |source| ResetKeyError {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(secret) if secret.len() == KEY_LEN => {
                keep_private(&path).map_err(error)?;
                return Ok(Self::from_secret(&secret));
            }
            Ok(secret) => tracing::warn!(
                path = %path.display(),
                len = secret.len(),
                "the stateless reset key is not {KEY_LEN} bytes long; a new one replaces it"
            ),
            Err(source) if source.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(error(source)),
        }
        let secret = random_secret().map_err(error)?;
        write_atomically(&path, &secret, 0o600).map_err(error)?;
        Ok(Self::from_secret(&secret))
    }

    /// The key of the port named `port` (`client`, `peer`), derived from this one.
    #[must_use]
    pub fn for_port(&self, port: &str) -> Self {
        let label = format!("sidestream stateless resets of the {port} port");
        Self::from_secret(hmac::sign(&self.0, label.as_bytes()).as_ref())
    }

    fn from_secret(secret: &[u8]) -> Self {
        Self(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    /// The quinn endpoint settings `tuning` gives (`loopback`: for a loopback address), with
    /// this key.
    pub(crate) fn endpoint_config(
        &self,
        tuning: &sidestream::transport::QuicTuning,
        loopback: bool,
    ) -> quinn::EndpointConfig {
        let mut config = tuning.endpoint_config(loopback);
        config.reset_key(Arc::clone(&self.0) as _);
        let tag = hmac::sign(&self.0, b"sidestream connection ids");
        let mut cid_key = [0; 8];
        cid_key.copy_from_slice(&tag.as_ref()[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        config.cid_generator(move || Box::new(HashedConnectionIdGenerator::from_key(cid_key)));
        config
    }
}

impl std::fmt::Debug for ResetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetKey(..)")
    }
}

/// Makes the key file readable by its owner alone again if it was not (restored from a
/// backup, say), and says so.
fn keep_private(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format_args!("{:o}", mode & 0o777),
                "the stateless reset key was readable by others; it is made 0600"
            );
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn random_secret() -> io::Result<[u8; KEY_LEN]> {
    let mut secret = [0; KEY_LEN];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| io::Error::other("the system's random number generator failed"))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_kept_private_and_a_bad_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESET_KEY_FILE);
        ResetKey::in_data_dir(dir.path()).unwrap();
        let made = std::fs::read(&path).unwrap();
        assert_eq!(made.len(), KEY_LEN);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let permissions = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(permissions & 0o777, 0o600);
        }
        ResetKey::in_data_dir(dir.path()).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            made,
            "read again, not made again"
        );

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            ResetKey::in_data_dir(dir.path()).unwrap();
            let permissions = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(permissions & 0o777, 0o600, "made private again");
            assert_eq!(std::fs::read(&path).unwrap(), made, "and kept");
        }

        std::fs::write(&path, b"short").unwrap();
        ResetKey::in_data_dir(dir.path()).unwrap();
        let replaced = std::fs::read(&path).unwrap();
        assert_eq!(replaced.len(), KEY_LEN);
        assert_ne!(replaced, made);
    }

    #[test]
    fn each_port_signs_with_a_key_of_its_own_that_outlives_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let token = |key: &ResetKey| hmac::sign(&key.0, b"a connection id").as_ref().to_vec();
        let key = ResetKey::in_data_dir(dir.path()).unwrap();
        let (client, peer) = (key.for_port("client"), key.for_port("peer"));
        assert_ne!(token(&client), token(&peer));
        assert_ne!(token(&client), token(&key));
        let again = ResetKey::in_data_dir(dir.path()).unwrap();
        assert_eq!(token(&again.for_port("client")), token(&client));
        assert_eq!(token(&again.for_port("peer")), token(&peer));
    }
}
