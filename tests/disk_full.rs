//! Disk faults: the store's disk fills up, or turns read-only, under a
//! running hub.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Options, Server, Tagent, ok_id};
use serde_json::json;

/// A small file system of the test's own: a tmpfs, or ext4 on a loop
/// device. Unmounted (and the loop device detached) on drop.
struct Disk {
    dir: tempfile::TempDir,
    /// `loopN`, for ext4.
    loop_dev: Option<String>,
    /// Holds the ext4 image file.
    _image: Option<tempfile::TempDir>,
}

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Disk {
    /// `None` where mounting is not permitted (not root).
    fn tmpfs(size: &str) -> Option<Disk> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().to_str()?;
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path],
        )?;
        Some(Disk {
            dir,
            loop_dev: None,
            _image: None,
        })
    }

    /// A 32 MiB ext4 that turns read-only on errors, as production mounts
    /// do. `None` where loop devices, mkfs.ext4 or mounting are missing.
    fn ext4() -> Option<Disk> {
        let image_dir = tempfile::tempdir().ok()?;
        let image = image_dir.path().join("disk.img");
        std::fs::File::create(&image).ok()?.set_len(32 << 20).ok()?;
        let image = image.to_str()?;
        run("mkfs.ext4", &["-q", image])?;
        let dev = run("losetup", &["-f", "--show", image])?;
        let mut disk = Disk {
            dir: tempfile::tempdir().ok()?,
            loop_dev: Some(dev.trim_start_matches("/dev/").to_owned()),
            _image: Some(image_dir),
        };
        let path = disk.path().to_str()?.to_owned();
        if run("mount", &["-o", "errors=remount-ro", &dev, &path]).is_none() {
            let _ = run("losetup", &["-d", &dev]);
            disk.loop_dev = None;
            return None;
        }
        Some(disk)
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Make the ext4 fail as on a disk error: with `errors=remount-ro` it
    /// turns read-only at once, under files open for writing (EROFS).
    fn trigger_error(&self) -> bool {
        let Some(dev) = &self.loop_dev else {
            return false;
        };
        std::fs::write(format!("/sys/fs/ext4/{dev}/trigger_fs_error"), "1").is_ok()
    }

    /// What an operator does after a disk error: unmount, `e2fsck`, mount
    /// again. `false` when the unmount is refused (a file is still open).
    fn repair(&self) -> bool {
        let (Some(dev), Some(path)) = (&self.loop_dev, self.path().to_str()) else {
            return false;
        };
        let dev = format!("/dev/{dev}");
        if run("umount", &[path]).is_none() {
            return false;
        }
        // 0: clean, 1: errors fixed; either way the file system is usable.
        let fsck = Command::new("e2fsck").args(["-fy", &dev]).output();
        assert!(
            fsck.as_ref()
                .is_ok_and(|o| o.status.code().is_some_and(|c| c <= 1)),
            "e2fsck: {fsck:?}"
        );
        run("mount", &["-o", "errors=remount-ro", &dev, path]).is_some()
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
        if let Some(dev) = &self.loop_dev {
            let _ = run("losetup", &["-d", &format!("/dev/{dev}")]);
        }
    }
}

/// Fill the file system with `path` until it is full.
fn fill(path: &PathBuf) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

fn body(n: u32) -> serde_json::Value {
    let ip = format!("127.77.{}.{}", n / 250, n % 250 + 1);
    json!({"tagentId":"","port":"3939","ipString":ip,"mgmtIp":ip,"name":format!("h{n}"),
           "credential":"x".repeat(200)})
}

/// A hub with its data dir on a small disk of its own, and one registered
/// tagent holding a live compat session.
struct Rig {
    // Declared before `fs`: the hub stops before its disk is unmounted.
    hub: Server,
    fs: Disk,
    first: u64,
    session: Tagent,
    heartbeat: serde_json::Value,
}

impl Rig {
    /// `None` (the test is skipped) without a disk.
    async fn start(fs: Option<Disk>) -> Option<Rig> {
        let Some(fs) = fs else {
            eprintln!("skipped: cannot mount a file system here (needs root)");
            return None;
        };
        let hub = Server::start_with(Options {
            data_dir: Some(fs.path().join("data")),
            config: Some("[heartbeat]\nstatus_flush_ms = 10\n".into()),
            ..Default::default()
        });
        let (status, reply) = hub.register(&body(0), Some("demo")).await;
        let first = ok_id(status, &reply);
        let heartbeat = json!({"type":"monitor","tenant":"demo","agentId":first,"port":3939,
                               "mgmtIp":"127.77.0.1","proxyGroup":hub.advertise()});
        let session = Tagent::connect_from(hub.heartbeat_addr(), "127.77.0.1").await;
        let mut rig = Rig {
            hub,
            fs,
            first,
            session,
            heartbeat,
        };
        rig.beat().await;
        Some(rig)
    }

    /// Fill the disk, then register new tagents until one is refused (with
    /// 503 and a clear message). Returns the acknowledged `(n, id)`, the
    /// first tagent's included, and the `n` refused.
    async fn fill_until_refused(&self) -> (Vec<(u32, u64)>, u32) {
        fill(&self.filler());
        let mut acknowledged = vec![(0u32, self.first)];
        for n in 1..5000u32 {
            let (status, reply) = self.hub.register(&body(n), Some("demo")).await;
            if status == 200 {
                acknowledged.push((n, ok_id(status, &reply)));
                continue;
            }
            assert_eq!(status, 503, "{reply}");
            assert_eq!(reply["Status"], "ERROR");
            let message = reply["Message"].as_str().unwrap();
            assert!(message.contains("not stored"), "{message}");
            return (acknowledged, n);
        }
        panic!("a full disk must refuse registrations");
    }

    fn filler(&self) -> PathBuf {
        self.fs.path().join("filler")
    }

    /// A heartbeat, answered OK.
    async fn beat(&mut self) {
        let reply = self.session.send(&self.heartbeat).await;
        assert_eq!(reply, json!({"Status":"OK"}));
    }
}

#[tokio::test]
async fn a_full_disk_refuses_registrations_keeps_heartbeats_and_recovers_without_restart() {
    let Some(mut rig) = Rig::start(Disk::tmpfs("6m")).await else {
        return;
    };
    let first = rig.first;

    // The disk fills up: registrations fail with a clear error.
    let (acknowledged, refused) = rig.fill_until_refused().await;
    eprintln!(
        "disk full: {} registrations acknowledged, then refused",
        acknowledged.len()
    );

    // Heartbeats and the live status keep working meanwhile.
    for _ in 0..3 {
        rig.beat().await;
    }
    let (_, t) = rig.hub.get(&format!("/api/v1/tagents/{first}")).await;
    let t: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(t["status"], "connected");
    // The tagent goes away during the outage: its status change cannot be
    // stored yet.
    let filler = rig.filler();
    drop(rig.session);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, t) = rig.hub.get(&format!("/api/v1/tagents/{first}")).await;
        let t: serde_json::Value = serde_json::from_str(&t).unwrap();
        if t["status"] == "disconnected" {
            break;
        }
        assert!(Instant::now() < deadline, "never disconnected: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Space comes back: the hub recovers without a restart.
    std::fs::remove_file(filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (status, reply) = rig.hub.register(&body(refused), Some("demo")).await;
        if status == 200 {
            break ok_id(status, &reply);
        }
        assert!(Instant::now() < deadline, "never recovered: {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The refused registration had stored nothing: it is a new tagent now,
    // with the next id after every acknowledged one.
    let max = acknowledged.iter().map(|(_, id)| *id).max().unwrap();
    assert!(id > max, "id {id} after {max}");
    // Every acknowledged registration is intact and resolves to its id.
    for (n, id) in &acknowledged {
        let (status, reply) = rig.hub.register(&body(*n), Some("demo")).await;
        assert_eq!(ok_id(status, &reply), *id, "tagent {n}");
    }
    // The status change held back during the outage reached the store.
    let (_, t) = rig.hub.get(&format!("/api/v1/tagents/{first}")).await;
    let t: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(t["disconnect_reason"], "eof", "{t}");
    let m = rig.hub.metrics().await;
    assert!(m.value("tagent_hub_store_errors_total") >= 1.0);
    assert!(rig.hub.logs().contains("store reopened after an I/O error"));
}

/// The store's disk turns read-only under the running hub, as ext4 with
/// `errors=remount-ro` does on a disk error: writes to the open store file
/// fail with EROFS. (A plain `mount -o remount,ro` is refused while a file
/// is open for writing, so it cannot produce this.) The store's next reopen
/// fails too, which closes the file, so the operator can then unmount,
/// check and mount the disk again.
#[tokio::test]
async fn a_read_only_disk_refuses_registrations_keeps_heartbeats_and_recovers_when_writable() {
    let Some(mut rig) = Rig::start(Disk::ext4()).await else {
        return;
    };
    let first = rig.first;
    let mut acknowledged = vec![(0u32, first)];
    for n in 1..=5 {
        let (status, reply) = rig.hub.register(&body(n), Some("demo")).await;
        acknowledged.push((n, ok_id(status, &reply)));
    }
    if !rig.fs.trigger_error() {
        eprintln!("skipped: cannot trigger an ext4 error here");
        return;
    }

    // Read-only: each registration is refused with the reason; heartbeats
    // and the live status keep working.
    let n = 6;
    let mut messages = Vec::new();
    for _ in 0..3 {
        let (status, reply) = rig.hub.register(&body(n), Some("demo")).await;
        assert_eq!(status, 503, "{reply}");
        assert_eq!(reply["Status"], "ERROR");
        let message = reply["Message"].as_str().unwrap().to_owned();
        assert!(message.contains("not stored"), "{message}");
        messages.push(message);
        rig.beat().await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert!(
        messages
            .iter()
            .all(|m| m.contains("Read-only file system") || m.contains("disk full or read-only")),
        "{messages:?}"
    );
    assert!(
        messages[0].contains("Read-only file system"),
        "{messages:?}"
    );
    let m = rig.hub.metrics().await;
    assert_eq!(m.value("tagent_hub_sessions{protocol=\"compat\"}"), 1.0);

    // The operator unmounts the disk, checks it and mounts it again: the
    // hub has let go of its file (its reopen failed), so nothing is busy.
    let mut tries = 0;
    while !rig.fs.repair() {
        tries += 1;
        assert!(tries < 100, "the store's file stays open");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Registrations resume without a restart; nothing was half-written.
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (status, reply) = rig.hub.register(&body(n), Some("demo")).await;
        if status == 200 {
            break ok_id(status, &reply);
        }
        assert!(Instant::now() < deadline, "never recovered: {reply}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let max = acknowledged.iter().map(|(_, id)| *id).max().unwrap();
    assert!(
        id > max,
        "the refused registration stored nothing: id {id} after {max}"
    );
    // Every acknowledged registration is intact (the first one holds a live
    // session, so it would be refused as an IP conflict: look it up).
    for (k, id) in &acknowledged[1..] {
        let (status, reply) = rig.hub.register(&body(*k), Some("demo")).await;
        assert_eq!(ok_id(status, &reply), *id, "tagent {k}");
    }
    rig.beat().await;
    let t = common::tagent_json(&rig.hub, first).await;
    assert_eq!(t["status"], "connected", "{t}");
    eprintln!("read-only disk: refused while read-only: {messages:?}");
    assert!(rig.hub.logs().contains("store reopened after an I/O error"));
}
