//! Connecting to the API.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::error::CliError;

/// Connects now, so that an unreachable API is reported as such (with the address tried)
/// rather than as the first call's failure. `request_timeout` bounds each call; streams pass
/// `None`.
pub async fn connect(
    api: &str,
    connect_timeout: Duration,
    request_timeout: Option<Duration>,
) -> Result<Channel, CliError> {
    let mut endpoint = Endpoint::from_shared(api.to_owned())
        .map_err(|e| CliError::Usage(format!("--api {api:?} is not a valid URL: {e}")))?
        .connect_timeout(connect_timeout);
    if let Some(t) = request_timeout {
        endpoint = endpoint.timeout(t);
    }
    match tokio::time::timeout(connect_timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => Ok(channel),
        Ok(Err(e)) => Err(CliError::connect(api, &e)),
        Err(_) => Err(CliError::Connect {
            api: api.to_owned(),
            reason: format!(
                "no connection within {}",
                humantime::format_duration(connect_timeout)
            ),
        }),
    }
}
