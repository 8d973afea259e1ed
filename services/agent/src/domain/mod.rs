//! Pure rules of the agent: heartbeat sequencing, what an inventoried object carries, how a
//! snapshot is cut into size-bounded chunks, and how audits are reported. No I/O here.

pub mod audit;
pub mod chunk;
pub mod health;
pub mod heartbeat;
pub mod inventory;
