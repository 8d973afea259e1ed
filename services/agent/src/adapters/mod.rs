//! The agent's outside world: the Kubernetes API and the leaf's JetStream.

pub mod kube;
pub mod publisher;
