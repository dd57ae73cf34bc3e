//! `web`: serve a live console of the broker to browsers.

use std::process::ExitCode;

use clients::web::{self, WebArgs};
use clients::Shutdown;

fn main() -> ExitCode {
    let args = ops::config::parse::<WebArgs>();
    clients::init_tracing();
    let shutdown = Shutdown::new();
    let result = clients::install_ctrl_c(&shutdown).and_then(|()| web::run(args, &shutdown));
    clients::exit_status(result, &shutdown)
}
