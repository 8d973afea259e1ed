//! Waiting on conditions under a deadline: `assert_eventually!` and [`eventually`] poll every
//! ~50 ms instead of sleeping for a guessed time.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use tokio::time::Instant;

/// How long to wait between two attempts.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a polled check may return: `bool`, or `anyhow::Result<bool>` where an error counts as
/// "not yet" and is reported if the deadline passes.
pub trait Outcome {
    /// `Ok(true)` when the condition holds.
    fn into_outcome(self) -> anyhow::Result<bool>;
}

impl Outcome for bool {
    fn into_outcome(self) -> anyhow::Result<bool> {
        Ok(self)
    }
}

impl Outcome for anyhow::Result<bool> {
    fn into_outcome(self) -> anyhow::Result<bool> {
        self
    }
}

/// The state of one `assert_eventually!` loop (public for the macro only).
#[doc(hidden)]
#[derive(Debug)]
pub struct Poll {
    timeout: Duration,
    deadline: Instant,
    attempts: u32,
    last_error: Option<String>,
}

impl Poll {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            deadline: Instant::now() + timeout,
            attempts: 0,
            last_error: None,
        }
    }

    /// Runs one attempt, cut short at the deadline; true when the condition holds.
    pub async fn attempt<F, O>(&mut self, check: F) -> bool
    where
        F: Future<Output = O>,
        O: Outcome,
    {
        self.attempts += 1;
        match tokio::time::timeout_at(self.deadline, check).await {
            Ok(outcome) => match outcome.into_outcome() {
                Ok(done) => done,
                Err(e) => {
                    self.last_error = Some(format!("{e:#}"));
                    false
                }
            },
            Err(_) => {
                self.last_error = Some("the last attempt was still running at the deadline".into());
                false
            }
        }
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    pub async fn wait(&self) {
        tokio::time::sleep_until((Instant::now() + POLL_INTERVAL).min(self.deadline)).await;
    }

    /// Panics with the caller's message: this is the assertion failing.
    #[track_caller]
    #[allow(clippy::panic)]
    pub fn fail(&self, message: &str) -> ! {
        let mut text = format!(
            "{message}: condition not met within {:?} ({} attempts)",
            self.timeout, self.attempts
        );
        if let Some(e) = &self.last_error {
            let _ = write!(text, "; last error: {e}");
        }
        panic!("{text}");
    }
}

/// Polls an async check every ~50 ms until it returns `true` (or `Ok(true)`), and panics with the
/// message, the attempt count and the last error once the timeout has passed.
///
/// ```no_run
/// # async fn doc(count: impl Fn() -> usize) {
/// use std::time::Duration;
/// canopy_testkit::assert_eventually!(Duration::from_secs(5), async { count() == 3 }, "count is {}", count());
/// # }
/// ```
///
/// The check may return `anyhow::Result<bool>`; use `?` inside it freely. `timeout:` may label
/// the first argument.
#[macro_export]
macro_rules! assert_eventually {
    (timeout: $timeout:expr, $($rest:tt)+) => {
        $crate::assert_eventually!($timeout, $($rest)+)
    };
    ($timeout:expr, $check:expr $(,)?) => {
        $crate::assert_eventually!($timeout, $check, "{}", ::std::stringify!($check))
    };
    ($timeout:expr, $check:expr, $($msg:tt)+) => {{
        let mut __poll = $crate::eventually::Poll::new($timeout);
        loop {
            if __poll.attempt($check).await {
                break;
            }
            if __poll.expired() {
                __poll.fail(&::std::format!($($msg)+));
            }
            __poll.wait().await;
        }
    }};
}

/// Polls `f` every ~50 ms until it returns `Ok(Some(value))` and returns that value; errors and
/// `Ok(None)` mean "not yet". After `timeout`, fails naming `what` and the last error.
///
/// # Errors
/// When the deadline passes before `f` yields a value.
pub async fn eventually<F, Fut, T>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut attempts = 0u32;
    let mut last_error: Option<anyhow::Error> = None;
    loop {
        attempts += 1;
        match tokio::time::timeout_at(deadline, f()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => last_error = Some(e),
            Err(_) => {
                // Keep what the attempt before said: it is what the caller needs to see.
                last_error = Some(match last_error.take() {
                    Some(e) => e.context(
                        "the last attempt was still running at the deadline; the one before failed",
                    ),
                    None => anyhow::anyhow!("the last attempt was still running at the deadline"),
                });
            }
        }
        if Instant::now() >= deadline {
            let summary =
                format!("timed out after {timeout:?} ({attempts} attempts) waiting for {what}");
            return Err(match last_error {
                Some(e) => e.context(summary),
                None => anyhow::anyhow!(summary),
            });
        }
        tokio::time::sleep_until((Instant::now() + POLL_INTERVAL).min(deadline)).await;
    }
}

/// Like [`eventually`] for checks that only say yes or no.
///
/// # Errors
/// When the deadline passes before `f` returns `Ok(true)`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let check = || {
        let fut = f();
        async move { fut.await.map(|done| done.then_some(())) }
    };
    eventually(timeout, what, check)
        .await
        .context("condition never held")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn macro_waits_for_a_bool() {
        let n = Arc::new(AtomicU32::new(0));
        assert_eventually!(
            Duration::from_secs(5),
            async { n.fetch_add(1, Ordering::SeqCst) >= 3 },
            "n={:?}",
            n
        );
        assert!(n.load(Ordering::SeqCst) >= 4);
    }

    #[tokio::test]
    async fn macro_accepts_results_and_a_label() {
        let n = AtomicU32::new(0);
        assert_eventually!(
            timeout: Duration::from_secs(5),
            async {
                let v = n.fetch_add(1, Ordering::SeqCst);
                anyhow::ensure!(v >= 2, "only {v}");
                Ok(true)
            },
            "n never reached 2"
        );
    }

    #[tokio::test]
    #[should_panic(expected = "never true: condition not met within 200ms")]
    async fn macro_panics_with_message_and_last_error() {
        assert_eventually!(
            Duration::from_millis(200),
            async { Err::<bool, _>(anyhow::anyhow!("boom")) },
            "never {}",
            "true"
        );
    }

    #[tokio::test]
    async fn macro_failure_names_the_last_error() {
        let join = tokio::spawn(async {
            assert_eventually!(
                Duration::from_millis(100),
                async { Err::<bool, _>(anyhow::anyhow!("boom")) },
                "x"
            );
        });
        let panic = join.await.unwrap_err().into_panic();
        let text = panic.downcast_ref::<String>().unwrap();
        assert!(text.contains("last error: boom"), "{text}");
    }

    #[tokio::test]
    async fn eventually_returns_the_value() {
        let n = AtomicU32::new(0);
        let v = eventually(Duration::from_secs(5), "n to reach 3", || async {
            let v = n.fetch_add(1, Ordering::SeqCst);
            Ok((v >= 3).then_some(v * 10))
        })
        .await
        .unwrap();
        assert_eq!(v, 30);
    }

    #[tokio::test]
    async fn eventually_times_out_with_context() {
        let err = eventually(Duration::from_millis(120), "the impossible", || async {
            Err::<Option<()>, _>(anyhow::anyhow!("still broken"))
        })
        .await
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("waiting for the impossible"), "{text}");
        assert!(text.contains("still broken"), "{text}");
    }

    #[tokio::test]
    async fn a_hanging_attempt_is_cut_at_the_deadline() {
        let started = Instant::now();
        let err = eventually(Duration::from_millis(150), "a hang", || async {
            std::future::pending::<anyhow::Result<Option<()>>>().await
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(format!("{err:#}").contains("still running"));
    }
}
