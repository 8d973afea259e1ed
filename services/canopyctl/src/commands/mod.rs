//! One module per area of the API; each turns its subcommand into calls and output.

pub mod audits;
pub mod clusters;
pub mod cmd;
pub mod derogations;
pub mod events;
pub mod findings;
pub mod health;
pub mod interconnects;
pub mod nats;
pub mod policy;
pub mod token;
pub mod trail;

use crate::cli::{Cli, Command};
use crate::error::CliError;

pub async fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = Context {
        api: cli.api,
        output: cli.output,
        timeout: cli.timeout,
        token: token::resolve(cli.token, cli.token_file.as_deref())?,
    };
    match cli.command {
        Command::Clusters(cmd) => clusters::run(&ctx, cmd).await,
        Command::Events(cmd) => events::run(&ctx, cmd).await,
        Command::Policy(cmd) => policy::run(&ctx, cmd).await,
        Command::Derogations(cmd) => derogations::run(&ctx, cmd).await,
        Command::Findings(cmd) => findings::run(&ctx, cmd).await,
        Command::Posture(args) => findings::posture(&ctx, args).await,
        Command::Audits(cmd) => audits::run(&ctx, cmd).await,
        Command::Nats(cmd) => nats::run(&ctx, cmd),
        Command::Token(cmd) => token::run(&ctx, cmd),
        Command::Health(args) => health::health(&ctx, args).await,
        Command::Diagnoses(cmd) => health::diagnoses(&ctx, cmd).await,
        Command::Remediations(cmd) => health::remediations(&ctx, cmd).await,
        Command::Recommendations(cmd) => health::recommendations(&ctx, cmd).await,
        Command::Run(cmd) => cmd::run(&ctx, cmd).await,
        Command::Commands(cmd) => cmd::commands(&ctx, cmd).await,
        Command::Schedules(cmd) => cmd::schedules(&ctx, cmd).await,
        Command::Trail(cmd) => trail::run(&ctx, cmd).await,
        Command::Interconnects(cmd) => interconnects::run(&ctx, cmd).await,
        Command::Audit(args) => {
            let code = canopy_audit::cli::run(
                &args,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            match u8::try_from(code) {
                Ok(0) => Ok(()),
                Ok(code) => Err(CliError::Exit(code)),
                Err(_) => Err(CliError::Exit(2)),
            }
        }
    }
}

/// What every command gets from the global flags.
#[derive(Debug, Clone)]
pub struct Context {
    pub api: String,
    pub output: crate::cli::OutputFormat,
    pub timeout: std::time::Duration,
    /// The bearer token sent with every call, if any.
    pub token: Option<String>,
}

/// A channel that sends the bearer token with every call.
pub type ApiChannel = tonic::service::interceptor::InterceptedService<
    tonic::transport::Channel,
    token::BearerInterceptor,
>;

impl Context {
    /// A channel for unary calls, each bounded by `--timeout`.
    pub async fn unary_channel(&self) -> Result<ApiChannel, CliError> {
        let channel = crate::client::connect(&self.api, self.timeout, Some(self.timeout)).await?;
        Ok(self.with_token(channel))
    }

    fn with_token(&self, channel: tonic::transport::Channel) -> ApiChannel {
        tonic::service::interceptor::InterceptedService::new(
            channel,
            token::BearerInterceptor::new(self.token.as_deref()),
        )
    }

    /// A channel for streams: only connecting is bounded.
    pub async fn stream_channel(&self) -> Result<ApiChannel, CliError> {
        let channel = crate::client::connect(&self.api, self.timeout, None).await?;
        Ok(self.with_token(channel))
    }
}
