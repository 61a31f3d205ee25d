//! The error types a failed step reports (`error_type`), each with its wire
//! name and whether trying again may help. One list for every tool, the
//! engine and the store: nothing else decides a retry.

use std::fmt;

macro_rules! error_kinds {
    ($($(#[doc = $doc:literal])* $name:ident => $retry:literal,)*) => {
        /// Why a step failed, as users see it (the seed's exception names).
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $($(#[doc = $doc])* $name,)*
            /// A kind named by a tool over HTTP, passed on as it came.
            Other(String),
        }

        impl ErrorKind {
            /// The wire name (`FileNotFoundError`).
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorKind::$name => stringify!($name),)*
                    ErrorKind::Other(name) => name,
                }
            }

            /// The kind with this wire name; an unknown one is `Other`.
            pub fn parse(name: &str) -> ErrorKind {
                match name {
                    $(stringify!($name) => ErrorKind::$name,)*
                    other => ErrorKind::Other(other.to_string()),
                }
            }

            /// Whether another attempt may succeed: `false` when the
            /// pipeline, its input or the configuration is wrong, not the
            /// world. Kinds from tools over HTTP are retried.
            pub fn is_retryable(&self) -> bool {
                match self {
                    $(ErrorKind::$name => $retry,)*
                    ErrorKind::Other(_) => true,
                }
            }
        }
    };
}

error_kinds! {
    /// Parameters that do not fit the action.
    ValidationError => false,
    /// Rendered parameters that do not fit the action's JSON Schema.
    SchemaValidationError => true,
    PermissionError => false,
    TemplateError => false,
    ConditionError => false,
    ToolNotFoundError => false,
    ToolProtocolError => false,
    ToolError => true,
    ExecutionError => true,
    InternalError => true,
    StoreError => true,
    CancelledError => false,
    TimeoutError => true,
    /// The step's worker died too often.
    WorkerLostError => false,
    /// A loop would take the execution past `limits.max_steps`.
    LimitExceededError => false,
    /// The execution's model budget is spent.
    BudgetExceeded => false,
    /// A `pipeline-executor` step's child execution failed: trying the step
    /// again would read the same outcome (`error_handling: retry` starts a
    /// new child instead).
    ChildExecutionError => false,
    FileNotFoundError => true,
    FileExistsError => true,
    IsADirectoryError => false,
    FileTooLargeError => false,
    UnicodeDecodeError => false,
    IOError => true,
    OSError => true,
    CommandError => true,
    DataFormatError => true,
    ConnectionError => true,
    HttpError => true,
    HttpClientError => false,
    ResponseTooLargeError => false,
    SearchError => true,
    SearchRejectedError => false,
    NoSearchBackendError => false,
    ModelUnavailableError => false,
    ModelRequestError => false,
    ModelAuthenticationError => false,
    ModelRateLimitError => true,
    ModelProviderError => true,
    ModelResponseError => true,
    StructuredOutputError => true,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_round_trip_and_decide_retries() {
        for name in [
            "FileNotFoundError",
            "ValidationError",
            "BudgetExceeded",
            "IOError",
        ] {
            assert_eq!(ErrorKind::parse(name).as_str(), name);
        }
        assert_eq!(
            ErrorKind::parse("RemoteQuotaError"),
            ErrorKind::Other("RemoteQuotaError".into())
        );
        assert!(ErrorKind::TimeoutError.is_retryable());
        assert!(ErrorKind::parse("RemoteQuotaError").is_retryable());
        assert!(!ErrorKind::ValidationError.is_retryable());
        assert!(!ErrorKind::WorkerLostError.is_retryable());
        assert_eq!(ErrorKind::CancelledError, "CancelledError");
    }
}
