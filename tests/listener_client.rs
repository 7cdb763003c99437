//! The client of a tagent's listener (`tagent_hub::listener`) against the
//! fake tagent over loopback: every request in both modes, and every hostile
//! behaviour giving its clear error, closing its connection, never hanging.

mod fake_tagent;

use std::future::Future;
use std::time::Duration;

use fake_tagent::{FakeTagent, Hostile, Setup};
use tagent_hub::listener::{Connection, ExecStatus, FileType, Limits, ListenerError, Password};

/// Short waits, so the stall cases end quickly.
fn limits() -> Limits {
    Limits {
        connect: Duration::from_secs(2),
        read: Duration::from_millis(800),
        operation: Duration::from_secs(10),
        max_download_bytes: 1024 * 1024,
        max_output_bytes: 64 * 1024,
        max_operations: 4,
    }
}

/// Every test is bounded, whatever the client does.
async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("the test finished within 60 s")
}

async fn open(fake: &FakeTagent) -> Result<Connection, ListenerError> {
    let password = Password::from_credential(&fake.credential()).unwrap();
    Connection::open(fake.addr(), &password, &limits()).await
}

async fn every_request(setup: Setup) {
    let encrypted = setup.encrypted;
    let fake = FakeTagent::start(setup).await;

    let conn = open(&fake).await.unwrap();
    assert_eq!(conn.greeting().ostype, "Linux");
    assert_eq!(
        conn.greeting().mode.as_str(),
        if encrypted { "Tagent1.1s" } else { "Tagent1.1" }
    );
    conn.echo("hello").await.unwrap();

    let conn = open(&fake).await.unwrap();
    let out = conn
        .execmd("cat $TAGENT_HOME/conf/tagent.conf", 64 * 1024)
        .await
        .unwrap();
    assert_eq!(out.status, ExecStatus::Exited(0));
    assert_eq!(out.lines[1], "tenant=demo");
    assert_eq!(out.lines.len(), fake_tagent::EXAMPLE_CONFIG.lines().count());

    let conn = open(&fake).await.unwrap();
    let out = conn.execmd("no-such-command", 64 * 1024).await.unwrap();
    assert_eq!(out.status, ExecStatus::Exited(127));
    assert!(out.clone().success().is_err());

    let conn = open(&fake).await.unwrap();
    let mut dl = conn
        .download("$TAGENT_HOME/logs/tagent.log.1", false, 1024 * 1024)
        .await
        .unwrap();
    assert_eq!(dl.file_type(), FileType::File);
    let mut got = Vec::new();
    while let Some(chunk) = dl.next_chunk().await.unwrap() {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, vec![b'x'; 100_000]);

    let conn = open(&fake).await.unwrap();
    let missing = conn
        .download("$TAGENT_HOME/logs/nope.log", false, 1024)
        .await;
    assert!(
        matches!(&missing, Err(ListenerError::NotFound(t)) if t.contains("nope.log not exists")),
        "{missing:?}"
    );

    let conn = open(&fake).await.unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    conn.upload("tagent.conf", "$TAGENT_HOME/conf/", &data)
        .await
        .unwrap();
    assert_eq!(
        fake.uploads(),
        [(
            "tagent.conf".to_owned(),
            "$TAGENT_HOME/conf/".to_owned(),
            data
        )]
    );

    let conn = open(&fake).await.unwrap();
    conn.reload().await.unwrap();
    assert_eq!(fake.reloads(), 1);

    let kinds: Vec<String> = fake.requests().into_iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            "echo", "execmd", "execmd", "download", "download", "upload", "reload"
        ]
    );
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.user == "none" && r.charset == "UTF-8")
    );
    assert!(fake.wait_all_closed().await, "every connection closed");
}

#[tokio::test]
async fn every_request_in_clear() {
    bounded(every_request(Setup::default())).await;
}

#[tokio::test]
async fn every_request_encrypted() {
    bounded(every_request(Setup::default().encrypted())).await;
}

#[tokio::test]
async fn a_windows_tagent_says_so_and_gets_its_charset() {
    bounded(async {
        let fake = FakeTagent::start(Setup::default().windows()).await;
        let conn = open(&fake).await.unwrap();
        assert!(conn.greeting().is_windows());
        assert_eq!(conn.greeting().charset, "cp936");
        conn.echo("x").await.unwrap();
        assert_eq!(fake.requests()[0].charset, "cp936");
    })
    .await;
}

/// What connecting and running one `execmd` gives against a hostile fake.
async fn against(hostile: Hostile) -> ListenerError {
    let fake = FakeTagent::start(Setup::default().hostile(hostile)).await;
    let result = match open(&fake).await {
        Ok(conn) => conn
            .execmd("cat $TAGENT_HOME/conf/tagent.conf", 64 * 1024)
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    let err = result.expect_err("a hostile peer gives an error");
    assert!(
        fake.wait_all_closed().await,
        "{hostile:?}: the client closed its connection"
    );
    err
}

#[tokio::test]
async fn hostile_peers_each_give_a_clear_error() {
    bounded(async {
        for (hostile, label) in [
            (Hostile::GarbageGreeting, "not_a_tagent"),
            (Hostile::NotTagentVersion, "not_a_tagent"),
            (Hostile::OversizedGreeting, "not_a_tagent"),
            (Hostile::WrongPassword, "wrong_credential"),
            (Hostile::AuthFailed, "auth_refused"),
            (Hostile::StallGreeting, "timeout"),
            (Hostile::StallRequest, "timeout"),
            (Hostile::GarbageChunks, "closed_early"),
            (Hostile::CloseEarly, "closed_early"),
            (Hostile::EndlessOutput, "too_large"),
        ] {
            let err = against(hostile).await;
            assert_eq!(err.label(), label, "{hostile:?}: {err}");
            assert!(!err.to_string().is_empty());
        }
    })
    .await;
}

#[tokio::test]
async fn a_wrong_credential_is_named_so() {
    bounded(async {
        let fake = FakeTagent::start(Setup::default()).await;
        let wrong = Password::from_credential(&fake_tagent::credential_of("not-it")).unwrap();
        let err = Connection::open(fake.addr(), &wrong, &limits())
            .await
            .expect_err("a wrong password cannot log in");
        assert!(matches!(err, ListenerError::WrongCredential(_)), "{err}");
        assert!(err.to_string().contains("wrong credential"), "{err}");
        assert_eq!(fake.logins(), 0);
    })
    .await;
}

#[tokio::test]
async fn an_endless_download_stops_at_its_bound() {
    bounded(async {
        let fake = FakeTagent::start(Setup::default().hostile(Hostile::EndlessDownload)).await;
        let conn = open(&fake).await.unwrap();
        let mut dl = conn
            .download("$TAGENT_HOME/logs/tagent.log", false, 200_000)
            .await
            .unwrap();
        let mut total = 0usize;
        let err = loop {
            match dl.next_chunk().await {
                Ok(Some(c)) => total += c.len(),
                Ok(None) => panic!("an endless download ended"),
                Err(e) => break e,
            }
        };
        assert!(
            matches!(err, ListenerError::TooLarge { max: 200_000 }),
            "{err}"
        );
        assert!(total <= 200_000);
        assert!(
            matches!(dl.next_chunk().await, Ok(None)),
            "done after the error"
        );
        drop(dl);
        assert!(fake.wait_all_closed().await);
    })
    .await;
}

#[tokio::test]
async fn nobody_listening_is_a_connect_error() {
    bounded(async {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let password = Password::new(b"x".to_vec()).unwrap();
        let err = Connection::open(port, &password, &limits())
            .await
            .unwrap_err();
        assert_eq!(err.label(), "connect_failed", "{err}");
    })
    .await;
}
