//! `producer`: append messages to a topic from the command line or standard input.

use std::process::ExitCode;

use clap::Parser;
use clients::producer::{self, ProducerArgs};
use clients::Shutdown;

fn main() -> ExitCode {
    let args = ProducerArgs::parse();
    clients::init_tracing();
    let shutdown = Shutdown::new();
    let result =
        clients::install_ctrl_c(&shutdown).and_then(|()| Ok(producer::run(args, &shutdown)?));
    clients::exit_status(result, &shutdown)
}
