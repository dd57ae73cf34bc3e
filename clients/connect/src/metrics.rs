//! `connect`'s metrics for `--metrics-listen`: each connector's state and the records it wrote
//! to its destination or rejected, copied from the statuses its task publishes, on the
//! operations port's threads.

use ops::exposition::Kind;
use ops::Exposition;

use crate::task::State;
use crate::worker::Worker;

/// The states a connector's gauge reports, each 1 for the one it is in.
const STATES: [State; 4] = [State::Unassigned, State::Running, State::Paused, State::Failed];

/// What the operations port shows of a worker.
pub struct Endpoint {
    /// The worker whose connectors are shown.
    pub worker: Worker,
}

impl ops::http::Endpoint for Endpoint {
    fn metrics(&self, page: &mut Exposition) {
        let statuses = self.worker.statuses();
        page.family(
            "connect_connector_state",
            Kind::Gauge,
            "Each connector's state: 1 for the one it is in.",
        );
        for (name, status) in &statuses {
            for state in STATES {
                let value = f64::from(u8::from(status.state == state));
                page.sample(
                    "connect_connector_state",
                    &[("connector", name), ("state", state.name())],
                    value,
                );
            }
        }
        page.family(
            "connect_records_written_total",
            Kind::Counter,
            "Records a connector wrote to its destination (rows, lines, messages).",
        );
        for (name, status) in &statuses {
            page.sample(
                "connect_records_written_total",
                &[("connector", name)],
                status.written as f64,
            );
        }
        page.family(
            "connect_records_rejected_total",
            Kind::Counter,
            "Records a connector could not write, sent to its dead-letter topic or dropped.",
        );
        for (name, status) in &statuses {
            page.sample(
                "connect_records_rejected_total",
                &[("connector", name)],
                status.rejected as f64,
            );
        }
    }

    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}
