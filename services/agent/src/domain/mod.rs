//! Pure rules of the agent: heartbeat sequencing, what an inventoried object carries, and how a
//! snapshot is cut into size-bounded chunks. No I/O here.

pub mod chunk;
pub mod heartbeat;
pub mod inventory;
