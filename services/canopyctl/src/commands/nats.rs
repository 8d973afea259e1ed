//! `canopyctl nats init`: the operator, accounts, users and resolver folders of a deployment.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::OutputFormat;
use crate::commands::Context;
use crate::error::CliError;

#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Creates the operator, the system account, the CANOPY account, one account per leaf
    /// cluster, every service's user (least privilege, see README) and the resolver folders
    /// the nats-servers run from, in --dir.
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Folder to write into (created; existing files are overwritten).
    #[arg(long)]
    pub dir: PathBuf,
    /// Leaf clusters to create accounts and users for (repeat or comma-separate).
    #[arg(long = "cluster", value_delimiter = ',')]
    pub clusters: Vec<String>,
    /// Keep the operator and accounts already in --dir/keys (add leaves, re-issue users).
    #[arg(long)]
    pub keep_keys: bool,
}

pub fn run(ctx: &Context, cmd: NatsCommand) -> Result<(), CliError> {
    match cmd {
        NatsCommand::Init(args) => init(ctx, &args),
    }
}

fn init(ctx: &Context, args: &InitArgs) -> Result<(), CliError> {
    let authority = if args.keep_keys {
        canopy_auth::nats::Authority::load(&args.dir)
            .map_err(|e| CliError::Usage(format!("{e:#}")))?
    } else {
        canopy_auth::nats::Authority::generate()
    };
    let layout = canopy_auth::nats::init(&args.dir, &authority, &args.clusters)
        .map_err(|e| CliError::Usage(format!("{e:#}")))?;
    let text = match ctx.output {
        OutputFormat::Json => serde_json::json!({
            "dir": layout.dir,
            "operator_jwt": layout.operator_jwt,
            "system_account": layout.system_account,
            "canopy_account": layout.canopy_account,
            "leaf_accounts": layout.leaf_accounts,
        })
        .to_string(),
        OutputFormat::Table => {
            let mut out = format!(
                "wrote {}\noperator jwt    {}\nsystem account  {}\ncanopy account  {}\n",
                layout.dir.display(),
                layout.operator_jwt.display(),
                layout.system_account,
                layout.canopy_account
            );
            for (cluster, key) in &layout.leaf_accounts {
                out.push_str(&format!("leaf {cluster:<10} {key}\n"));
            }
            out.push_str("seed server variables: seed/nats.env; leaf server variables: leaves/<cluster>/nats.env");
            out
        }
    };
    println!("{text}");
    Ok(())
}
