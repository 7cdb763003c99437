//! Disk faults: the store's disk fills up, or turns read-only, under a
//! running hub.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Options, Server, ok_id};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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

#[tokio::test]
async fn a_full_disk_refuses_registrations_keeps_heartbeats_and_recovers_without_restart() {
    let Some(fs) = Tmpfs::mount("6m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let hub = Server::start_with(Options {
        data_dir: Some(fs.path().join("data")),
        config: Some("[heartbeat]\nstatus_flush_ms = 10\n".into()),
        ..Default::default()
    });
    let (status, reply) = hub.register(&body(0), Some("demo")).await;
    let first = ok_id(status, &reply);

    // A live session for it, over the heartbeat port.
    let stream = TcpStream::connect(hub.heartbeat_addr()).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let hb = format!(
        "{}\n",
        json!({"type":"monitor","tenant":"demo","agentId":first,"port":3939,"mgmtIp":"10.77.0.1",
               "proxyGroup":hub.advertise()})
    );
    let mut line = String::new();
    w.write_all(hb.as_bytes()).await.unwrap();
    r.read_line(&mut line).await.unwrap();
    assert_eq!(line.trim(), r#"{"Status":"OK"}"#);

    // The disk fills up.
    let filler = fs.path().join("filler");
    fill(&filler);

    // Registrations now fail with a clear error; find the first one.
    let mut acknowledged = vec![(0u32, first)];
    let mut refused = None;
    for n in 1..5000u32 {
        let (status, reply) = hub.register(&body(n), Some("demo")).await;
        if status == 200 {
            acknowledged.push((n, ok_id(status, &reply)));
            continue;
        }
        assert_eq!(status, 503, "{reply}");
        assert_eq!(reply["Status"], "ERROR");
        let message = reply["Message"].as_str().unwrap().to_owned();
        assert!(message.contains("not stored"), "{message}");
        refused = Some(n);
        break;
    }
    let refused = refused.expect("a full disk must refuse registrations");
    eprintln!(
        "disk full: {} registrations acknowledged, then refused",
        acknowledged.len()
    );

    // Heartbeats and the live status keep working meanwhile.
    for _ in 0..3 {
        line.clear();
        w.write_all(hb.as_bytes()).await.unwrap();
        r.read_line(&mut line).await.unwrap();
        assert_eq!(line.trim(), r#"{"Status":"OK"}"#);
    }
    let (_, t) = hub.get(&format!("/api/v1/tagents/{first}")).await;
    let t: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(t["status"], "connected");
    // The tagent goes away during the outage: its status change cannot be
    // stored yet.
    drop((r, w));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, t) = hub.get(&format!("/api/v1/tagents/{first}")).await;
        let t: serde_json::Value = serde_json::from_str(&t).unwrap();
        if t["status"] == "disconnected" {
            break;
        }
        assert!(Instant::now() < deadline, "never disconnected: {t}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Space comes back: the hub recovers without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (status, reply) = hub.register(&body(refused), Some("demo")).await;
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
        let (status, reply) = hub.register(&body(*n), Some("demo")).await;
        assert_eq!(ok_id(status, &reply), *id, "tagent {n}");
    }
    // The status change held back during the outage reached the store.
    let (_, t) = hub.get(&format!("/api/v1/tagents/{first}")).await;
    let t: serde_json::Value = serde_json::from_str(&t).unwrap();
    assert_eq!(t["disconnect_reason"], "eof", "{t}");
    let m = hub.metrics().await;
    assert!(m.value("tagent_hub_store_errors_total") >= 1.0);
    assert!(hub.logs().contains("store reopened after an I/O error"));
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
    let Some(fs) = Tmpfs::mount("6m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let hub = Server::start_with(Options {
        data_dir: Some(fs.path().join("data")),
        config: Some("[heartbeat]\nstatus_flush_ms = 10\n".into()),
        ..Default::default()
    });
    let (status, reply) = hub.register(&body(0), Some("demo")).await;
    let first = ok_id(status, &reply);
    let stream = TcpStream::connect(hub.heartbeat_addr()).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let hb = format!(
        "{}\n",
        json!({"type":"monitor","tenant":"demo","agentId":first,"port":3939,"mgmtIp":"10.77.0.1",
               "proxyGroup":hub.advertise()})
    );
    let mut line = String::new();
    let mut beat = async |line: &mut String| {
        line.clear();
        w.write_all(hb.as_bytes()).await.unwrap();
        r.read_line(line).await.unwrap();
        assert_eq!(line.trim(), r#"{"Status":"OK"}"#);
    };
    beat(&mut line).await;

    // Fill the disk until registrations are refused.
    let filler = fs.path().join("filler");
    fill(&filler);
    let mut acknowledged = vec![(0u32, first)];
    let mut n = 1;
    loop {
        let (status, reply) = hub.register(&body(n), Some("demo")).await;
        if status != 200 {
            assert_eq!(status, 503, "{reply}");
            break;
        }
        acknowledged.push((n, ok_id(status, &reply)));
        n += 1;
        assert!(n < 5000, "a full disk must refuse registrations");
    }
    // After the failed write the store closes its file, and reopens it to
    // retry at most once a second: in between, the disk can go read-only.
    let mut tries = 0;
    while !remount(&fs, "ro") {
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
        let (status, reply) = hub.register(&body(n), Some("demo")).await;
        assert_eq!(status, 503, "{reply}");
        assert_eq!(reply["Status"], "ERROR");
        messages.push(reply["Message"].as_str().unwrap().to_owned());
        beat(&mut line).await;
    }
    assert!(
        messages
            .iter()
            .any(|m| m.contains("not stored") && m.contains("Read-only file system")),
        "{messages:?}"
    );
    let t = common::tagent_json(&hub, first).await;
    assert_eq!(t["status"], "connected", "{t}");

    // Writable again, with space: registrations resume without a restart.
    assert!(remount(&fs, "rw"), "remount rw");
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let id = loop {
        let (status, reply) = hub.register(&body(n), Some("demo")).await;
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
        let (status, reply) = hub.register(&body(*k), Some("demo")).await;
        assert_eq!(ok_id(status, &reply), *id, "tagent {k}");
    }
    beat(&mut line).await;
    let t = common::tagent_json(&hub, first).await;
    assert_eq!(t["status"], "connected", "{t}");
    eprintln!(
        "read-only disk: {} acknowledged before, refused while read-only: {messages:?}",
        acknowledged.len()
    );
    assert!(hub.logs().contains("store reopened after an I/O error"));
}
