//! Wiring: Postgres, NATS, the gRPC server with health and reflection, the health/metrics HTTP
//! server; graceful drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream;
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Server, server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use canopy_kit::health::{HealthServer, Readiness};
use canopy_kit::proto::api::v1::{
    audit_trail_service_server::{self, AuditTrailServiceServer},
    command_service_server::{self, CommandServiceServer},
    event_service_server::{self, EventServiceServer},
    findings_service_server::{self, FindingsServiceServer},
    fleet_service_server::{self, FleetServiceServer},
    interconnect_service_server::{self, InterconnectServiceServer},
    policy_service_server::{self, PolicyServiceServer},
    schedule_service_server::{self, ScheduleServiceServer},
};
use canopy_kit::streams;

use crate::adapters::audit::{
    PgAuditReadModel,
    control::JetStreamControl,
    grpc::{FindingsApi, PolicyApi},
};
use crate::adapters::commands::{
    CommandControl, PgCommands,
    grpc::{CommandApi, ScheduleApi},
};
use crate::adapters::interconnect::{InterconnectApi, PgInterconnects};
use crate::adapters::trail::{JetStreamTrail, TrailApi};
use crate::adapters::{
    EventLog, ReadModel,
    grpc::{EventApi, FleetApi},
    jetstream::JetStreamLog,
    postgres::PgReadModel,
};
use crate::auth::AuthLayer;
use crate::config::Config;

/// How long one health probe of Postgres or NATS may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A bound, connected, not yet serving api.
pub struct App {
    cfg: Config,
    verifier: Option<canopy_auth::token::Verifier>,
    listener: TcpListener,
    pool: PgPool,
    client: async_nats::Client,
    js: jetstream::Context,
    health: HealthServer,
}

impl App {
    /// Binds the gRPC and HTTP listeners and sets up the Postgres pool and the NATS client.
    /// Neither needs to be reachable yet: the api starts, reports NOT_SERVING, and turns
    /// SERVING once both answer.
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let verifier = match (&cfg.auth_keys, cfg.insecure_no_auth) {
            (Some(path), _) => Some(canopy_auth::token::Verifier::new(
                &canopy_auth::token::TokenConfig::load(path)?,
            )?),
            (None, true) => {
                warn!("authentication is OFF (--insecure-no-auth): every caller may do anything");
                None
            }
            (None, false) => anyhow::bail!(
                "--auth-keys (CANOPY_API_AUTH_KEYS) is required; --insecure-no-auth serves without authentication"
            ),
        };
        let pool = PgPoolOptions::new()
            .max_connections(cfg.db_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy(&cfg.database_url)
            .context("invalid --database-url (CANOPY_API_DATABASE_URL)")?;
        let client = canopy_kit::nats::connect(&cfg.nats, "canopy-api").await?;
        let js = canopy_kit::nats::jetstream(client.clone(), cfg.js_domain.as_deref());
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("failed to bind the gRPC server on {}", cfg.listen))?;
        let health = HealthServer::bind(cfg.http.http_addr).await?;
        Ok(Self {
            cfg,
            verifier,
            listener,
            pool,
            client,
            js,
            health,
        })
    }

    /// The gRPC server's address (the real port when `--listen` used port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("failed to read the gRPC server's address")
    }

    /// The address of `/healthz`, `/readyz` and `/metrics`.
    pub fn http_addr(&self) -> anyhow::Result<SocketAddr> {
        self.health.local_addr()
    }

    /// Serves until `shutdown` is cancelled; then stops accepting, ends Watch streams, lets
    /// unary calls finish within `--drain-timeout`, and closes NATS and Postgres.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let read_model = PgReadModel::new(self.pool.clone());
        let log = JetStreamLog::new(self.client.clone(), self.js.clone(), streams::FLEET_EVENTS);

        let (reporter, health_service) = tonic_health::server::health_reporter();
        set_status(&reporter, false, false).await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(canopy_kit::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("failed to build the reflection service")?;

        let readiness = self.health.readiness();
        let http_stop = CancellationToken::new();
        let http = tokio::spawn(self.health.serve(http_stop.clone()));
        let checker = tokio::spawn(check_health(
            read_model.clone(),
            log.clone(),
            reporter.clone(),
            readiness.clone(),
            self.cfg.health_interval,
            shutdown.clone(),
        ));

        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let trail = Arc::new(JetStreamTrail::new(self.js.clone()));
        let max = self.cfg.max_request_bytes;
        let mut server = tokio::spawn(
            Server::builder()
                .trace_fn(request_span)
                .layer(AuthLayer::new(self.verifier, trail.clone(), max))
                .add_service(health_service)
                .add_service(reflection)
                .add_service(
                    FleetServiceServer::new(FleetApi::new(read_model.clone()))
                        .max_decoding_message_size(max),
                )
                .add_service(
                    FindingsServiceServer::new(FindingsApi::new(PgAuditReadModel::new(
                        self.pool.clone(),
                    )))
                    .max_decoding_message_size(max),
                )
                .add_service(
                    PolicyServiceServer::new(PolicyApi::new(
                        PgAuditReadModel::new(self.pool.clone()),
                        JetStreamControl::new(self.js.clone()),
                    ))
                    .max_decoding_message_size(max),
                )
                .add_service(
                    canopy_kit::proto::api::v1::health_service_server::HealthServiceServer::new(
                        crate::adapters::health::HealthApi::new(self.pool.clone(), self.js.clone()),
                    )
                    .max_decoding_message_size(max),
                )
                .add_service(
                    CommandServiceServer::new(CommandApi::new(
                        PgCommands::new(self.pool.clone()),
                        CommandControl::new(self.js.clone()),
                        shutdown.clone(),
                    ))
                    .max_decoding_message_size(max),
                )
                .add_service(
                    ScheduleServiceServer::new(ScheduleApi::new(
                        PgCommands::new(self.pool.clone()),
                        CommandControl::new(self.js.clone()),
                    ))
                    .max_decoding_message_size(max),
                )
                .add_service(
                    AuditTrailServiceServer::new(TrailApi::new(self.pool.clone(), trail))
                        .max_decoding_message_size(max),
                )
                .add_service(
                    EventServiceServer::new(EventApi::new(
                        log,
                        read_model,
                        shutdown.clone(),
                        self.cfg.watch_buffer,
                    ))
                    .max_decoding_message_size(max),
                )
                .add_service(
                    InterconnectServiceServer::new(InterconnectApi::new(
                        PgInterconnects::new(self.pool.clone()),
                        CommandControl::new(self.js.clone()),
                    ))
                    .max_decoding_message_size(max),
                )
                .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
        );
        info!(%addr, "serving gRPC");

        let served = tokio::select! {
            r = &mut server => r,
            () = shutdown.cancelled() => {
                info!("draining in-flight calls");
                match tokio::time::timeout(self.cfg.drain_timeout, &mut server).await {
                    Ok(r) => r,
                    Err(_) => {
                        warn!(timeout = ?self.cfg.drain_timeout, "calls still running at the drain deadline; closing them");
                        server.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        let _ = checker.await;
        readiness.set_ready(false);
        set_status(&reporter, false, false).await;
        drain(self.client, self.pool).await;
        http_stop.cancel();
        let _ = http.await;
        served
            .context("the gRPC server task failed")?
            .context("the gRPC server failed")?;
        info!("stopped");
        Ok(())
    }
}

/// Builds and runs the api until `shutdown`.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    App::build(cfg).await?.run(shutdown).await
}

async fn drain(client: async_nats::Client, pool: PgPool) {
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = client.drain().await;
        pool.close().await;
    })
    .await;
}

/// The span of one gRPC call, child of the caller's trace when it sent `traceparent`.
fn request_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    let span = tracing::info_span!("grpc", rpc = %request.uri().path(), otel.kind = "server");
    let mut headers = async_nats::HeaderMap::new();
    for key in ["traceparent", "tracestate"] {
        if let Some(value) = request.headers().get(key).and_then(|v| v.to_str().ok()) {
            headers.insert(key, value);
        }
    }
    canopy_kit::telemetry::set_parent_from(&span, Some(&headers));
    span
}

/// FleetService and FindingsService need Postgres, EventService needs NATS and FLEET_EVENTS,
/// PolicyService both; the server as a whole ("") and `/readyz` need both.
async fn set_status(reporter: &HealthReporter, db: bool, nats: bool) {
    let status = |ok: bool| {
        if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        }
    };
    reporter
        .set_service_status(fleet_service_server::SERVICE_NAME, status(db))
        .await;
    reporter
        .set_service_status(event_service_server::SERVICE_NAME, status(nats))
        .await;
    reporter
        .set_service_status(findings_service_server::SERVICE_NAME, status(db))
        .await;
    reporter
        .set_service_status(policy_service_server::SERVICE_NAME, status(db && nats))
        .await;
    for name in [
        command_service_server::SERVICE_NAME,
        schedule_service_server::SERVICE_NAME,
        canopy_kit::proto::api::v1::health_service_server::SERVICE_NAME,
        audit_trail_service_server::SERVICE_NAME,
        interconnect_service_server::SERVICE_NAME,
    ] {
        reporter.set_service_status(name, status(db && nats)).await;
    }
    reporter.set_service_status("", status(db && nats)).await;
}

async fn check_health<R: ReadModel, L: EventLog>(
    read_model: R,
    log: L,
    reporter: HealthReporter,
    readiness: Readiness,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let (db, nats) = tokio::join!(
            tokio::time::timeout(PROBE_TIMEOUT, read_model.ping()),
            tokio::time::timeout(PROBE_TIMEOUT, log.ping()),
        );
        let db = match db {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("Postgres did not answer in time".to_owned()),
        };
        let nats = match nats {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("NATS did not answer in time".to_owned()),
        };
        let state = (db.is_ok(), nats.is_ok());
        if last != Some(state) {
            match (&db, &nats) {
                (Ok(()), Ok(())) => info!("Postgres and NATS reachable: serving"),
                _ => warn!(
                    postgres = db.as_ref().err().map_or("ok", String::as_str),
                    nats = nats.as_ref().err().map_or("ok", String::as_str),
                    "not serving"
                ),
            }
            set_status(&reporter, state.0, state.1).await;
            readiness.set_ready(state.0 && state.1);
            last = Some(state);
        }
    }
}
