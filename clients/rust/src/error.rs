//! A failed call, by the gRPC code tokend answered with.

use std::borrow::Cow;

use tonic::Code;

use crate::ConnectError;

/// Why a call failed.
///
/// One variant per gRPC code tokend uses (its API documents which call
/// answers which), so callers `match` on what went wrong instead of
/// comparing codes. Each carries tokend's own message, written for a person
/// (it says what to run or fix); `Display` prints exactly that message,
/// without the code in front, so it can be shown as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The daemon could not be reached at all.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// No credential of that name (or it was removed while watched).
    #[error("{0}")]
    NotFound(String),
    /// The caller, or the user it asked to act as, may not use the
    /// credential; or an admin call from a non-admin.
    #[error("{0}")]
    PermissionDenied(String),
    /// The request itself is wrong, e.g. `act_as` missing for a global Glean
    /// token or given for any other.
    #[error("{0}")]
    InvalidArgument(String),
    /// The credential needs a person: a login, an import or a config fix; or
    /// it lacks a required scope. Retrying will not help.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The daemon answered that it cannot serve now (no token valid for the
    /// required time yet, an alert sink down). It keeps retrying; so may the
    /// caller.
    #[error("{0}")]
    Unavailable(String),
    /// The connection to the daemon broke before it answered (it stopped or
    /// restarted mid-call): nothing is known about the credential.
    #[error("{0}")]
    Transport(String),
    /// A bug or broken state in the daemon.
    #[error("{0}")]
    Internal(String),
    /// Any other code, which tokend does not answer with today.
    #[error("{message}")]
    Other {
        /// The gRPC code as received.
        code: Code,
        /// The message as received.
        message: String,
    },
}

impl Error {
    /// The gRPC code of the answer; `None` when the daemon was never
    /// reached.
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            Self::Connect(_) => return None,
            Self::NotFound(_) => Code::NotFound,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::Unavailable(_) | Self::Transport(_) => Code::Unavailable,
            Self::Internal(_) => Code::Internal,
            Self::Other { code, .. } => *code,
        })
    }

    /// The message alone (what `Display` prints): tokend's text for answers
    /// from the daemon, the advice of [`ConnectError`] when it was not
    /// reached.
    pub fn message(&self) -> Cow<'_, str> {
        match self {
            Self::Connect(e) => Cow::Owned(e.to_string()),
            Self::NotFound(m)
            | Self::PermissionDenied(m)
            | Self::InvalidArgument(m)
            | Self::FailedPrecondition(m)
            | Self::Unavailable(m)
            | Self::Transport(m)
            | Self::Internal(m)
            | Self::Other { message: m, .. } => Cow::Borrowed(m),
        }
    }
}

impl From<tonic::Status> for Error {
    /// Keeps the daemon's message verbatim. Statuses made on this side (a
    /// broken connection, a timeout) carry their cause as a source rather
    /// than in the message, so the innermost cause is appended when the
    /// message does not already say it; a status with no message at all gets
    /// the code's description, so `Display` is never empty.
    fn from(status: tonic::Status) -> Self {
        let mut message = status.message().to_owned();
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&status);
        // The daemon's statuses arrive without a source; tonic attaches one
        // to those it makes itself when the connection fails.
        let local = source.is_some();
        let mut innermost = None;
        while let Some(s) = source {
            innermost = Some(s);
            source = s.source();
        }
        if let Some(cause) = innermost.map(ToString::to_string)
            && !cause.is_empty()
            && !message.contains(&cause)
        {
            message = if message.is_empty() {
                cause
            } else {
                format!("{message}: {cause}")
            };
        }
        if message.is_empty() {
            status.code().description().clone_into(&mut message);
        }
        match status.code() {
            Code::NotFound => Self::NotFound(message),
            Code::PermissionDenied => Self::PermissionDenied(message),
            Code::InvalidArgument => Self::InvalidArgument(message),
            Code::FailedPrecondition => Self::FailedPrecondition(message),
            Code::Unavailable if local => Self::Transport(message),
            Code::Unavailable => Self::Unavailable(message),
            Code::Internal => Self::Internal(message),
            code => Self::Other { code, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    #[test]
    fn every_code_keeps_the_message_verbatim() {
        let message = "gmail needs login: run `tokenctl login gmail` (code: 5)";
        for code in ALL {
            let error = Error::from(tonic::Status::new(code, message));
            assert_eq!(error.code(), Some(code));
            assert_eq!(error.message(), message);
            assert_eq!(error.to_string(), message, "{code:?}");
        }
    }

    #[test]
    fn codes_map_to_their_variants() {
        let e = |code| Error::from(tonic::Status::new(code, "m"));
        assert!(matches!(e(Code::NotFound), Error::NotFound(m) if m == "m"));
        assert!(matches!(e(Code::PermissionDenied), Error::PermissionDenied(m) if m == "m"));
        assert!(matches!(e(Code::InvalidArgument), Error::InvalidArgument(m) if m == "m"));
        assert!(matches!(e(Code::FailedPrecondition), Error::FailedPrecondition(m) if m == "m"));
        assert!(matches!(e(Code::Unavailable), Error::Unavailable(m) if m == "m"));
        assert!(matches!(e(Code::Internal), Error::Internal(m) if m == "m"));
        assert!(matches!(
            e(Code::Unauthenticated),
            Error::Other { code: Code::Unauthenticated, message } if message == "m"
        ));
    }

    #[test]
    fn empty_message_gets_the_code_description() {
        let error = Error::from(tonic::Status::new(Code::NotFound, ""));
        assert_eq!(error.to_string(), Code::NotFound.description());
    }

    #[test]
    fn local_cause_is_appended_once() {
        let mut status = tonic::Status::unavailable("transport error");
        status.set_source(std::sync::Arc::new(std::io::Error::other(
            "connection reset",
        )));
        let error = Error::from(status);
        assert_eq!(error.to_string(), "transport error: connection reset");
        assert!(matches!(error, Error::Transport(_)), "{error:?}");

        let mut status = tonic::Status::unavailable("connection reset");
        status.set_source(std::sync::Arc::new(std::io::Error::other(
            "connection reset",
        )));
        assert_eq!(Error::from(status).to_string(), "connection reset");
    }

    #[test]
    fn connect_error_has_no_code() {
        let error = Error::from(ConnectError::for_test());
        assert_eq!(error.code(), None);
        assert_eq!(error.message(), error.to_string());
        assert!(
            error
                .to_string()
                .starts_with("cannot reach tokend at /nowhere")
        );
    }
}
