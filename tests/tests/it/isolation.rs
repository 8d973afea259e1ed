//! NATS isolation against real nats-servers in operator mode: a seed and two leaves (`a`, `b`)
//! started from `nats-config/` with credentials minted by `canopy_auth::nats::init`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use async_nats::{Client, ConnectOptions, Event};
use canopy_auth::nats::{Layout, perms};
use futures::StreamExt as _;
use tokio::sync::mpsc;

use canopy_testkit::NatsProcess;

const WAIT: Duration = Duration::from_secs(10);

struct Mesh {
    _tmp: tempfile::TempDir,
    layout: Layout,
    seed: NatsProcess,
    a: NatsProcess,
    b: NatsProcess,
}

async fn mesh() -> anyhow::Result<Mesh> {
    let tmp = tempfile::Builder::new()
        .prefix("canopy-isolation-")
        .tempdir()?;
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("logs"))?;
    let layout = canopy_auth::nats::init(
        &dir.join("nats-auth"),
        &canopy_e2e::test_authority()?,
        &["a".to_owned(), "b".to_owned()],
    )?;
    let leaf_port = canopy_testkit::try_free_port()?;
    let seed = canopy_e2e::start_seed_nats_with(dir, leaf_port, &layout).await?;
    let a = canopy_e2e::start_leaf_nats_with(dir, "a", leaf_port, &layout).await?;
    let b = canopy_e2e::start_leaf_nats_with(dir, "b", leaf_port, &layout).await?;
    Ok(Mesh {
        _tmp: tmp,
        layout,
        seed,
        a,
        b,
    })
}

/// A client and the server errors it receives (permission violations arrive there).
struct Conn {
    client: Client,
    errors: mpsc::UnboundedReceiver<String>,
}

async fn connect_as(url: &str, creds: &Path, inbox: &str) -> anyhow::Result<Conn> {
    let (tx, errors) = mpsc::unbounded_channel();
    let client = ConnectOptions::new()
        .custom_inbox_prefix(format!("_INBOX_{inbox}"))
        .credentials_file(creds)
        .await?
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await?;
    Ok(Conn { client, errors })
}

/// Connecting with `creds` to `url` is refused.
async fn refused(url: &str, creds: &Path) -> anyhow::Result<String> {
    let result = ConnectOptions::new()
        .credentials_file(creds)
        .await?
        .connection_timeout(Duration::from_secs(5))
        .connect(url)
        .await;
    match result {
        Ok(_) => bail!("{} was accepted by {url}", creds.display()),
        Err(e) => Ok(e.to_string()),
    }
}

/// Publishes on `subject` until `sub` receives it: `flush` does not wait for the server, so a
/// subscription made on another connection may not be in place for the first copies.
async fn receive_while_publishing(
    client: &Client,
    subject: &str,
    sub: &mut async_nats::Subscriber,
) -> anyhow::Result<async_nats::Message> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        client.publish(subject.to_owned(), "x".into()).await?;
        client.flush().await?;
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            return Ok(m);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{subject} never arrived within {WAIT:?}");
        }
    }
}

impl Conn {
    /// Waits for a permission violation naming `subject`.
    async fn violation(&mut self, subject: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let e = tokio::time::timeout_at(deadline, self.errors.recv())
                .await
                .with_context(|| format!("no permission violation for {subject} within {WAIT:?}"))?
                .context("client closed")?;
            if e.to_ascii_lowercase().contains("permissions violation") && e.contains(subject) {
                return Ok(e);
            }
        }
    }

    async fn publish_denied(&mut self, subject: &str) -> anyhow::Result<()> {
        self.client.publish(subject.to_owned(), "x".into()).await?;
        self.client.flush().await?;
        self.violation(subject).await?;
        Ok(())
    }

    async fn subscribe_denied(&mut self, subject: &str) -> anyhow::Result<()> {
        let _sub = self.client.subscribe(subject.to_owned()).await?;
        self.client.flush().await?;
        self.violation(subject).await?;
        Ok(())
    }

    /// A JetStream API request that must be refused by permissions (it also gets no reply).
    async fn api_denied(&mut self, subject: &str) -> anyhow::Result<()> {
        let reply = tokio::time::timeout(
            Duration::from_secs(3),
            self.client.request(subject.to_owned(), "{}".into()),
        )
        .await;
        if let Ok(Ok(m)) = &reply {
            bail!(
                "{subject} answered: {}",
                String::from_utf8_lossy(&m.payload)
            );
        }
        self.violation(subject).await?;
        Ok(())
    }
}

#[tokio::test]
async fn leaf_credentials_cannot_publish_as_another_cluster() -> anyhow::Result<()> {
    let m = mesh().await?;
    let mut agent = connect_as(
        &m.a.client_url(),
        &m.layout.leaf_creds("a", "agent"),
        "canopy-agent",
    )
    .await?;
    // Its own subjects work: an admin of leaf a sees the message.
    let admin = m.a.connect().await?;
    let mut own = admin.subscribe("canopy.evt.a.>").await?;
    admin.flush().await?;
    let got =
        receive_while_publishing(&agent.client, "canopy.evt.a.agent.heartbeat", &mut own).await?;
    assert_eq!(got.subject.as_str(), "canopy.evt.a.agent.heartbeat");
    // Another cluster's subjects are refused by the server.
    agent.publish_denied("canopy.evt.b.agent.heartbeat").await?;
    agent.publish_denied("canopy.cmd.a.run-audit").await?;
    agent.publish_denied("canopy.ctl.policy.changed").await?;
    // Its credentials are worthless on another leaf and on the seed (unknown account).
    let on_b = refused(&m.b.client_url(), &m.layout.leaf_creds("a", "agent")).await?;
    assert!(
        on_b.to_ascii_lowercase().contains("authorization"),
        "{on_b}"
    );
    refused(&m.seed.client_url(), &m.layout.leaf_creds("a", "agent")).await?;
    refused(&m.seed.client_url(), &m.layout.leaf_creds("a", "gateway")).await?;
    // The link user is for leafnode connections only.
    refused(&m.seed.client_url(), &m.layout.leaf_creds("a", "link")).await?;
    Ok(())
}

#[tokio::test]
async fn leaf_credentials_cannot_read_other_commands_or_fleet_events() -> anyhow::Result<()> {
    let m = mesh().await?;
    let mut agent = connect_as(
        &m.a.client_url(),
        &m.layout.leaf_creds("a", "agent"),
        "canopy-agent",
    )
    .await?;
    agent.subscribe_denied("canopy.cmd.b.>").await?;
    agent.subscribe_denied("canopy.evt.>").await?;
    agent.subscribe_denied("_INBOX_canopy-api.>").await?;
    agent
        .api_denied("$JS.API.CONSUMER.CREATE.FLEET_EVENTS")
        .await?;
    agent
        .api_denied("$JS.seed.API.CONSUMER.CREATE.COMMANDS")
        .await?;
    agent
        .api_denied("$JS.seed.API.STREAM.INFO.FLEET_EVENTS")
        .await?;
    agent
        .api_denied("$JS.b.API.CONSUMER.CREATE.COMMANDS")
        .await?;
    // Nothing of b crosses a's link. Each round publishes b's subjects and then a control
    // message a's link may carry ($JS.FC.EVENTS.*, flow control of a's EVENTS source); one
    // publisher's messages keep their order, so when the control arrives at leaf a, anything
    // forwarded before it would have arrived too.
    let seed_admin = m.seed.connect().await?;
    let a_admin = m.a.connect().await?;
    let mut at_a = futures::stream::select_all([
        a_admin.subscribe("canopy.>").await?,
        a_admin.subscribe("$JS.b.API.>").await?,
        a_admin.subscribe("$JS.FC.>").await?,
    ]);
    a_admin.flush().await?;
    let forbidden = [
        "canopy.cmd.b.run-audit",
        "canopy.evt.b.agent.heartbeat",
        "canopy.deliver.b.x",
        "$JS.b.API.CONSUMER.CREATE.EVENTS",
        "$JS.FC.COMMANDS.x",
    ];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for subject in forbidden {
            seed_admin.publish(subject, "for b".into()).await?;
        }
        seed_admin
            .publish("$JS.FC.EVENTS.control", "".into())
            .await?;
        seed_admin.flush().await?;
        let got = tokio::time::timeout(Duration::from_millis(200), at_a.next()).await;
        if let Ok(Some(m)) = got {
            assert_eq!(
                m.subject.as_str(),
                "$JS.FC.EVENTS.control",
                "leaf a received {}",
                m.subject
            );
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the control message never crossed a's link");
        }
    }
    Ok(())
}

#[tokio::test]
async fn service_and_leaf_credentials_cannot_create_or_delete_streams() -> anyhow::Result<()> {
    let m = mesh().await?;
    // The gateway of the seed owns the streams; create them as it would.
    let admin = m.seed.connect().await?;
    let js = async_nats::jetstream::new(admin);
    for cfg in canopy_kit::streams::seed_streams() {
        js.create_stream(cfg).await?;
    }
    let mut agent = connect_as(
        &m.a.client_url(),
        &m.layout.leaf_creds("a", "agent"),
        "canopy-agent",
    )
    .await?;
    agent.api_denied("$JS.API.STREAM.CREATE.EVIL").await?;
    agent.api_denied("$JS.API.STREAM.DELETE.EVENTS").await?;
    agent.api_denied("$JS.API.STREAM.PURGE.EVENTS").await?;
    agent.api_denied("$JS.API.STREAM.UPDATE.COMMANDS").await?;
    let mut api = connect_as(
        &m.seed.client_url(),
        &m.layout.seed_creds("api"),
        "canopy-api",
    )
    .await?;
    api.api_denied("$JS.API.STREAM.CREATE.EVIL").await?;
    api.api_denied("$JS.API.STREAM.DELETE.FLEET_EVENTS").await?;
    api.api_denied("$JS.API.STREAM.DELETE.AUDIT_TRAIL").await?;
    api.publish_denied("canopy.evt.a.agent.heartbeat").await?;
    // Not even the seed's administrator may delete or purge the audit trail.
    let mut admin =
        connect_as(&m.seed.client_url(), &m.layout.seed_creds("admin"), "admin").await?;
    admin
        .api_denied("$JS.API.STREAM.DELETE.AUDIT_TRAIL")
        .await?;
    admin.api_denied("$JS.API.STREAM.PURGE.AUDIT_TRAIL").await?;
    assert!(js.get_stream("AUDIT_TRAIL").await.is_ok());
    Ok(())
}

#[tokio::test]
async fn a_bootstrap_credential_can_only_send_its_interconnect_request() -> anyhow::Result<()> {
    let m = mesh().await?;
    let admin = m.seed.connect().await?;
    let mut requests = admin.subscribe("canopy.interconnect.>").await?;
    admin.flush().await?;
    let mut boot = connect_as(
        &m.seed.client_url(),
        &m.layout.leaf_creds("a", "bootstrap"),
        "canopy-bootstrap.a",
    )
    .await?;
    let got =
        receive_while_publishing(&boot.client, "canopy.interconnect.request.a", &mut requests)
            .await?;
    assert_eq!(got.subject.as_str(), "canopy.interconnect.request.a");
    // Not another cluster's request, not a CONTROL event, not another cluster's inbox.
    boot.publish_denied("canopy.interconnect.request.b").await?;
    boot.publish_denied("canopy.ctl.interconnect.requested")
        .await?;
    boot.publish_denied("canopy.ctl.interconnect.approved")
        .await?;
    boot.subscribe_denied("_INBOX_canopy-bootstrap.b.>").await?;
    boot.publish_denied("canopy.evt.a.agent.heartbeat").await?;
    boot.subscribe_denied("canopy.>").await?;
    boot.api_denied("$JS.API.STREAM.INFO.CONTROL").await?;
    // It is no user of a leaf either.
    refused(&m.a.client_url(), &m.layout.leaf_creds("a", "bootstrap")).await?;
    Ok(())
}

#[tokio::test]
async fn revoked_and_expired_credentials_are_refused() -> anyhow::Result<()> {
    let m = mesh().await?;
    let mut authority = canopy_e2e::test_authority()?;
    let dir = tempfile::tempdir()?;
    let spec = perms::spec(perms::Home::Seed, "api").context("api user")?;

    // Expired a minute ago.
    let expired = authority.canopy.user(
        "expired",
        perms::permissions(spec, ""),
        &["STANDARD"],
        Some(chrono::Utc::now().timestamp() - 60),
    )?;
    let expired_file = dir.path().join("expired.creds");
    std::fs::write(&expired_file, expired.file_text())?;
    let e = refused(&m.seed.client_url(), &expired_file).await?;
    assert!(e.to_ascii_lowercase().contains("authorization"), "{e}");

    // Valid until revoked: connects, then the account JWT with the revocation is pushed to the
    // seed's full resolver and the server drops the connection and refuses new ones.
    let user = authority.canopy.user(
        "to-revoke",
        perms::permissions(spec, ""),
        &["STANDARD"],
        None,
    )?;
    let user_file = dir.path().join("user.creds");
    std::fs::write(&user_file, user.file_text())?;
    let conn = connect_as(&m.seed.client_url(), &user_file, "canopy-api").await?;
    conn.client.flush().await?;

    authority.canopy.revoke(&user.public_key);
    let jwt =
        authority.account_jwt_issued_at(&authority.canopy, chrono::Utc::now().timestamp() + 1)?;
    let sys = async_nats::ConnectOptions::new()
        .credentials_file(m.layout.seed_creds("sys"))
        .await?
        .connect(m.seed.client_url())
        .await?;
    let reply = sys.request("$SYS.REQ.CLAIMS.UPDATE", jwt.into()).await?;
    let text = String::from_utf8_lossy(&reply.payload).to_string();
    assert!(text.contains("\"code\":200"), "claims update: {text}");
    canopy_testkit::eventually(WAIT, "the revoked user is refused", || async {
        Ok(refused(&m.seed.client_url(), &user_file).await.ok())
    })
    .await?;
    canopy_testkit::eventually(WAIT, "the revoked user is disconnected", || async {
        Ok(
            (conn.client.connection_state() != async_nats::connection::State::Connected)
                .then_some(()),
        )
    })
    .await?;
    Ok(())
}

/// What a server answers to the user of `creds` connecting from the local address `from`: the
/// NATS handshake by hand (async-nats cannot choose its source address). `Ok(())` once the
/// server answers PONG, else the server's error line.
async fn handshake_from(
    from: std::net::IpAddr,
    server: std::net::SocketAddr,
    creds: &Path,
) -> anyhow::Result<Result<(), String>> {
    use base64::Engine as _;
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

    let (jwt, seed) = canopy_auth::nats::jwt::parse_creds(&std::fs::read_to_string(creds)?)?;
    let key = nkeys::KeyPair::from_seed(&seed)?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::new(from, 0))?;
    let stream = socket.connect(server).await?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let info = tokio::time::timeout(WAIT, lines.next_line())
        .await??
        .context("no INFO")?;
    let info: serde_json::Value = serde_json::from_str(
        info.strip_prefix("INFO ")
            .with_context(|| format!("not INFO: {info}"))?,
    )?;
    let nonce = info["nonce"].as_str().context("no nonce")?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.sign(nonce.as_bytes())?);
    let connect = serde_json::json!({
        "jwt": jwt, "sig": sig, "verbose": false, "pedantic": false, "protocol": 1,
        "name": "handshake", "lang": "rust", "version": "0",
    });
    write
        .write_all(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
        .await?;
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await??;
        match line.as_deref() {
            Some("PONG") => return Ok(Ok(())),
            Some(l) if l.starts_with("-ERR") => return Ok(Err(l.to_owned())),
            Some(_) => {}
            None => return Ok(Err("closed".to_owned())),
        }
    }
}

#[tokio::test]
async fn a_leaf_system_user_connects_from_its_own_pod_only() -> anyhow::Result<()> {
    let m = mesh().await?;
    let leaf_sys = m.layout.leaf_creds("a", "gateway-sys");
    let seed_sys = m.layout.seed_creds("gateway-sys");
    let loopback: std::net::IpAddr = "127.0.0.1".parse()?;
    // Another address of this host, as a connection from elsewhere would have.
    let elsewhere: std::net::IpAddr = "127.0.0.2".parse()?;
    let leaf_addr: std::net::SocketAddr = m.a.client_url().trim_start_matches("nats://").parse()?;
    let seed_addr: std::net::SocketAddr =
        m.seed.client_url().trim_start_matches("nats://").parse()?;

    // Beside its own nats-server, as the leaf's gateway runs: accepted.
    assert_eq!(
        handshake_from(loopback, leaf_addr, &leaf_sys).await?,
        Ok(())
    );
    // The same system user is valid on every server of the operator, yet the seed refuses it
    // from anywhere but its own loopback; so does the leaf.
    let refused = handshake_from(elsewhere, seed_addr, &leaf_sys).await?;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_ascii_lowercase().contains("authorization")),
        "{refused:?}"
    );
    let refused = handshake_from(elsewhere, leaf_addr, &leaf_sys).await?;
    assert!(refused.is_err(), "{refused:?}");
    // The seed's own gateway system user is not tied to an address.
    assert_eq!(
        handshake_from(elsewhere, seed_addr, &seed_sys).await?,
        Ok(())
    );
    Ok(())
}

#[tokio::test]
async fn a_leaf_sources_only_its_own_commands_through_its_link() -> anyhow::Result<()> {
    let m = mesh().await?;
    let seed_js = async_nats::jetstream::new(m.seed.connect().await?);
    seed_js
        .create_stream(canopy_kit::streams::seed_commands())
        .await?;
    let a = canopy_kit::subject::ClusterId::parse("a")?;
    let leaf_js = async_nats::jetstream::new(m.a.connect().await?);
    let leaf_commands = leaf_js
        .create_stream(canopy_kit::streams::leaf_commands(&a, "seed"))
        .await?;
    for subject in ["canopy.cmd.b.run-audit", "canopy.cmd.a.run-audit"] {
        seed_js.publish(subject, "cmd".into()).await?.await?;
    }
    // The seed's consumer for a's source is created by the leaf through the link user; the
    // command of a arrives, the one of b (published first) never does.
    let state = canopy_testkit::eventually(WAIT, "a's command on leaf a", || {
        let js = leaf_js.clone();
        async move {
            let mut stream = js.get_stream("COMMANDS").await?;
            let info = stream.info().await?;
            Ok((info.state.messages >= 1).then_some(info.state.clone()))
        }
    })
    .await?;
    assert_eq!(state.messages, 1);
    let msg = leaf_commands.get_raw_message(state.first_sequence).await?;
    assert_eq!(msg.subject.as_str(), "canopy.cmd.a.run-audit");
    Ok(())
}
