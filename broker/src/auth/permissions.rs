//! What each user may do: name patterns per right, and the rights each request needs.

use protocol::{Request, Response};

/// A name pattern: an exact name, or a prefix followed by a trailing `*` (`*` alone is every
/// name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// Exactly this name.
    Exact(String),
    /// Every name starting with this.
    Prefix(String),
}

impl Pattern {
    /// Parses a pattern.
    ///
    /// # Errors
    /// A `*` anywhere but at the end, or an empty pattern.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        let (stem, wild) = match text.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (text, false),
        };
        if stem.contains('*') {
            return Err(format!("pattern {text:?} has a `*` that is not its last character"));
        }
        match (stem.is_empty(), wild) {
            (true, false) => Err("a pattern cannot be empty".into()),
            (_, true) => Ok(Pattern::Prefix(stem.to_owned())),
            (false, false) => Ok(Pattern::Exact(stem.to_owned())),
        }
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Exact(exact) => exact == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        }
    }
}

/// A right on topics or groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Append to a topic.
    Produce,
    /// Read a topic; read, join and acknowledge as a member of a group.
    Consume,
    /// Create and delete a topic; reset a group.
    Admin,
}

impl Right {
    /// The right's name in the users file and in refusals.
    pub fn name(self) -> &'static str {
        match self {
            Right::Produce => "produce",
            Right::Consume => "consume",
            Right::Admin => "admin",
        }
    }
}

/// What a right applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
}

/// The patterns for each right on one kind of name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Names that may be appended to (topics only).
    pub produce: Vec<Pattern>,
    /// Names that may be read.
    pub consume: Vec<Pattern>,
    /// Names that may be created, deleted or reset.
    pub admin: Vec<Pattern>,
}

impl Grants {
    /// Whether any right is granted on `name`: whether the name may be shown to the user.
    pub fn touches(&self, name: &str) -> bool {
        [&self.produce, &self.consume, &self.admin].into_iter().flatten().any(|p| p.matches(name))
    }

    /// Whether `right` is granted on `name`.
    pub fn allows(&self, right: Right, name: &str) -> bool {
        let patterns = match right {
            Right::Produce => &self.produce,
            Right::Consume => &self.consume,
            Right::Admin => &self.admin,
        };
        patterns.iter().any(|p| p.matches(name))
    }
}

/// One user's rights.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    /// Rights on topics.
    pub topics: Grants,
    /// Rights on consumer groups.
    pub groups: Grants,
}

/// One right a request needs: on what kind of name, which name, which right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need<'r> {
    /// Topic or group.
    pub scope: Scope,
    /// The name.
    pub name: &'r str,
    /// The right.
    pub right: Right,
}

impl Permissions {
    /// Whether `consume` is granted on some topic: what a claim is for.
    pub fn may_consume_any(&self) -> bool {
        !self.topics.consume.is_empty()
    }

    /// The first right `request` needs that these permissions lack, if any.
    pub fn lacking<'r>(&self, request: &'r Request<'_>) -> Option<Need<'r>> {
        needs(request).into_iter().flatten().find(|need| {
            let grants = match need.scope {
                Scope::Topic => &self.topics,
                Scope::Group => &self.groups,
            };
            !grants.allows(need.right, need.name)
        })
    }
}

impl Permissions {
    /// Narrows a listing to what these permissions may see: `topics` keeps only the topics
    /// with some right on them, `groups` only the groups with some right on them (as Kafka
    /// filters Metadata and ListGroups by Describe). Any other reply is left as it is.
    pub fn narrow(&self, response: &mut Response<'_>) {
        match response {
            Response::Topics { topics } => topics.retain(|t| self.topics.touches(&t.name)),
            Response::Groups { groups } => groups.retain(|g| self.groups.touches(&g.group)),
            _ => {}
        }
    }
}

/// The rights `request` needs (at most two). `status`, `claim`, `renew`, `release`,
/// `list_topics` and `list_groups` need none: they describe or hold logical brokers, not topics
/// or groups (a claim's token is checked against its user apart from this), and a listing is
/// narrowed to what the user may see ([`Permissions::narrow`]).
pub fn needs<'r>(request: &'r Request<'_>) -> [Option<Need<'r>>; 2] {
    let topic = |name: &'r str, right| Some(Need { scope: Scope::Topic, name, right });
    let group = |name: &'r str, right| Some(Need { scope: Scope::Group, name, right });
    match request {
        Request::Append(append) => [topic(append.topic, Right::Produce), None],
        Request::Fetch(fetch) => [topic(fetch.topic, Right::Consume), None],
        // Growing a topic takes the right that made it.
        Request::CreateTopic { topic: name, .. }
        | Request::CreatePartitions { topic: name, .. }
        | Request::DeleteTopic { topic: name } => [topic(name, Right::Admin), None],
        Request::JoinGroup { group: g, topic: t, .. } | Request::Ack { group: g, topic: t, .. } => {
            [topic(t, Right::Consume), group(g, Right::Consume)]
        }
        Request::GroupFetch(fetch) => {
            [topic(fetch.topic, Right::Consume), group(fetch.group, Right::Consume)]
        }
        Request::ResetGroup { group: g, .. } | Request::DeleteGroup { group: g, .. } => {
            [group(g, Right::Admin), None]
        }
        Request::Status
        | Request::Claim { .. }
        | Request::Renew { .. }
        | Request::Release { .. }
        | Request::ListTopics { .. }
        | Request::ListGroups { .. } => [None, None],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_exact_or_a_trailing_star() {
        let orders = Pattern::parse("orders").unwrap();
        assert!(orders.matches("orders") && !orders.matches("orders2"));
        let logs = Pattern::parse("logs.*").unwrap();
        assert!(logs.matches("logs.web") && logs.matches("logs.") && !logs.matches("log"));
        assert!(Pattern::parse("*").unwrap().matches(""));
        assert!(Pattern::parse("a*b").is_err());
        assert!(Pattern::parse("**").is_err());
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn the_first_lacking_right_is_named() {
        let permissions = Permissions {
            topics: Grants {
                consume: vec![Pattern::parse("orders").unwrap()],
                ..Grants::default()
            },
            groups: Grants::default(),
        };
        let ack = Request::Ack { group: "tills", topic: "orders", partition: 0, offsets: vec![] };
        let lacking = permissions.lacking(&ack).unwrap();
        assert_eq!(
            (lacking.scope, lacking.name, lacking.right),
            (Scope::Group, "tills", Right::Consume)
        );
        assert_eq!(permissions.lacking(&Request::Status), None);
    }
}
