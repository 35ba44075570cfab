//! The node's home directory (`--home DIR`, `FERRY_HOME`, or `~/.ferry`):
//!
//! ```text
//! node.key        the node's Ed25519 secret (0600)
//! ferry.toml      configuration
//! store/          the engine's store (redb or sled)
//! certs/          chains this node holds, one PEM file per certificate
//! orgs/           root keys of organisations created here (0600)
//! issued/         certificates this node issued (for `cert list` and `cert revoke`)
//! tokens.json     enrolment tokens this node handed out
//! control.sock    the local API, while `ferry serve` runs
//! lock            locked (flock) by the one process that has the store open
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

#[derive(Clone, Debug)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    /// `--home`, else `FERRY_HOME` (clap reads both), else `~/.ferry`.
    pub fn resolve(dir: Option<PathBuf>) -> Home {
        let dir = dir.unwrap_or_else(|| {
            std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".ferry")
        });
        Home { dir }
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.join("node.key")
    }
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("ferry.toml")
    }
    pub fn store_dir(&self) -> PathBuf {
        self.dir.join("store")
    }
    pub fn blobs_dir(&self) -> PathBuf {
        self.dir.join("blobs")
    }
    pub fn certs_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }
    pub fn orgs_dir(&self) -> PathBuf {
        self.dir.join("orgs")
    }
    pub fn issued_dir(&self) -> PathBuf {
        self.dir.join("issued")
    }
    pub fn tokens_file(&self) -> PathBuf {
        self.dir.join("tokens.json")
    }
    /// The HTTP API's bearer token (`http::token`).
    pub fn api_token_file(&self) -> PathBuf {
        self.dir.join("api-token")
    }
    /// Relays and rendezvous points enrolment remembered, one multiaddr a
    /// line (`meet.rs`).
    pub fn relays_file(&self) -> PathBuf {
        self.dir.join("relays")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// The HTTP API's bearer token, `HOME/api-token`: made by `ferry init`
    /// (or by the first `serve --http` of a home made before there was
    /// one), 32 random bytes in hex, mode 0600.
    pub fn api_token(&self) -> anyhow::Result<String> {
        let path = self.api_token_file();
        if path.exists() {
            let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            let token = text.trim();
            if token.is_empty() {
                bail!("{} is empty: remove it, and the next `ferry serve --http` makes a new token", path.display());
            }
            return Ok(token.to_owned());
        }
        let token = data_encoding::HEXLOWER.encode(&crate::random::bytes::<32>());
        write_private(&path, format!("{token}\n").as_bytes())?;
        Ok(token)
    }

    pub fn is_initialized(&self) -> bool {
        self.key_file().exists()
    }

    pub fn require_initialized(&self) -> anyhow::Result<()> {
        if !self.is_initialized() {
            anyhow::bail!("{} is not a ferry home: run `ferry init` (or pass --home)", self.dir.display());
        }
        Ok(())
    }

    /// Takes the home's lock, held while this process has the store open:
    /// one process at a time, whichever backend the store uses. The
    /// operating system releases it when the file closes, so a crashed
    /// process leaves no stale lock behind.
    pub fn lock(&self) -> anyhow::Result<HomeLock> {
        let path = self.lock_file();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(HomeLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => {
                bail!("the store of {} is in use by another ferry process", self.dir.display())
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
}

/// The home's lock, released when dropped.
#[derive(Debug)]
pub struct HomeLock {
    _file: std::fs::File,
}

/// Writes a file atomically (a temporary file of a unique name beside it,
/// fsync, rename, fsync of the directory), so a crash leaves either the old
/// or the new content, and two writers at once never share a temporary file
/// (the last rename wins whole).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_with_mode(path, bytes, 0o644)
}

/// Like `write_atomic`, readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_with_mode(path, bytes, 0o600)
}

fn write_with_mode(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().context("a file path has a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = builder.tempfile_in(dir).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
    file.as_file().sync_all().with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path).map_err(|e| e.error).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_home_is_locked_by_one_opener_at_a_time() {
        let dir = tempfile::tempdir().expect("dir");
        let home = Home { dir: dir.path().to_path_buf() };
        let held = home.lock().expect("first lock");
        let refused = home.lock().expect_err("a second lock while the first is held");
        assert_eq!(
            refused.to_string(),
            format!("the store of {} is in use by another ferry process", dir.path().display())
        );
        drop(held);
        home.lock().expect("the lock is free again once dropped");
    }

    #[test]
    fn atomic_writes_keep_their_mode_and_leave_no_temporary_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens.json");
        write_private(&path, b"[]").expect("write");
        write_private(&path, b"[1]").expect("overwrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"[1]");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
            write_atomic(&dir.path().join("public"), b"x").expect("write");
            let mode = std::fs::metadata(dir.path().join("public")).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o644);
        }
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
