use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        target: String,
        reason: String,
        sqlstate: Option<String>,
    },
    #[error("{what} on {target} did not finish within {after:?}")]
    Timeout {
        what: &'static str,
        target: String,
        after: Duration,
    },
    #[error("{what} on {target}: {reason}")]
    Query {
        what: &'static str,
        target: String,
        reason: String,
        sqlstate: Option<String>,
    },
    #[error("{what} on {target}: {reason}")]
    Refused {
        what: &'static str,
        target: String,
        reason: String,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Command {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("no PostgreSQL binaries found (looked in $LIFEBOAT_PG_BIN_DIR, /usr/lib/postgresql/*/bin and PATH); install PostgreSQL (apt-get install -y postgresql) or set control.bin-dir")]
    NoBinaries,
}

impl PgError {
    /// A retry may succeed: the server was unreachable, slow or shutting down. Permanent
    /// errors (wrong password, missing privilege, a refused promotion) are not retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Timeout { .. } | PgError::Io { .. } => true,
            PgError::Connect { sqlstate, .. } | PgError::Query { sqlstate, .. } => match sqlstate {
                None => true,
                Some(c) => c.starts_with("08") || c.starts_with("57") || c.starts_with("53"),
            },
            PgError::Refused { .. } | PgError::Command { .. } | PgError::NoBinaries => false,
        }
    }

    /// The SQLSTATE the server sent, if any (`28P01` is a wrong password).
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Connect { sqlstate, .. } | PgError::Query { sqlstate, .. } => {
                sqlstate.as_deref()
            }
            _ => None,
        }
    }
}

/// The server's own message when there is one, else the error and its causes.
pub(crate) fn describe(e: &tokio_postgres::Error) -> (String, Option<String>) {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_owned();
        if let Some(h) = db.hint() {
            s.push_str(" (hint: ");
            s.push_str(h);
            s.push(')');
        }
        return (s, Some(db.code().code().to_owned()));
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    (s, None)
}
