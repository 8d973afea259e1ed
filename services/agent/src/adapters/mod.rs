//! The agent's outside world: the Kubernetes API (lists and watches) and the leaf's JetStream
//! (EVENTS, POLICIES).

pub mod kube;
pub mod policy;
pub mod publisher;
pub mod watch;
