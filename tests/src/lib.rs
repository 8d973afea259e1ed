//! End-to-end harness: runs the built Canopy binaries on the `nats-config/` topology (see
//! [`Stack`]); the tests in `tests/it/` and the `canopy-demo` binary behind `make demo` use it.
#![forbid(unsafe_code)]

pub mod service;
pub mod stack;

pub use service::{Service, bin_dir, binary};
pub use stack::{
    DATABASE, Leaf, LeafSpec, Stack, StackOptions, leafz_names, start_leaf_nats,
    start_leaf_nats_unlinked, start_leaf_nats_with, start_seed_nats, start_seed_nats_with,
    start_trunk_nats, stream_events, test_authority,
};

use canopy_proto::api::v1::fleet_service_client::FleetServiceClient;
use canopy_proto::api::v1::{Cluster, ListClustersRequest};
use tonic::transport::Channel;

/// A gRPC client of the api's `FleetService`, sending no token.
///
/// # Errors
/// When the api does not accept the connection.
pub async fn fleet_client(api_url: &str) -> anyhow::Result<FleetServiceClient<AuthChannel>> {
    Ok(FleetServiceClient::new(
        channel_with_token(api_url, None).await?,
    ))
}

/// Every cluster the api knows, across pages.
///
/// # Errors
/// When a call fails.
pub async fn list_clusters(
    client: &mut FleetServiceClient<AuthChannel>,
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

/// Sends `authorization: Bearer <token>` with every call (nothing when `None`).
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// # Errors
    /// When the token is not a valid header value.
    pub fn new(token: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self(match token {
            Some(t) => Some(format!("Bearer {t}").parse()?),
            None => None,
        }))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A channel to the api that sends `token`.
pub type AuthChannel = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// A channel to `api_url` sending `token` with every call.
///
/// # Errors
/// When the api does not accept the connection or the token is not a header value.
pub async fn channel_with_token(api_url: &str, token: Option<&str>) -> anyhow::Result<AuthChannel> {
    let channel = Channel::from_shared(api_url.to_owned())?.connect().await?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        Bearer::new(token)?,
    ))
}

/// A channel to the stack's api with its admin token (none when the api runs without auth).
///
/// # Errors
/// As [`channel_with_token`].
pub async fn admin_channel(stack: &Stack) -> anyhow::Result<AuthChannel> {
    channel_with_token(&stack.api_url(), stack.admin_token.as_deref()).await
}
