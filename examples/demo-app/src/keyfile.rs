//! The key file: signing keys generated once and kept beside the users database, so a
//! restart keeps everyone logged in without asking the operator for keys.
//!
//! Format: one standard-base64 key per line, the first signs (the `CLOAKROOM_KEYS` list with
//! newlines for commas). To rotate, add a new first line; drop the old line once its tickets
//! have expired.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use cloakroom::{Key, KeyRing};

/// `<database>.keys`, beside the database.
pub(crate) fn path_beside(database: &Path) -> PathBuf {
    let mut name: OsString = database.as_os_str().to_owned();
    name.push(".keys");
    PathBuf::from(name)
}

/// The key ring in `path`; when there is no such file, a fresh key written there first
/// (mode 0600, never overwriting a file another process wrote meanwhile).
pub(crate) fn load_or_create(path: &Path) -> anyhow::Result<KeyRing> {
    match fs::read_to_string(path) {
        Ok(text) => return parse(path, &text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("cannot read the key file"),
    }
    let key =
        Key::try_generate().map_err(|e| anyhow::anyhow!("no OS randomness for a new key: {e}"))?;
    // Write a private temporary file, then hard-link it into place: the link fails if the
    // file appeared meanwhile, and a crash never leaves a half-written key file behind.
    let tmp = path.with_extension(format!("keys.tmp{}", std::process::id()));
    let written = write_private(&tmp, &format!("{}\n", key.to_base64()))
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {
            tracing::info!(path = %path.display(), "generated a signing key");
            Ok(KeyRing::single(key))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => parse(
            path,
            &fs::read_to_string(path).context("cannot read the key file")?,
        ),
        Err(e) => Err(e).context("cannot write the key file"),
    }
}

fn parse(path: &Path, text: &str) -> anyhow::Result<KeyRing> {
    warn_if_readable_by_others(path);
    let list = text.lines().collect::<Vec<_>>().join(",");
    KeyRing::from_base64_list(&list).context("the key file holds no valid key list")
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(path).map_or(0, |m| m.permissions().mode());
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "key file is readable by others; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_made_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_beside(&dir.path().join("demo.db"));
        assert!(path.ends_with("demo.db.keys"));
        let first = load_or_create(&path).unwrap();
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.keys()[0].to_base64(), again.keys()[0].to_base64());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn rotated_key_file_signs_with_the_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.keys");
        let (new, old) = (Key::generate(), Key::generate());
        fs::write(&path, format!("{}\n{}\n", new.to_base64(), old.to_base64())).unwrap();
        let ring = load_or_create(&path).unwrap();
        assert_eq!(ring.keys().len(), 2);
        assert_eq!(ring.keys()[0].to_base64(), new.to_base64());
        fs::write(&path, "too short\n").unwrap();
        assert!(load_or_create(&path).is_err());
    }
}
