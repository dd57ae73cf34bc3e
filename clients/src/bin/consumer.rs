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
    let shutdown = Shutdown::new();
    match run(args, &shutdown) {
        // Ctrl-C ends a follow or a read of standard input normally, but the status still says
        // it was interrupted, as after any other Ctrl-C.
        Ok(()) if shutdown.is_signalled() => ExitCode::from(ClientError::Interrupted.exit_code()),
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

/// Installs the Ctrl-C handler and runs the consumer.
fn run(args: ConsumerArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
    let flag = shutdown.clone();
    ctrlc::set_handler(move || clients::shutdown::on_ctrl_c(&flag))
        .context("cannot install the Ctrl-C handler")?;
    consumer::run(args, shutdown)?;
    Ok(())
}
