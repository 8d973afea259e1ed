//! What can go wrong in a command, and how each failure is shown and which exit code it gets.

use std::process::ExitCode;

use thiserror::Error;
use tonic::Code;

/// Printed after errors that suggest nothing is listening at the API address.
const START_HINT: &str = "hint: is the Canopy API running there? `make demo` starts a local fleet; \
--api (or CANOPY_API) points canopyctl elsewhere";

#[derive(Debug, Error)]
pub enum CliError {
    /// The command line is wrong in a way clap could not tell (exit code 2, like clap's).
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach the Canopy API at {api}: {reason}")]
    Connect { api: String, reason: String },
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
    #[error("failed to write the output: {0}")]
    Output(#[from] std::io::Error),
    /// The command already reported its outcome; only the exit code is left (`audit`).
    #[error("exit status {0}")]
    Exit(u8),
}

impl CliError {
    /// A connection failure, with the whole chain of causes (tonic's own message is only
    /// "transport error").
    pub fn connect(api: &str, error: &(dyn std::error::Error + 'static)) -> Self {
        let mut parts: Vec<String> = Vec::new();
        let mut next = Some(error);
        while let Some(e) = next {
            let text = e.to_string();
            // Layers repeat each other ("tcp connect error: tcp connect error: ...") and
            // "transport error" says nothing.
            if text != "transport error" && parts.last() != Some(&text) {
                parts.push(text);
            }
            next = e.source();
        }
        Self::Connect {
            api: api.to_owned(),
            reason: parts.join(": "),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Exit(code) => *code,
            _ => 1,
        }
    }

    /// Prints the error to stderr and returns the exit code. A closed stdout (`| head`) is
    /// not an error worth reporting.
    pub fn report(&self) -> ExitCode {
        if let Self::Output(e) = self
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            return ExitCode::SUCCESS;
        }
        if let Self::Exit(code) = self {
            return ExitCode::from(*code);
        }
        eprintln!("error: {self}");
        let unreachable = match self {
            Self::Connect { .. } => true,
            Self::Status(s) => s.code() == Code::Unavailable && s.message().contains("transport"),
            _ => false,
        };
        if unreachable {
            eprintln!("{START_HINT}");
        }
        ExitCode::from(self.exit_code())
    }
}

/// The canonical gRPC name of a code, as in the gRPC spec (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_print_their_canonical_code() {
        let e = CliError::from(tonic::Status::not_found("cluster \"x\" not found"));
        assert_eq!(e.to_string(), "NOT_FOUND: cluster \"x\" not found");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(CliError::Usage("bad".into()).exit_code(), 2);
    }
}
