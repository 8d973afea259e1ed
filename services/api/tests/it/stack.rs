//! A real stack for tests: nats-server and Postgres on free ports, the real ingestion projecting
//! FLEET_EVENTS into Postgres, and the api, both in-process. Shared with canopyctl's tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use clap::Parser as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use canopy_kit::config::NatsArgs;
use canopy_kit::envelope;
use canopy_kit::proto::event::v1::{
    AgentStarted, Envelope, Heartbeat, InventoryObject, InventorySnapshot, envelope::Body,
};
use canopy_kit::streams;
use canopy_kit::subject::ClusterId;
use canopy_testkit::{NatsProcess, Postgres};

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Stack {
    pub nats: NatsProcess,
    pub pg: Postgres,
    pub js: jetstream::Context,
    pub database_url: String,
    pub api_addr: SocketAddr,
    api_stop: CancellationToken,
    api: Option<JoinHandle<anyhow::Result<()>>>,
    ingestion_stop: CancellationToken,
    ingestion: Option<JoinHandle<anyhow::Result<()>>>,
    progress: watch::Receiver<u64>,
}

impl Stack {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with_auth(None).await
    }

    /// [`Stack::start`] with the api checking bearer tokens against the key file `auth_keys`.
    pub async fn start_with_auth(auth_keys: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        canopy_kit::telemetry::init_for_tests();
        let (nats, pg) = tokio::try_join!(NatsProcess::standalone_in_temp(), Postgres::start())?;
        let database_url = pg.create_database("canopy").await?;
        let js = jetstream::new(nats.connect().await?);
        // On the seed FLEET_EVENTS only sources the leaves' EVENTS; here tests publish into it
        // directly, with the same name and subjects.
        js.create_stream(jetstream::stream::Config {
            subjects: vec!["canopy.evt.>".into()],
            ..streams::fleet_events()
        })
        .await
        .context("failed to create FLEET_EVENTS")?;

        let ingestion_cfg = canopy_ingestion::config::Config::try_parse_from([
            "canopy-ingestion",
            "--database-url",
            &database_url,
            "--nats-url",
            &nats.client_url(),
            "--http-addr",
            "127.0.0.1:0",
            "--batch",
            "100",
        ])?;
        let ingestion = canopy_ingestion::App::build(ingestion_cfg).await?;
        let progress = ingestion.progress();
        let ingestion_stop = CancellationToken::new();
        let ingestion = tokio::spawn(ingestion.run(ingestion_stop.clone()));

        let api_cfg = canopy_api::config::Config {
            health_interval: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(5),
            insecure_no_auth: auth_keys.is_none(),
            auth_keys,
            ..canopy_api::config::Config::new(&database_url, NatsArgs::new(nats.client_url()))
        };
        let api = canopy_api::App::build(api_cfg).await?;
        let api_addr = api.local_addr()?;
        let api_stop = CancellationToken::new();
        let api = tokio::spawn(api.run(api_stop.clone()));
        Ok(Self {
            nats,
            pg,
            js,
            database_url,
            api_addr,
            api_stop,
            api: Some(api),
            ingestion_stop,
            ingestion: Some(ingestion),
            progress,
        })
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Channel::from_shared(self.api_url())?
            .connect()
            .await
            .context("failed to connect to the api")
    }

    /// Publishes an event into FLEET_EVENTS and returns its sequence.
    pub async fn publish(&self, env: &Envelope) -> anyhow::Result<u64> {
        Ok(canopy_kit::publish::publish(&self.js, env).await?)
    }

    /// Publishes arbitrary bytes (e.g. a broken event) and returns the sequence.
    pub async fn publish_raw(&self, subject: &str, payload: &'static [u8]) -> anyhow::Result<u64> {
        let ack = self
            .js
            .publish(subject.to_owned(), payload.into())
            .await?
            .await?;
        Ok(ack.sequence)
    }

    /// Waits until ingestion has applied every event up to `seq`.
    pub async fn projected(&self, seq: u64) -> anyhow::Result<()> {
        let mut progress = self.progress.clone();
        tokio::time::timeout(WAIT, progress.wait_for(|applied| *applied >= seq))
            .await
            .with_context(|| format!("ingestion did not reach sequence {seq} in {WAIT:?}"))?
            .context("ingestion stopped")?;
        Ok(())
    }

    /// Publishes AgentStarted, the given heartbeat sequences (gaps are lost heartbeats) and one
    /// complete inventory snapshot of `objects` (kind, name); returns the last sequence.
    pub async fn seed_cluster(
        &self,
        cluster: &str,
        heartbeats: &[u64],
        objects: &[(&str, &str)],
    ) -> anyhow::Result<u64> {
        let mut last = self.publish(&started(cluster)).await?;
        for seq in heartbeats {
            last = self.publish(&heartbeat(cluster, *seq)).await?;
        }
        if !objects.is_empty() {
            last = self.publish(&snapshot(cluster, objects)).await?;
        }
        Ok(last)
    }

    /// Stops the api and returns what its `run` returned.
    pub async fn stop_api(&mut self) -> anyhow::Result<()> {
        self.api_stop.cancel();
        match self.api.take() {
            Some(task) => tokio::time::timeout(WAIT, task)
                .await
                .context("the api did not stop in time")??,
            None => Ok(()),
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.api_stop.cancel();
        self.ingestion_stop.cancel();
        for task in [self.api.take(), self.ingestion.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

// === Events ===

fn id(cluster: &str) -> ClusterId {
    ClusterId::parse(cluster).unwrap()
}

pub fn started(cluster: &str) -> Envelope {
    started_as(cluster, "i1", &[])
}

/// The `AgentStarted` of the agent instance `<cluster>-<instance>`, carrying `labels`.
pub fn started_as(cluster: &str, instance: &str, labels: &[(&str, &str)]) -> Envelope {
    envelope::new(
        &id(cluster),
        "agent/test",
        Body::AgentStarted(AgentStarted {
            agent_instance_id: format!("{cluster}-{instance}"),
            agent_version: "0.1.0".into(),
            kubernetes_version: "v1.31.2".into(),
            heartbeat_interval_seconds: 10,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }),
    )
}

pub fn heartbeat(cluster: &str, sequence: u64) -> Envelope {
    envelope::new(
        &id(cluster),
        "agent/test",
        Body::Heartbeat(Heartbeat {
            agent_instance_id: format!("{cluster}-i1"),
            sequence,
            agent_version: "0.1.0".into(),
            kubernetes_version: "v1.31.2".into(),
            node_count: 3,
            pod_count: u32::try_from(sequence).unwrap() * 10,
            heartbeat_interval_seconds: 10,
        }),
    )
}

pub fn snapshot(cluster: &str, objects: &[(&str, &str)]) -> Envelope {
    let objects: Vec<InventoryObject> = objects
        .iter()
        .map(|(kind, name)| InventoryObject {
            api_version: "v1".into(),
            kind: (*kind).into(),
            namespace: if *kind == "Node" {
                String::new()
            } else {
                "default".into()
            },
            name: (*name).into(),
            uid: format!("uid-{name}"),
            ..Default::default()
        })
        .collect();
    envelope::new(
        &id(cluster),
        "agent/test",
        Body::InventorySnapshot(InventorySnapshot {
            snapshot_id: format!("{cluster}-s1"),
            chunk_index: 0,
            last_chunk: true,
            total_objects: objects.len() as u64,
            objects,
        }),
    )
}
