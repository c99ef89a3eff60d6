//! Routing decisions: which nodes are in a scope, and which one of them gets a command.
//!
//! This is the one seam that decides where a message goes. Today a candidate is a node we are
//! linked to; a mesh with bounded degree will answer "via peer X" from here.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::scope::Scope;

/// What routing needs to know of a node: where it runs and how busy we keep it.
pub trait Candidate {
    /// The node's host id (for [`Scope::Machine`]).
    fn host_id(&self) -> &str;
    /// The node's cluster (for [`Scope::Cluster`]).
    fn cluster(&self) -> &str;
    /// How many of our requests it has in flight now.
    fn in_flight(&self) -> usize;
    /// Whether it may be sent to now. A candidate whose link is failing is skipped at once,
    /// before a new snapshot of the candidates leaves it out. Default: always.
    fn is_available(&self) -> bool {
        true
    }
}

/// Who this node is, for scope decisions.
#[derive(Debug, Clone, Copy)]
pub struct Here<'a> {
    /// Our host id.
    pub host_id: &'a str,
    /// Our cluster.
    pub cluster: &'a str,
}

impl Here<'_> {
    /// Whether a node on `host_id` in `cluster` is in `scope` as seen from here. Another node is
    /// never in [`Scope::Local`]; every node of our network is in [`Scope::Network`].
    pub fn in_scope(&self, scope: Scope, host_id: &str, cluster: &str) -> bool {
        match scope {
            Scope::Local => false,
            Scope::Machine => host_id == self.host_id,
            Scope::Cluster => cluster == self.cluster,
            Scope::Network => true,
        }
    }
}

fn scope_index(scope: Scope) -> usize {
    match scope {
        Scope::Local => 0,
        Scope::Machine => 1,
        Scope::Cluster => 2,
        Scope::Network => 3,
    }
}

/// Picks the remote node for a command: among the candidates in scope, the one with the fewest
/// of our requests in flight; among ties, the next in turn, so that commands sent one at a time
/// to idle nodes go round robin.
///
/// # Examples
///
/// ```
/// use meshbus_core::proto::routing::{Candidate, Here, Picker};
/// use meshbus_core::Scope;
///
/// struct Node { host: &'static str, cluster: &'static str, busy: usize }
/// impl Candidate for Node {
///     fn host_id(&self) -> &str { self.host }
///     fn cluster(&self) -> &str { self.cluster }
///     fn in_flight(&self) -> usize { self.busy }
/// }
///
/// let nodes = [
///     Node { host: "h1", cluster: "shop", busy: 3 },
///     Node { host: "h2", cluster: "shop", busy: 1 },
///     Node { host: "h3", cluster: "billing", busy: 0 },
/// ];
/// let here = Here { host_id: "h1", cluster: "shop" };
/// let picker = Picker::default();
/// // In the cluster, the less busy of the two shop nodes.
/// assert_eq!(picker.pick(&nodes, here, Scope::Cluster).map(|n| n.host), Some("h2"));
/// // On the machine, the only one there.
/// assert_eq!(picker.pick(&nodes, here, Scope::Machine).map(|n| n.host), Some("h1"));
/// ```
#[derive(Debug, Default)]
pub struct Picker {
    /// One turn per scope, so sends in one scope go round robin whatever is sent in others.
    turns: [AtomicUsize; 4],
}

impl Picker {
    /// The candidate to send to, or `None` when no available candidate is in scope.
    pub fn pick<'c, C: Candidate>(
        &self,
        candidates: &'c [C],
        here: Here<'_>,
        scope: Scope,
    ) -> Option<&'c C> {
        // First pass: the least load in scope and how many candidates share it.
        let in_scope = |c: &&C| c.is_available() && here.in_scope(scope, c.host_id(), c.cluster());
        let mut least: Option<(usize, usize)> = None;
        for c in candidates.iter().filter(in_scope) {
            let load = c.in_flight();
            least = match least {
                Some((l, ties)) if load == l => Some((l, ties + 1)),
                Some((l, ties)) if load > l => Some((l, ties)),
                _ => Some((load, 1)),
            };
        }
        let (load, ties) = least?;
        // Second pass: the next in turn among the ties. (Loads may move between the passes;
        // then the first candidate in scope with the least load seen is a fine answer.)
        let turn = self.next_turn(scope) % ties;
        let mut tied = candidates
            .iter()
            .filter(in_scope)
            .filter(|c| c.in_flight() == load);
        tied.clone()
            .nth(turn)
            .or_else(|| tied.next())
            .or_else(|| candidates.iter().find(in_scope))
    }

    /// The next turn in `scope`.
    fn next_turn(&self, scope: Scope) -> usize {
        self.turns[scope_index(scope)].fetch_add(1, Ordering::Relaxed)
    }

    /// Every available candidate in scope (for `send_all` and events).
    pub fn all_in_scope<'c, C: Candidate>(
        candidates: &'c [C],
        here: Here<'c>,
        scope: Scope,
    ) -> impl Iterator<Item = &'c C> {
        candidates
            .iter()
            .filter(move |c| c.is_available() && here.in_scope(scope, c.host_id(), c.cluster()))
    }
}

mod group;

pub use group::{member_in_scope, pick_member, Member, MemberPick, RUN};

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    struct Node {
        id: usize,
        host: String,
        cluster: String,
        busy: Cell<usize>,
    }

    impl Candidate for Node {
        fn host_id(&self) -> &str {
            &self.host
        }
        fn cluster(&self) -> &str {
            &self.cluster
        }
        fn in_flight(&self) -> usize {
            self.busy.get()
        }
    }

    fn nodes(n: usize) -> Vec<Node> {
        (0..n)
            .map(|id| Node {
                id,
                host: format!("h{id}"),
                cluster: "c".into(),
                busy: Cell::new(0),
            })
            .collect()
    }

    const HERE: Here<'static> = Here {
        host_id: "here",
        cluster: "c",
    };

    #[test]
    fn one_at_a_time_to_idle_nodes_is_round_robin() {
        let nodes = nodes(5);
        let picker = Picker::default();
        let mut counts = [0usize; 5];
        for _ in 0..1000 {
            let n = picker.pick(&nodes, HERE, Scope::Cluster).unwrap();
            counts[n.id] += 1;
        }
        assert_eq!(counts, [200; 5]);
    }

    #[test]
    fn the_least_busy_node_is_preferred() {
        let nodes = nodes(3);
        nodes[0].busy.set(4);
        nodes[1].busy.set(1);
        nodes[2].busy.set(2);
        let picker = Picker::default();
        for _ in 0..10 {
            assert_eq!(picker.pick(&nodes, HERE, Scope::Network).unwrap().id, 1);
        }
    }

    #[test]
    fn concurrent_load_stays_within_twice_the_fair_share() {
        // 50 requests in flight at a time over 5 nodes, each finishing in a pseudo-random order.
        let nodes = nodes(5);
        let picker = Picker::default();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut in_flight: Vec<usize> = Vec::new();
        let mut counts = [0usize; 5];
        for _ in 0..1000 {
            if in_flight.len() == 50 {
                let done = in_flight.swap_remove(rng.usize(..in_flight.len()));
                nodes[done].busy.set(nodes[done].busy.get() - 1);
            }
            let n = picker.pick(&nodes, HERE, Scope::Cluster).unwrap();
            n.busy.set(n.busy.get() + 1);
            counts[n.id] += 1;
            in_flight.push(n.id);
        }
        for c in counts {
            assert!(c <= 2 * 200, "a node got {c} of 1000");
        }
    }

    #[test]
    fn scopes_filter_candidates() {
        let mut nodes = nodes(3);
        nodes[0].host = "here".into();
        nodes[1].cluster = "other".into();
        let picker = Picker::default();
        let machine: Vec<usize> = Picker::all_in_scope(&nodes, HERE, Scope::Machine)
            .map(|n| n.id)
            .collect();
        assert_eq!(machine, vec![0]);
        let cluster: Vec<usize> = Picker::all_in_scope(&nodes, HERE, Scope::Cluster)
            .map(|n| n.id)
            .collect();
        assert_eq!(cluster, vec![0, 2]);
        assert_eq!(
            Picker::all_in_scope(&nodes, HERE, Scope::Network).count(),
            3
        );
        assert!(picker.pick(&nodes, HERE, Scope::Local).is_none());
        assert!(picker.pick(&nodes[..0], HERE, Scope::Network).is_none());
    }

    #[test]
    fn sends_alternating_between_scopes_go_round_robin_in_each() {
        // Node 0 is in another cluster; 1 and 2 are in ours. Cluster and Network sends
        // alternate: each scope must still spread over all of its own nodes.
        let mut nodes = nodes(3);
        nodes[0].cluster = "other".into();
        let picker = Picker::default();
        let (mut cluster, mut network) = ([0usize; 3], [0usize; 3]);
        for _ in 0..300 {
            cluster[picker.pick(&nodes, HERE, Scope::Cluster).unwrap().id] += 1;
            network[picker.pick(&nodes, HERE, Scope::Network).unwrap().id] += 1;
        }
        assert_eq!(cluster, [0, 150, 150]);
        assert_eq!(network, [100, 100, 100]);
    }

    #[test]
    fn ties_rotate_among_the_least_busy_only() {
        let nodes = nodes(4);
        nodes[0].busy.set(1);
        nodes[2].busy.set(1);
        let picker = Picker::default();
        let mut counts = [0usize; 4];
        for _ in 0..100 {
            counts[picker.pick(&nodes, HERE, Scope::Network).unwrap().id] += 1;
        }
        assert_eq!(counts, [0, 50, 0, 50]);
    }
}
