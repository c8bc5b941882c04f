//! Errors of the backup subsystem. Each says what happened and, where there is one, what to do.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wrong passphrase for repository {repo}: none of its keys opens with it")]
    WrongPassword { repo: String },
    #[error("no passphrase for repository {repo}: set {var} or pass --password-file FILE")]
    NoPassword { repo: String, var: String },
    #[error("no repository at {repo}: create one with `lifeboat backup init --repo {repo}`")]
    NoRepository { repo: String },
    #[error("a repository already exists at {repo}")]
    AlreadyExists { repo: String },
    #[error("{op} {key} in {repo}: {source}{hint}")]
    Storage {
        op: &'static str,
        key: String,
        repo: String,
        #[source]
        source: Box<object_store::Error>,
        /// What to do about it, when there is something (starts with "; ").
        hint: &'static str,
    },
    #[error("invalid repository location {location:?}: {reason}")]
    Location { location: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("no snapshot {0:?} in the repository (see `lifeboat backup list`)")]
    UnknownSnapshot(String),
    #[error("repository is locked by {holder}; retry when it is done, or remove the lock if that process is gone for sure")]
    Locked { holder: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {detail}")]
    Command { what: String, detail: String },
}

impl Error {
    pub fn corrupt(what: impl Into<String>) -> Error {
        Error::Corrupt(what.into())
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// Exit status for the CLI: 2 for usage and input problems, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::WrongPassword { .. }
            | Error::NoPassword { .. }
            | Error::NoRepository { .. }
            | Error::AlreadyExists { .. }
            | Error::Location { .. }
            | Error::UnknownSnapshot(_)
            | Error::Invalid(_) => 2,
            _ => 1,
        }
    }
}
