//! `canopyctl clusters list|get` (`clusters revoke` is in `interconnects`).

use chrono::Utc;

use canopy_proto::api::v1::{
    GetClusterRequest, ListClustersRequest, fleet_service_client::FleetServiceClient,
};

use super::Context;
use crate::cli::{ClustersCommand, OutputFormat};
use crate::error::CliError;
use crate::output::{self, ClusterJson, ClusterListJson};

pub async fn run(ctx: &Context, cmd: ClustersCommand) -> Result<(), CliError> {
    match cmd {
        ClustersCommand::List(args) => {
            let mut client = FleetServiceClient::new(ctx.unary_channel().await?);
            let mut clusters = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_clusters(ListClustersRequest {
                        page_size: args.page_size,
                        page_token,
                        match_labels: args.selector.iter().cloned().collect(),
                    })
                    .await?
                    .into_inner();
                clusters.extend(page.clusters);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            let text = match ctx.output {
                OutputFormat::Table => output::clusters_table(&clusters, Utc::now()),
                OutputFormat::Json => output::json(
                    &ClusterListJson {
                        clusters: clusters
                            .iter()
                            .map(|c| ClusterJson::new(c, false))
                            .collect(),
                    },
                    true,
                ),
            };
            output::emit(&text)?;
        }
        ClustersCommand::Get(args) => {
            let mut client = FleetServiceClient::new(ctx.unary_channel().await?);
            let cluster = client
                .get_cluster(GetClusterRequest {
                    cluster_id: args.id,
                })
                .await?
                .into_inner();
            let text = match ctx.output {
                OutputFormat::Table => output::cluster_details(&cluster, Utc::now()),
                OutputFormat::Json => output::json(&ClusterJson::new(&cluster, true), true),
            };
            output::emit(&text)?;
        }
        ClustersCommand::Revoke(args) => super::interconnects::revoke(ctx, args).await?,
    }
    Ok(())
}
