//! A nats-server and a Postgres per test, FLEET_EVENTS, event builders and a running ingestion.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use canopy_ingestion::config::Config;
use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{
    AgentStarted, Envelope, Heartbeat, InventoryObject, InventorySnapshot, envelope::Body,
};
use canopy_kit::streams;
use canopy_kit::subject::ClusterId;
use canopy_testkit::{NatsProcess, Postgres, eventually};
use clap::Parser as _;
use sqlx::Row as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Env {
    pub nats: NatsProcess,
    /// Kept alive for the test.
    pub _pg: Postgres,
    pub db_url: String,
    pub js: jetstream::Context,
    pub pool: sqlx::PgPool,
}

impl Env {
    pub async fn start() -> anyhow::Result<Self> {
        let nats = NatsProcess::standalone_in_temp().await?;
        let pg = Postgres::start().await?;
        let db_url = pg.create_database("canopy").await?;
        let js = jetstream::new(nats.connect().await?);
        // On a seed, FLEET_EVENTS only sources the leaves; here events are published into it.
        js.create_stream(stream::Config {
            subjects: vec!["canopy.evt.>".into()],
            ..streams::fleet_events()
        })
        .await?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&db_url)
            .await?;
        canopy_ingestion::migrate(&pool).await?;
        Ok(Self {
            nats,
            _pg: pg,
            db_url,
            js,
            pool,
        })
    }

    pub fn config(&self, consumer: &str) -> Config {
        Config::try_parse_from([
            "canopy-ingestion",
            "--database-url",
            &self.db_url,
            "--nats-url",
            &self.nats.client_url(),
            "--consumer",
            consumer,
            "--batch",
            "50",
        ])
        .unwrap()
    }

    /// Builds and runs ingestion in this process until the returned token is cancelled.
    pub async fn ingestion(&self, consumer: &str) -> anyhow::Result<Running> {
        let app = canopy_ingestion::App::build(self.config(consumer)).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(app.run(stop.clone()));
        Ok(Running { stop, task })
    }

    pub async fn publish(&self, env: &Envelope) -> anyhow::Result<u64> {
        Ok(canopy_kit::publish::publish(&self.js, env).await?)
    }

    pub async fn publish_raw(&self, subject: &str, payload: Vec<u8>) -> anyhow::Result<u64> {
        Ok(self
            .js
            .publish(subject.to_owned(), payload.into())
            .await?
            .await?
            .sequence)
    }

    pub async fn checkpoint(&self, consumer: &str) -> anyhow::Result<u64> {
        let row = sqlx::query(
            "SELECT last_sequence FROM projection_checkpoints WHERE stream = 'FLEET_EVENTS' AND consumer = $1",
        )
        .bind(consumer)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or(0, |r| r.get::<i64, _>(0)) as u64)
    }

    /// Waits until `consumer` has applied everything up to `seq`.
    pub async fn applied(&self, consumer: &str, seq: u64) -> anyhow::Result<()> {
        eventually(
            WAIT,
            &format!("{consumer} to apply sequence {seq}"),
            || async { Ok((self.checkpoint(consumer).await? >= seq).then_some(())) },
        )
        .await
    }

    /// Every read-model row as JSON text, in key order.
    pub async fn dump(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for sql in [
            "SELECT row_to_json(t)::text FROM clusters t ORDER BY id",
            "SELECT row_to_json(t)::text FROM agents t ORDER BY cluster_id",
            "SELECT row_to_json(t)::text FROM inventory t ORDER BY cluster_id, kind, namespace, name",
            "SELECT row_to_json(t)::text FROM inventory_snapshots t ORDER BY cluster_id",
            "SELECT row_to_json(t)::text FROM interconnect_requests t ORDER BY request_id",
        ] {
            for row in sqlx::query(sql).fetch_all(&self.pool).await? {
                out.push(row.get::<String, _>(0));
            }
        }
        Ok(out)
    }
}

pub struct Running {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.task.await?
    }
}

pub fn cluster(id: &str) -> ClusterId {
    ClusterId::parse(id).unwrap()
}

pub fn started(c: &str, instance: &str) -> Envelope {
    envelope::new(
        &cluster(c),
        "agent",
        Body::AgentStarted(AgentStarted {
            agent_instance_id: instance.into(),
            agent_version: "0.1.0".into(),
            kubernetes_version: "v1.34.1".into(),
            heartbeat_interval_seconds: 10,
            ..Default::default()
        }),
    )
}

pub fn heartbeat(c: &str, instance: &str, sequence: u64) -> Envelope {
    envelope::new(
        &cluster(c),
        "agent",
        Body::Heartbeat(Heartbeat {
            agent_instance_id: instance.into(),
            sequence,
            agent_version: "0.1.0".into(),
            kubernetes_version: "v1.34.1".into(),
            node_count: 3,
            pod_count: 10 + sequence as u32,
            heartbeat_interval_seconds: 10,
        }),
    )
}

pub fn object(kind: &str, namespace: &str, name: &str) -> InventoryObject {
    InventoryObject {
        api_version: if kind == "Deployment" {
            "apps/v1"
        } else {
            "v1"
        }
        .into(),
        kind: kind.into(),
        namespace: namespace.into(),
        name: name.into(),
        uid: format!("uid-{kind}-{namespace}-{name}"),
        resource_version: "1".into(),
        digest: format!("sha256:{name}"),
        ..Default::default()
    }
}

pub fn chunk(
    c: &str,
    snapshot: &str,
    index: u32,
    last: bool,
    total: u64,
    objects: Vec<InventoryObject>,
) -> Envelope {
    envelope::new(
        &cluster(c),
        "agent",
        Body::InventorySnapshot(InventorySnapshot {
            snapshot_id: snapshot.into(),
            chunk_index: index,
            last_chunk: last,
            total_objects: total,
            objects,
        }),
    )
}
