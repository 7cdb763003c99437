//! Disk faults: the store's disk fills up, or turns read-only, under a
//! running hub.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Options, Server, Tagent, ok_id};
use serde_json::json;

/// A small tmpfs of the test's own, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` where mounting is not permitted (not root).
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
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
    let ip = format!("10.77.{}.{}", n / 250, n % 250 + 1);
    json!({"tagentId":"","port":"3939","ipString":ip,"mgmtIp":ip,"name":format!("h{n}"),
           "credential":"x".repeat(200)})
}

/// A hub with its data dir on a small tmpfs of its own, and one registered
/// tagent holding a live compat session. `None` where mounting is not
/// permitted (not root).
struct Rig {
    // Declared before `fs`: the hub stops before its disk is unmounted.
    hub: Server,
    fs: Tmpfs,
    first: u64,
    session: Tagent,
    heartbeat: serde_json::Value,
}

impl Rig {
    async fn start() -> Option<Rig> {
        let Some(fs) = Tmpfs::mount("6m") else {
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
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
                               "mgmtIp":"10.77.0.1","proxyGroup":hub.advertise()});
        let session = Tagent::connect(hub.heartbeat_addr()).await;
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
    let Some(mut rig) = Rig::start().await else {
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

/// `mount -o remount,<mode>` of the test's tmpfs; `false` when refused (busy).
fn remount(fs: &Tmpfs, mode: &str) -> bool {
    Command::new("mount")
        .args(["-o", &format!("remount,{mode}")])
        .arg(fs.path())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The disk under the store turns read-only while the hub runs.
///
/// Linux refuses to remount a file system read-only while a file on it is
/// open for writing (EBUSY), and the store's file always is, except after
/// an I/O error: the store then closes it until the next commit. So the
/// disk first fills up (as above), then the filler is removed and the tmpfs
/// remounted read-only. (A file system that turns read-only on its own,
/// e.g. ext4 with `errors=remount-ro`, fails the open file's writes with
/// EROFS and so reaches the same state.)
#[tokio::test]
async fn a_read_only_disk_refuses_registrations_keeps_heartbeats_and_recovers_when_writable() {
    let Some(mut rig) = Rig::start().await else {
        return;
    };
    let first = rig.first;

    let (acknowledged, n) = rig.fill_until_refused().await;
    let filler = rig.filler();
    // After the failed write the store closes its file, and reopens it to
    // retry at most once a second: in between, the disk can go read-only.
    let mut tries = 0;
    while !remount(&rig.fs, "ro") {
        tries += 1;
        assert!(
            tries < 100,
            "the store keeps its file open after an I/O error"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Read-only: registrations are refused with the reason, heartbeats and
    // the live status keep working.
    let mut messages = Vec::new();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, reply) = rig.hub.register(&body(n), Some("demo")).await;
        assert_eq!(status, 503, "{reply}");
        assert_eq!(reply["Status"], "ERROR");
        messages.push(reply["Message"].as_str().unwrap().to_owned());
        rig.beat().await;
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("not stored") && m.contains("Read-only file system")),
        "{messages:?}"
    );
    let t = common::tagent_json(&rig.hub, first).await;
    assert_eq!(t["status"], "connected", "{t}");

    // Writable again, with space: registrations resume without a restart.
    assert!(remount(&rig.fs, "rw"), "remount rw");
    std::fs::remove_file(&filler).unwrap();
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
    eprintln!(
        "read-only disk: {} acknowledged before, refused while read-only: {messages:?}",
        acknowledged.len()
    );
    assert!(rig.hub.logs().contains("store reopened after an I/O error"));
}
