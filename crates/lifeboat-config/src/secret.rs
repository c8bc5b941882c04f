//! Reading a secret the config points at: a file (trailing newline removed) or an environment
//! variable. Every `*-file` / `*-env` pair of keys is read here.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the environment variable {var} is not set; export it or use a file")]
    Env { var: String },
}

/// The secret from `file`, else from the variable `env`; `None` when neither is given.
pub fn read_secret(file: Option<&Path>, env: Option<&str>) -> Result<Option<String>, SecretError> {
    match (file, env) {
        (Some(p), _) => std::fs::read_to_string(p)
            .map(|s| Some(s.trim_end_matches(['\n', '\r']).to_owned()))
            .map_err(|source| SecretError::File {
                path: p.to_path_buf(),
                source,
            }),
        (None, Some(var)) => std::env::var(var).map(Some).map_err(|_| SecretError::Env {
            var: var.to_owned(),
        }),
        (None, None) => Ok(None),
    }
}
