//! Installation packages in the data directory: `packages/<sha256>.tar`
//! and its description `packages/<sha256>.json`, each written to a
//! temporary name, synced, then renamed, so a crash leaves a package whole
//! or absent. A body is streamed to disk (hashed on the way, bounded in
//! size), never held in memory. Packages are this hub's: in a runner group
//! upload them to the hub that runs the rollout.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::model::{Package, now_millis};

/// Why a package was refused or could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("{0}")]
    Invalid(String),
    #[error("the package is larger than {0} bytes ([upgrade] max_package_bytes)")]
    TooLarge(u64),
    #[error(
        "a package for version {version}, {os_type}/{arch} exists already ({sha256}); delete it first"
    )]
    Exists {
        version: String,
        os_type: String,
        arch: String,
        sha256: String,
    },
    #[error("no package {0}")]
    NotFound(String),
    #[error("the upload broke off: {0}")]
    Body(String),
    #[error("two uploads are under way already; try again when one has ended")]
    Busy,
    #[error("packages directory: {0}")]
    Io(#[from] io::Error),
}

/// A file to remove when dropped, unless taken out.
struct Leftover(Option<PathBuf>);

impl Drop for Leftover {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The packages directory of a hub, and what it holds (read once at
/// open, then kept as packages are added and deleted: no directory scan on
/// a rollout's path).
pub struct Packages {
    dir: PathBuf,
    max_bytes: u64,
    known: parking_lot::RwLock<Vec<Package>>,
    /// One upload or delete at a time: the check for a duplicate and the
    /// rename are one step.
    lock: tokio::sync::Mutex<()>,
    /// Uploads streaming at once.
    uploads: tokio::sync::Semaphore,
}

/// A version, os type or arch: a plain token (it goes into a file name on
/// the tagent, and into commands).
fn plain(what: &str, v: &str, max: usize) -> Result<(), PackageError> {
    let ok = !v.is_empty()
        && v.len() <= max
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if ok {
        Ok(())
    } else {
        Err(PackageError::Invalid(format!(
            "{what} must be 1 to {max} letters, digits, '.', '_', '-' or '+'"
        )))
    }
}

/// Checks a package's version, os type and arch.
pub fn validate(version: &str, os_type: &str, arch: &str) -> Result<(), PackageError> {
    plain("version", version, 64)?;
    plain("os_type", os_type, 32)?;
    plain("arch", arch, 32)
}

fn is_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Write `data` to `path` through a temporary file, synced, mode 0600.
fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = private_file(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn private_file(path: &Path) -> io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The packages described in `dir` whose tar is there, newest first.
fn scan(dir: &Path) -> io::Result<Vec<Package>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read(&path)?;
        match serde_json::from_slice::<Package>(&text) {
            Ok(p) if is_sha(&p.sha256) && dir.join(format!("{}.tar", p.sha256)).is_file() => {
                out.push(p)
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "a package description does not parse; skipped");
            }
        }
    }
    sort(&mut out);
    Ok(out)
}

fn sort(v: &mut [Package]) {
    v.sort_by(|a, b| {
        b.uploaded_ms
            .cmp(&a.uploaded_ms)
            .then(a.sha256.cmp(&b.sha256))
    });
}

impl Packages {
    /// The packages under `data_dir/packages` (created 0700); leftovers of
    /// uploads a crash cut short are removed.
    pub fn open(data_dir: &Path, max_bytes: u64) -> io::Result<Packages> {
        let dir = data_dir.join("packages");
        std::fs::create_dir_all(&dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        }
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".tmp") || name.starts_with(".upload-") {
                std::fs::remove_file(&path)?;
            }
        }
        let known = parking_lot::RwLock::new(scan(&dir)?);
        Ok(Packages {
            dir,
            max_bytes,
            known,
            lock: tokio::sync::Mutex::new(()),
            uploads: tokio::sync::Semaphore::new(2),
        })
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Every package, newest first.
    pub fn list(&self) -> Result<Vec<Package>, PackageError> {
        Ok(self.known.read().clone())
    }

    pub fn get(&self, sha256: &str) -> Result<Package, PackageError> {
        if !is_sha(sha256) {
            return Err(PackageError::NotFound(format!("{sha256:.64}")));
        }
        self.list()?
            .into_iter()
            .find(|p| p.sha256 == sha256)
            .ok_or_else(|| PackageError::NotFound(sha256.to_owned()))
    }

    /// The package for `version` on `os_type` (without case) and `arch`,
    /// else the one for arch `default`, as the original falls back.
    pub fn find(
        &self,
        version: &str,
        os_type: &str,
        arch: &str,
    ) -> Result<Option<Package>, PackageError> {
        let all = self.list()?;
        let of = |a: &str| {
            all.iter().find(|p| {
                p.version == version && p.os_type.eq_ignore_ascii_case(os_type) && p.arch == a
            })
        };
        Ok(of(arch).or_else(|| of("default")).cloned())
    }

    /// The package's bytes.
    pub async fn data(&self, p: &Package) -> Result<Bytes, PackageError> {
        Ok(tokio::fs::read(self.dir.join(format!("{}.tar", p.sha256)))
            .await?
            .into())
    }

    /// Stream `body` into a new package; refused when it is not a tar, is
    /// larger than the limit, or its version, os type and arch have one.
    pub async fn add<E: std::fmt::Display>(
        &self,
        version: &str,
        os_type: &str,
        arch: &str,
        by: &str,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
    ) -> Result<Package, PackageError> {
        validate(version, os_type, arch)?;
        // Two at most at once: each may be max_bytes of disk until done.
        let Ok(_slot) = self.uploads.try_acquire() else {
            return Err(PackageError::Busy);
        };
        let upload = self.dir.join(format!(
            ".upload-{}",
            hex::encode(rand::random::<[u8; 8]>())
        ));
        // Removed however this ends (an error, or the request dropped when
        // the client goes away), unless renamed into place.
        let mut leftover = Leftover(Some(upload.clone()));
        let result = async {
            let mut file = tokio::fs::File::from_std(private_file(&upload)?);
            let mut hash = Sha256::new();
            let mut size = 0u64;
            let mut head = Vec::with_capacity(512);
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| PackageError::Body(e.to_string()))?;
                size += chunk.len() as u64;
                if size > self.max_bytes {
                    return Err(PackageError::TooLarge(self.max_bytes));
                }
                if head.len() < 512 {
                    let take = (512 - head.len()).min(chunk.len());
                    head.extend_from_slice(&chunk[..take]);
                }
                hash.update(&chunk);
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk).await?;
            }
            // A POSIX tar's first header says `ustar` at offset 257.
            if head.len() < 512 || &head[257..262] != b"ustar" {
                return Err(PackageError::Invalid(
                    "the package must be a tar archive (ustar) of bin lib tools mod".into(),
                ));
            }
            file.sync_all().await?;
            Ok((hex::encode(hash.finalize()), size))
        }
        .await;
        let (sha256, size) = result?;
        let _one = self.lock.lock().await;
        if let Some(p) = self.list()?.into_iter().find(|p| {
            p.sha256 == sha256
                || (p.version == version
                    && p.os_type.eq_ignore_ascii_case(os_type)
                    && p.arch == arch)
        }) {
            let _ = tokio::fs::remove_file(&upload).await;
            return Err(PackageError::Exists {
                version: p.version,
                os_type: p.os_type,
                arch: p.arch,
                sha256: p.sha256,
            });
        }
        let package = Package {
            sha256: sha256.clone(),
            version: version.to_owned(),
            os_type: os_type.to_owned(),
            arch: arch.to_owned(),
            size,
            uploaded_ms: now_millis(),
            uploaded_by: by.to_owned(),
        };
        let dir = self.dir.clone();
        let description = serde_json::to_vec_pretty(&package).expect("a package serializes");
        leftover.0 = None;
        let kept = tokio::task::spawn_blocking(move || {
            let tar = dir.join(format!("{sha256}.tar"));
            if let Err(e) = std::fs::rename(&upload, &tar) {
                let _ = std::fs::remove_file(&upload);
                return Err(e);
            }
            if let Err(e) = write_atomic(&dir.join(format!("{sha256}.json")), &description) {
                let _ = std::fs::remove_file(&tar);
                return Err(e);
            }
            sync_dir(&dir)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))?;
        kept?;
        {
            let mut known = self.known.write();
            known.push(package.clone());
            sort(&mut known);
        }
        metrics::counter!("tagent_hub_packages_total", "op" => "added").increment(1);
        Ok(package)
    }

    /// Delete a package (its description first: a crash between leaves no
    /// listed package without its tar).
    pub async fn delete(&self, sha256: &str) -> Result<Package, PackageError> {
        let _one = self.lock.lock().await;
        let p = self.get(sha256)?;
        let dir = self.dir.clone();
        let sha = p.sha256.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::remove_file(dir.join(format!("{sha}.json")))?;
            std::fs::remove_file(dir.join(format!("{sha}.tar")))?;
            sync_dir(&dir)
        })
        .await
        .map_err(|e| io::Error::other(e.to_string()))??;
        self.known.write().retain(|k| k.sha256 != p.sha256);
        metrics::counter!("tagent_hub_packages_total", "op" => "deleted").increment(1);
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-file tar, as `tar cf` writes it.
    pub fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
        let mut header = [0u8; 512];
        header[..name.len()].copy_from_slice(name.as_bytes());
        header[100..108].copy_from_slice(b"0000644\0");
        header[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        header[257..263].copy_from_slice(b"ustar\0");
        let mut out = header.to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
        out
    }

    fn body(data: Vec<u8>) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures_util::stream::iter(
            data.chunks(700)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_package_is_kept_whole_found_by_arch_then_default_and_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let packages = Packages::open(tmp.path(), 1 << 20).unwrap();
        let tar = tar_of("bin/tagent", b"new tagent");
        let p = packages
            .add("1.6.0", "Linux", "default", "token:ab", body(tar.clone()))
            .await
            .unwrap();
        assert_eq!(p.size, tar.len() as u64);
        assert_eq!(p.sha256, hex::encode(Sha256::digest(&tar)));
        assert_eq!(packages.data(&p).await.unwrap(), Bytes::from(tar.clone()));
        let other = tar_of("bin/tagent", b"for arm");
        packages
            .add("1.6.0", "Linux", "aarch64", "token:ab", body(other))
            .await
            .unwrap();
        let found = |arch| packages.find("1.6.0", "linux", arch).unwrap().unwrap().arch;
        assert_eq!(found("aarch64"), "aarch64");
        assert_eq!(found("x86_64"), "default");
        assert!(packages.find("1.7.0", "Linux", "x86_64").unwrap().is_none());
        // The same version, os and arch again: refused, nothing left behind.
        let again = packages
            .add(
                "1.6.0",
                "Linux",
                "default",
                "token:ab",
                body(tar_of("x", b"y")),
            )
            .await;
        assert!(
            matches!(again, Err(PackageError::Exists { .. })),
            "{again:?}"
        );
        // Not a tar, too large, a bad version: refused.
        let not_tar = packages
            .add("1.6.1", "Linux", "default", "t", body(vec![1; 2048]))
            .await;
        assert!(matches!(not_tar, Err(PackageError::Invalid(_))));
        let big = packages
            .add(
                "1.6.2",
                "Linux",
                "default",
                "t",
                body(tar_of("x", &vec![0; 1 << 20])),
            )
            .await;
        assert!(matches!(big, Err(PackageError::TooLarge(_))));
        let bad = packages
            .add("1.6 .0", "Linux", "default", "t", body(tar.clone()))
            .await;
        assert!(matches!(bad, Err(PackageError::Invalid(_))));
        let files = std::fs::read_dir(tmp.path().join("packages"))
            .unwrap()
            .count();
        assert_eq!(files, 4, "two packages, two files each, no leftover upload");
        packages.delete(&p.sha256).await.unwrap();
        assert_eq!(packages.list().unwrap().len(), 1);
        assert!(matches!(
            packages.delete(&p.sha256).await,
            Err(PackageError::NotFound(_))
        ));
        assert!(matches!(
            packages.get("../../etc/passwd"),
            Err(PackageError::NotFound(_))
        ));
    }
}
