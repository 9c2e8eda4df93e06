//! `flowgate probe`: the node agent.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    config: flowgate_probe::Config,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let metrics = Arc::new(flowgate_probe::metrics::Metrics::default());
        let summary = flowgate_probe::run(
            args.config,
            metrics,
            |addr| tracing::info!(metrics = %addr, "ready"),
            crate::shutdown_signal(),
        )
        .await?;
        tracing::info!(
            flows = summary.flows_exported,
            ringbuf_lost = summary.ringbuf_lost,
            buffer_overflow_records = summary.buffer_overflow_records,
            unacknowledged_records = summary.unacknowledged_records,
            "probe stopped"
        );
        Ok(ExitCode::SUCCESS)
    })
}
