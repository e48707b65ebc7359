//! Error codes and close codes, exactly the closed sets of PROTOCOL.md.

use std::{borrow::Cow, fmt};

/// The closed set of `error.code` values. Adding one is a protocol change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    BadCredentials,
    UserExists,
    Forbidden,
    NotFound,
    TooLarge,
    RateLimited,
    Overloaded,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::BadCredentials,
        ErrorCode::UserExists,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::TooLarge,
        ErrorCode::RateLimited,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::BadCredentials => "bad_credentials",
            ErrorCode::UserExists => "user_exists",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the server sends (RFC 6455 and the IANA registry).
pub struct CloseCode;

impl CloseCode {
    pub const NORMAL: u16 = 1000;
    /// Login timeout, repeated abuse.
    pub const POLICY: u16 = 1008;
    /// Inbound message over `limits.max_frame_bytes`.
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    /// Node draining, sent after `goaway`.
    pub const RESTART: u16 = 1012;
    /// Slow consumer: the outbound queue overflowed.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// An error answer: a code, a human-readable message and, for `overloaded`
/// and `unavailable`, when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: ErrorCode,
    /// Mostly fixed text: borrowed then, so that a refusal under overload
    /// allocates no message.
    pub message: Cow<'static, str>,
    pub retry_after_ms: Option<u64>,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Failure {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// `overloaded` or `unavailable` always carry `retry_after_ms`.
    pub fn retry(
        code: ErrorCode,
        message: impl Into<Cow<'static, str>>,
        retry_after_ms: u64,
    ) -> Self {
        Failure {
            code,
            message: message.into(),
            retry_after_ms: Some(retry_after_ms),
        }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Failure::new(ErrorCode::BadRequest, message)
    }

    pub fn internal() -> Self {
        Failure::new(
            ErrorCode::Internal,
            "internal error; the request was not completed",
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Failure {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_spell_as_the_protocol_says() {
        let spelled: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            spelled,
            [
                "bad_request",
                "unauthorized",
                "bad_credentials",
                "user_exists",
                "forbidden",
                "not_found",
                "too_large",
                "rate_limited",
                "overloaded",
                "unavailable",
                "internal"
            ]
        );
    }
}
