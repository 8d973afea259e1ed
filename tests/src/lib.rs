//! End-to-end harness: runs the built Canopy binaries on the `nats-config/` topology (see
//! [`Stack`]); the tests in `tests/it/` and the `canopy-demo` binary behind `make demo` use it.
#![forbid(unsafe_code)]

pub mod service;
pub mod stack;

pub use service::{Service, bin_dir, binary};
pub use stack::{DATABASE, Leaf, LeafSpec, Stack, StackOptions, start_leaf_nats, start_seed_nats};

use canopy_proto::api::v1::fleet_service_client::FleetServiceClient;
use canopy_proto::api::v1::{Cluster, ListClustersRequest};
use tonic::transport::Channel;

/// A gRPC client of the api's `FleetService`.
///
/// # Errors
/// When the api does not accept the connection.
pub async fn fleet_client(api_url: &str) -> anyhow::Result<FleetServiceClient<Channel>> {
    Ok(FleetServiceClient::connect(api_url.to_owned()).await?)
}

/// Every cluster the api knows, across pages.
///
/// # Errors
/// When a call fails.
pub async fn list_clusters(
    client: &mut FleetServiceClient<Channel>,
) -> anyhow::Result<Vec<Cluster>> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_clusters(ListClustersRequest {
                page_size: 100,
                page_token: page_token.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        all.extend(page.clusters);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}
