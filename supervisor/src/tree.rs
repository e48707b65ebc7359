//! The live tree: shared status nodes written by supervisors, read by
//! [`snapshot`](crate::SupervisorHandle::snapshot) from any thread.
//!
//! Each supervisor owns the nodes of its children and updates them with
//! atomics, so a snapshot never waits on a supervisor's loop: it only takes
//! each node's child-list lock for as long as it takes to clone a few `Arc`s.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// Pools list at most this many children by default, then one summary entry.
pub const DEFAULT_SNAPSHOT_LIMIT: usize = 100;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A supervisor; it has children.
    Supervisor,
    /// A worker task; no children.
    Worker,
}

/// Where a child is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildState {
    /// Started and not yet exited.
    Running,
    /// Exited; a restart is scheduled (possibly after a backoff delay).
    Restarting,
    /// Asked to stop; waiting for it within its grace.
    Stopping,
    /// Exited normally or was stopped, and will not be restarted.
    Stopped,
    /// Exited abnormally and will not be restarted (or, for a supervisor, gave up).
    Failed,
    /// Not a real child: stands for the pool children past the snapshot limit.
    Summary,
}

impl ChildState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Running,
            1 => Self::Restarting,
            2 => Self::Stopping,
            3 => Self::Stopped,
            4 => Self::Failed,
            _ => Self::Summary,
        }
    }
}

/// One node of a [`snapshot`](crate::SupervisorHandle::snapshot), serialised
/// as `{name, kind, state, restarts, children}` for `GET /admin/tree`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TreeNode {
    /// Child or supervisor name.
    pub name: String,
    /// `"supervisor"` or `"worker"`.
    pub kind: NodeKind,
    /// Current state.
    pub state: ChildState,
    /// Times this node was restarted by its supervisor.
    pub restarts: u64,
    /// Children in start order; empty for workers.
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// Depth-first search for the first node called `name` (handy in tests).
    #[must_use]
    pub fn find(&self, name: &str) -> Option<&TreeNode> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }
}

/// Shared, live status of one child.
#[derive(Debug)]
pub(crate) struct Node {
    name: Arc<str>,
    kind: NodeKind,
    state: AtomicU8,
    restarts: AtomicU64,
    /// Keyed by start sequence, so iteration is start order.
    children: Mutex<BTreeMap<u64, Arc<Node>>>,
    snapshot_limit: usize,
}

impl Node {
    pub(crate) fn new(name: Arc<str>, kind: NodeKind, snapshot_limit: usize) -> Arc<Self> {
        Arc::new(Self {
            name,
            kind,
            state: AtomicU8::new(ChildState::Running as u8),
            restarts: AtomicU64::new(0),
            children: Mutex::new(BTreeMap::new()),
            snapshot_limit,
        })
    }

    pub(crate) fn set_state(&self, state: ChildState) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    pub(crate) fn state(&self) -> ChildState {
        ChildState::from_u8(self.state.load(Ordering::Relaxed))
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    pub(crate) fn count_restart(&self) -> u64 {
        self.restarts.fetch_add(1, Ordering::Relaxed) + 1
    }

    // A poisoned lock only means a panic elsewhere while holding it; the map
    // itself is always consistent (single inserts/removes), so keep going.
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Node>>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn insert_child(&self, key: u64, node: Arc<Node>) {
        self.lock().insert(key, node);
    }

    pub(crate) fn remove_child(&self, key: u64) {
        self.lock().remove(&key);
    }

    pub(crate) fn clear_children(&self) {
        self.lock().clear();
    }

    /// Copy the subtree. Listed children are cloned out of the lock first, and
    /// the rest only summed, so a big pool holds its lock for one pass of
    /// atomic loads and never for the recursive copy.
    pub(crate) fn snapshot(&self) -> TreeNode {
        let (listed, omitted, omitted_restarts) = {
            let map = self.lock();
            let listed: Vec<Arc<Node>> = map.values().take(self.snapshot_limit).cloned().collect();
            let rest = map.values().skip(self.snapshot_limit);
            let restarts: u64 = rest.clone().map(|c| c.restarts()).sum();
            (listed, rest.count(), restarts)
        };
        let mut children: Vec<TreeNode> = listed.iter().map(|c| c.snapshot()).collect();
        if omitted > 0 {
            children.push(TreeNode {
                name: format!("+{omitted} more"),
                kind: NodeKind::Worker,
                state: ChildState::Summary,
                restarts: omitted_restarts,
                children: Vec::new(),
            });
        }
        TreeNode {
            name: self.name.to_string(),
            kind: self.kind,
            state: self.state(),
            restarts: self.restarts(),
            children,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_serialises_exactly_the_admin_fields() {
        let root = Node::new("root".into(), NodeKind::Supervisor, 10);
        let w = Node::new("store".into(), NodeKind::Worker, 10);
        w.count_restart();
        w.set_state(ChildState::Restarting);
        root.insert_child(0, w);
        let json = serde_json::to_value(root.snapshot()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "name": "root", "kind": "supervisor", "state": "running", "restarts": 0,
                "children": [{"name": "store", "kind": "worker", "state": "restarting",
                              "restarts": 1, "children": []}]
            })
        );
    }

    #[test]
    fn large_pool_summarises_children_past_the_limit() {
        let pool = Node::new("conns".into(), NodeKind::Supervisor, 2);
        for i in 0..5 {
            let c = Node::new("conn".into(), NodeKind::Worker, 2);
            if i >= 2 {
                c.count_restart();
            }
            pool.insert_child(i, c);
        }
        let snap = pool.snapshot();
        assert_eq!(snap.children.len(), 3);
        let summary = &snap.children[2];
        assert_eq!(summary.name, "+3 more");
        assert_eq!(summary.state, ChildState::Summary);
        assert_eq!(summary.restarts, 3);
    }
}
