//! `canopyctl events watch`.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

use canopy_proto::api::v1::{
    WatchRequest, event_service_client::EventServiceClient, watch_request::Start,
};

use super::Context;
use crate::cli::{EventsCommand, OutputFormat, WatchArgs};
use crate::error::CliError;
use crate::output::{self, WatchEventJson};

pub async fn run(ctx: &Context, cmd: EventsCommand) -> Result<(), CliError> {
    match cmd {
        EventsCommand::Watch(args) => watch(ctx, args).await,
    }
}

fn timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn request(args: &WatchArgs) -> WatchRequest {
    let start = match (args.from_seq, args.since) {
        (Some(seq), _) => Some(Start::FromSequence(seq)),
        (None, Some(t)) => Some(Start::FromTime(timestamp(t))),
        (None, None) => None,
    };
    WatchRequest {
        cluster_id: args.cluster.clone().unwrap_or_default(),
        types: args.types.clone(),
        start,
    }
}

/// Prints events as they arrive until Ctrl-C, `--limit`, or the server ends the stream.
async fn watch(ctx: &Context, args: WatchArgs) -> Result<(), CliError> {
    if args.limit == Some(0) {
        return Ok(());
    }
    let mut client = EventServiceClient::new(ctx.stream_channel().await?);
    let mut stream = client.watch(request(&args)).await?.into_inner();
    if ctx.output == OutputFormat::Table {
        output::emit(output::EVENT_HEADER)?;
    }
    let mut seen = 0u64;
    loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            next = stream.message() => match next? {
                Some(event) => event,
                None => return Ok(()),
            },
        };
        let line = match ctx.output {
            OutputFormat::Table => output::event_line(&event),
            OutputFormat::Json => output::json(&WatchEventJson::from(&event), false),
        };
        output::emit(&line)?;
        seen += 1;
        if args.limit.is_some_and(|n| seen >= n) {
            return Ok(());
        }
    }
}
