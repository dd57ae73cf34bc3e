//! `consumer`: show the logical brokers, list topics, fetch or follow messages.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::CommandFactory;
use clients::consumer::{self, ConsumerArgs};
use clients::{ClientError, Shutdown};

fn main() -> ExitCode {
    let args =
        ConsumerArgs::parse_from_args(std::env::args_os().collect()).unwrap_or_else(|e| e.exit());
    clients::init_tracing();
    let shutdown = Shutdown::new();
    let result =
        clients::install_ctrl_c(&shutdown).and_then(|()| Ok(consumer::run(args, &shutdown)?));
    if let Err(e) = &result {
        if let Some(ClientError::NotATerminal) = e.downcast_ref::<ClientError>() {
            // A usage error: let clap print it with the usage line, and exit 2.
            ConsumerArgs::command()
                .error(
                    ErrorKind::MissingSubcommand,
                    "no command given; the interactive mode needs standard input and output \
                     on a terminal, so name a command (status, topics, fetch, follow)",
                )
                .exit();
        }
    }
    clients::exit_status(result, &shutdown)
}
