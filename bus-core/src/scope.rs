//! Which handlers may answer a command or receive an event.

use std::fmt;

/// Which handlers may answer a command or receive an event.
///
/// Scopes nest: every node that is in `Machine` is in `Cluster` (if it shares our cluster name),
/// and every node is in `Network`. The local node is in every scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Scope {
    /// Handlers in this `Bus` instance only. Nothing is serialized: commands are moved into the
    /// handler and events are shared by reference count.
    Local,
    /// Nodes whose host id equals ours, the local node included.
    Machine,
    /// Nodes with our cluster name, the local node included.
    Cluster,
    /// Every node of our network, whatever its cluster.
    Network,
}

impl Scope {
    /// The scope's lower-case name, as shown in errors and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Machine => "machine",
            Scope::Cluster => "cluster",
            Scope::Network => "network",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
