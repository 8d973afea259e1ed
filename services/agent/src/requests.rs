//! Work one part of the agent asks of another and waits for: a command asking for an audit or an
//! inventory snapshot now. The loop that owns the work answers each request with its outcome.

use canopy_kit::proto::event::v1::{AuditResult, InventoryResult};
use tokio::sync::{mpsc, oneshot};

/// Requests waiting for a loop to pick them up (a command waits behind at most this many).
const PENDING: usize = 16;

/// One request: why it was asked (the command id) and where its outcome goes.
#[derive(Debug)]
pub struct Request<T> {
    pub command_id: String,
    pub reply: oneshot::Sender<Result<T, String>>,
}

/// The sending side, held by whoever asks (the command runner).
#[derive(Debug, Clone)]
pub struct Requester<T>(mpsc::Sender<Request<T>>);

/// The receiving side, held by the loop that does the work.
pub type Inbox<T> = mpsc::Receiver<Request<T>>;

/// A requester and the inbox it feeds.
pub fn channel<T>() -> (Requester<T>, Inbox<T>) {
    let (tx, rx) = mpsc::channel(PENDING);
    (Requester(tx), rx)
}

impl<T> Requester<T> {
    /// Asks for the work and waits for its outcome; an error when no loop takes requests (it
    /// stopped) or the loop dropped the request (it stopped midway).
    pub async fn ask(&self, command_id: &str) -> Result<T, String> {
        let (reply, outcome) = oneshot::channel();
        self.0
            .send(Request {
                command_id: command_id.to_owned(),
                reply,
            })
            .await
            .map_err(|_| "the agent is stopping or does not run this work".to_owned())?;
        outcome
            .await
            .map_err(|_| "the agent stopped before the work was done".to_owned())?
    }
}

/// What the agent's loops answer on demand.
#[derive(Debug, Clone)]
pub struct Requesters {
    pub audit: Requester<AuditResult>,
    pub inventory: Requester<InventoryResult>,
}
