//! `consumer`: show the logical brokers, list topics, fetch or follow messages.

use std::process::ExitCode;

use anyhow::Context;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use clients::consumer::{self, ConsumerArgs};
use clients::{ClientError, Shutdown};

fn main() -> ExitCode {
    let args = ConsumerArgs::parse();
    clients::init_tracing();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let client_error = e.downcast_ref::<ClientError>();
            if let Some(ClientError::NotATerminal) = client_error {
                // A usage error: let clap print it with the usage line, and exit 2.
                ConsumerArgs::command()
                    .error(
                        ErrorKind::MissingSubcommand,
                        "no command given; the interactive mode needs standard input and \
                         output on a terminal, so name a command (status, topics, fetch, follow)",
                    )
                    .exit();
            }
            if !client_error.is_some_and(ClientError::is_broken_pipe) {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(client_error.map_or(1, ClientError::exit_code))
        }
    }
}

/// Installs the Ctrl-C handler and runs the consumer.
fn run(args: ConsumerArgs) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let flag = shutdown.clone();
    ctrlc::set_handler(move || flag.signal()).context("cannot install the Ctrl-C handler")?;
    consumer::run(args, &shutdown)?;
    Ok(())
}
