//! `producer`: append messages to a topic from the command line or standard input.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clients::producer::{self, ProducerArgs};
use clients::{ClientError, Shutdown};

fn main() -> ExitCode {
    let args = ProducerArgs::parse();
    clients::init_tracing();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let client_error = e.downcast_ref::<ClientError>();
            if !client_error.is_some_and(ClientError::is_broken_pipe) {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(client_error.map_or(1, ClientError::exit_code))
        }
    }
}

/// Installs the Ctrl-C handler and runs the producer.
fn run(args: ProducerArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.signal()).context("cannot install the Ctrl-C handler")?;
    producer::run(args, &shutdown)?;
    Ok(())
}
