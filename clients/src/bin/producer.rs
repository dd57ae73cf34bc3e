//! `producer`: append messages to a topic from the command line or standard input.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use clients::producer::{self, ProducerArgs};
use clients::{ClientError, Shutdown};

fn main() -> ExitCode {
    let args = ProducerArgs::parse();
    clients::init_tracing();
    let shutdown = Shutdown::new();
    match run(args, &shutdown) {
        // Ctrl-C ends a follow or a read of standard input normally, but the status still says
        // it was interrupted, as after any other Ctrl-C.
        Ok(()) if shutdown.is_signalled() => ExitCode::from(ClientError::Interrupted.exit_code()),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let client_error = e.downcast_ref::<ClientError>();
            // Ctrl-C and a closed output pipe are ends the user chose: the command has said
            // what it did already.
            let quiet = client_error
                .is_some_and(|e| e.is_broken_pipe() || matches!(e, ClientError::Interrupted));
            if !quiet {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(client_error.map_or(1, ClientError::exit_code))
        }
    }
}

/// Installs the Ctrl-C handler and runs the producer.
fn run(args: ProducerArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
    let flag = shutdown.clone();
    ctrlc::set_handler(move || clients::shutdown::on_ctrl_c(&flag))
        .context("cannot install the Ctrl-C handler")?;
    producer::run(args, shutdown)?;
    Ok(())
}
