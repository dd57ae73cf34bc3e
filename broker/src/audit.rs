//! The security events a log shipper looks for, said once each with who and from where: the
//! admin actions done (topics created and deleted, groups reset) and the requests refused for a
//! lack of rights. Logins are said by the ZAP handler (`auth`).
//!
//! Every line goes to the `audit` target with the fields `user` (absent without users), `peer`
//! (the client's address) and `op`, and `origin` when the request carried one: the end user's
//! address as a door in between (the web console, the Kafka gateway) tells it, not verified
//! (PROTOCOL.md, "Who a door speaks for"), so that `RUST_LOG=audit=info` keeps them alone and
//! `--log-format json` gives a shipper one object per event. Refusals are throttled as other
//! warnings a client can cause are (`quiet`): at most one line a second, with the count held
//! back; admin actions, which only users with the admin right can cause, are each said.

use std::time::Instant;

use protocol::{Request, Response};
use tracing::{info, warn};

use crate::quiet::{Shown, Throttle};

/// Who made a request: the user it logged in as (with users), and its address.
#[derive(Debug, Clone)]
pub struct Actor {
    /// The user, with `--auth`.
    pub user: Option<String>,
    /// The peer's address, as ZeroMQ reports it.
    pub peer: String,
    /// The request's `origin`: the end user's address as the door that sent it says.
    pub origin: Option<String>,
}

impl Actor {
    /// The user's name as a log field: `-` without users.
    fn user(&self) -> Shown<'_> {
        Shown(self.user.as_deref().unwrap_or("-"))
    }

    /// The request's `origin` as a log field, absent from the line when it had none. The
    /// protocol keeps only printable ASCII without spaces, so it is written as it came.
    fn origin(&self) -> Option<tracing::field::DisplayValue<&str>> {
        self.origin.as_deref().map(tracing::field::display)
    }
}

/// Whether `request` is an admin action, said when done.
pub fn is_admin(request: &Request<'_>) -> bool {
    matches!(
        request,
        Request::CreateTopic { .. }
            | Request::CreatePartitions { .. }
            | Request::DeleteTopic { .. }
            | Request::ResetGroup { .. }
            | Request::DeleteGroup { .. }
    )
}

/// Says what an admin action did, from its reply: nothing when it was refused (a refusal for a
/// lack of rights is said by [`Refusals::say`]; others change nothing).
pub fn done(actor: &Actor, response: &Response<'_>) {
    let (user, peer, origin) = (actor.user(), Shown(&actor.peer), actor.origin());
    match response {
        Response::Created { topic, partitions } => {
            info!(target: "audit", %user, %peer, origin, op = "create_topic", topic = %Shown(topic), partitions, "created topic");
        }
        Response::PartitionsCreated { topic, partitions } => {
            info!(target: "audit", %user, %peer, origin, op = "create_partitions", topic = %Shown(topic), partitions, "grew topic");
        }
        Response::Deleted { topic } => {
            info!(target: "audit", %user, %peer, origin, op = "delete_topic", topic = %Shown(topic), "deleted topic");
        }
        Response::Reset { group, topic, committed_offset, .. } => info!(
            target: "audit",
            %user,
            %peer,
            origin,
            op = "reset_group",
            group = %Shown(group),
            topic = %Shown(topic),
            offset = committed_offset,
            "group reset to offset {committed_offset}"
        ),
        Response::GroupDeleted { group, topic, partition } => info!(
            target: "audit",
            %user,
            %peer,
            origin,
            op = "delete_group",
            group = %Shown(group),
            topic = %Shown(topic.unwrap_or("*")),
            partition = ?partition,
            "deleted group state"
        ),
        _ => {}
    }
}

/// Requests refused for a lack of rights (`312 forbidden`), said at most once a second.
#[derive(Debug, Default)]
pub struct Refusals {
    /// The pace.
    throttle: Throttle,
}

impl Refusals {
    /// Says that `actor` was refused `op` because `reason`, unless a line was said within the
    /// second (then it is counted, and the count said with the next line).
    pub fn say(&mut self, actor: &Actor, op: &str, reason: &str, now: Instant) {
        if let Some(suppressed) = self.throttle.admit(now) {
            let (user, peer, origin) = (actor.user(), Shown(&actor.peer), actor.origin());
            warn!(target: "audit", %user, %peer, origin, op, suppressed, "refused: {}", Shown(reason));
        }
    }

    /// Says how many refusals were held back since the last line, when the broker stops.
    pub fn say_suppressed(&mut self) {
        let suppressed = self.throttle.take_suppressed();
        if suppressed > 0 {
            warn!(target: "audit", suppressed, "refused: {suppressed} more since the last warning");
        }
    }
}
