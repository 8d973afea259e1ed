//! The standard gRPC health and reflection services.

use std::time::Duration;

use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use canopy_kit::config::NatsArgs;
use canopy_kit::streams;
use canopy_testkit::{NatsProcess, assert_eventually, free_port};
use tokio_util::sync::CancellationToken;

use crate::stack::{Stack, WAIT};

const FLEET: &str = "canopy.api.v1.FleetService";
const EVENTS: &str = "canopy.api.v1.EventService";
const FINDINGS: &str = "canopy.api.v1.FindingsService";
const POLICY: &str = "canopy.api.v1.PolicyService";
const COMMANDS: &str = "canopy.api.v1.CommandService";
const SCHEDULES: &str = "canopy.api.v1.ScheduleService";
const HEALTH: &str = "canopy.api.v1.HealthService";
const TRAIL: &str = "canopy.api.v1.AuditTrailService";
const INTERCONNECTS: &str = "canopy.api.v1.InterconnectService";

async fn status(channel: &Channel, service: &str) -> anyhow::Result<ServingStatus> {
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(response.status)?)
}

#[tokio::test]
async fn serves_health_and_reflection() -> anyhow::Result<()> {
    let stack = Stack::start().await?;
    let channel = stack.channel().await?;
    for service in [
        "",
        FLEET,
        EVENTS,
        FINDINGS,
        POLICY,
        COMMANDS,
        SCHEDULES,
        HEALTH,
        TRAIL,
        INTERCONNECTS,
    ] {
        assert_eventually!(
            WAIT,
            async { Ok(status(&channel, service).await? == ServingStatus::Serving) },
            "{service:?} serving"
        );
    }

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(futures::stream::iter([request]))
        .await?
        .into_inner();
    let response = responses.message().await?.expect("a reflection response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            TRAIL,
            COMMANDS,
            EVENTS,
            FINDINGS,
            FLEET,
            HEALTH,
            INTERCONNECTS,
            POLICY,
            SCHEDULES,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection"
        ]
    );
    Ok(())
}

/// The api starts without Postgres and says so instead of failing; EventService, which needs
/// only NATS, serves.
#[tokio::test]
async fn reports_not_serving_while_postgres_is_unreachable() -> anyhow::Result<()> {
    canopy_kit::telemetry::init_for_tests();
    let nats = NatsProcess::standalone_in_temp().await?;
    async_nats::jetstream::new(nats.connect().await?)
        .create_stream(async_nats::jetstream::stream::Config {
            subjects: vec!["canopy.evt.>".into()],
            ..streams::fleet_events()
        })
        .await?;
    let cfg = canopy_api::config::Config {
        health_interval: Duration::from_millis(100),
        ..canopy_api::config::Config::new(
            format!("postgres://postgres@127.0.0.1:{}/canopy", free_port()),
            NatsArgs::new(nats.client_url()),
        )
    };
    let app = canopy_api::App::build(cfg).await?;
    let channel = Channel::from_shared(format!("http://{}", app.local_addr()?))?.connect_lazy();
    let stop = CancellationToken::new();
    let api = tokio::spawn(app.run(stop.clone()));

    assert_eventually!(WAIT, async {
        Ok(status(&channel, EVENTS).await? == ServingStatus::Serving)
    });
    assert_eq!(status(&channel, "").await?, ServingStatus::NotServing);
    assert_eq!(status(&channel, FLEET).await?, ServingStatus::NotServing);

    stop.cancel();
    tokio::time::timeout(WAIT, api).await???;
    Ok(())
}
