use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable that names the data directory (and so the dev certificates).
pub const DATA_DIR_ENV: &str = "SIDESTREAM_DATA_DIR";

/// The folder of the data directory that holds the TLS files.
pub const TLS_DIR: &str = "tls";

/// The CA certificate file in the TLS folder: the only CA the SDK trusts.
pub const CA_CERT_FILE: &str = "ca.pem";

/// The client certificate file in the TLS folder (the dev service identity).
pub const CLIENT_CERT_FILE: &str = "client.pem";

/// The client certificate's private key in the TLS folder.
pub const CLIENT_KEY_FILE: &str = "client.key";

/// The data directory the sidecar, the SDK and the CLI use when none is given.
///
/// The first that applies:
///
/// 1. `$SIDESTREAM_DATA_DIR`, if set and not empty;
/// 2. `$XDG_DATA_HOME/sidestream`, if `XDG_DATA_HOME` is an absolute path (the XDG base
///    directory rule: a relative one is ignored);
/// 3. `$HOME/.local/share/sidestream`, if `HOME` is set and not empty.
///
/// `None` if none applies. The dev certificates are in its [`TLS_DIR`] folder; see
/// [`default_tls_dir`].
pub fn default_data_dir() -> Option<PathBuf> {
    data_dir_from(|name| std::env::var_os(name))
}

/// The TLS folder of the [`default_data_dir`], where the sidecar writes its dev certificates
/// and [`ClientTls::from_dir`](super::ClientTls::from_dir) finds them.
pub fn default_tls_dir() -> Option<PathBuf> {
    default_data_dir().map(|dir| dir.join(TLS_DIR))
}

fn data_dir_from(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let set = |name: &str| var(name).filter(|value| !value.is_empty());
    if let Some(dir) = set(DATA_DIR_ENV) {
        return Some(dir.into());
    }
    if let Some(dir) = set("XDG_DATA_HOME").filter(|dir| Path::new(dir).is_absolute()) {
        return Some(Path::new(&dir).join(APP_DIR));
    }
    set("HOME").map(|home| Path::new(&home).join(".local/share").join(APP_DIR))
}

const APP_DIR: &str = "sidestream";

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(vars: &[(&str, &str)]) -> Option<PathBuf> {
        data_dir_from(|name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| OsString::from(value))
        })
    }

    #[test]
    fn sidestream_data_dir_wins() {
        let vars = [
            (DATA_DIR_ENV, "/srv/ss"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/ada"),
        ];
        assert_eq!(dir_with(&vars), Some("/srv/ss".into()));
    }

    #[test]
    fn xdg_data_home_comes_next_if_absolute() {
        let vars = [("XDG_DATA_HOME", "/xdg"), ("HOME", "/home/ada")];
        assert_eq!(dir_with(&vars), Some("/xdg/sidestream".into()));
        let relative = [("XDG_DATA_HOME", "xdg"), ("HOME", "/home/ada")];
        assert_eq!(
            dir_with(&relative),
            Some("/home/ada/.local/share/sidestream".into())
        );
    }

    #[test]
    fn empty_values_count_as_unset() {
        let vars = [
            (DATA_DIR_ENV, ""),
            ("XDG_DATA_HOME", ""),
            ("HOME", "/home/ada"),
        ];
        assert_eq!(
            dir_with(&vars),
            Some("/home/ada/.local/share/sidestream".into())
        );
        assert_eq!(dir_with(&[("HOME", "")]), None);
        assert_eq!(dir_with(&[]), None);
    }
}
