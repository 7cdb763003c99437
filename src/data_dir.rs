//! The data directory is private: mode 0700, every file in it 0600.
//!
//! It holds the registry (credentials sealed, but hosts, ips and accounts in
//! clear), the credential key and the admin token. redb creates its file
//! with the process's umask (usually 0644), and an older hub left its files
//! so: each start puts the modes right before anything else is read.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Create `dir` (0700) if missing; make it 0700 if it was not.
pub fn prepare(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)?;
    restrict_or_warn(dir, DIR_MODE);
    Ok(())
}

/// Make every regular file directly in `dir` 0600 (call after the store
/// has created its files).
pub fn restrict_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            restrict_or_warn(&entry.path(), FILE_MODE);
        }
    }
    Ok(())
}

/// A path the hub does not own (a data dir an operator made) cannot be
/// changed: that is said, and the hub goes on.
fn restrict_or_warn(path: &Path, mode: u32) {
    if let Err(e) = restrict(path, mode) {
        tracing::warn!(path = %path.display(), error = %e, "cannot make this private (mode {mode:o})");
    }
}

fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    let now = fs::metadata(path)?.permissions().mode() & 0o777;
    if now != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn makes_the_dir_and_its_files_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("registry.redb");
        fs::write(&file, b"x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
        restrict_files(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&file), 0o600);
    }
}
