//! Validation findings: every error and warning with its key path and, where known, its line.

use std::fmt;

/// One finding, e.g. `regions.eu-west.nodes[0].port: must be between 1 and 65535`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Dotted key path, with `[i]` for array elements.
    pub path: String,
    /// 1-based line in the file, when the path could be located.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{} (line {l}): {}", self.path, self.message),
            None => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// All errors and warnings found in one config file. Validation never stops at the first one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Report {
    pub fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Finding {
            path: path.into(),
            line: None,
            message: message.into(),
        });
    }

    pub fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Finding {
            path: path.into(),
            line: None,
            message: message.into(),
        });
    }

    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }

    /// Fill in line numbers with a lookup from key path to line.
    pub fn locate(&mut self, line_of: impl Fn(&str) -> Option<usize>) {
        for f in self.errors.iter_mut().chain(self.warnings.iter_mut()) {
            if f.line.is_none() {
                f.line = line_of(&f.path);
            }
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.errors {
            writeln!(f, "error: {e}")?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        Ok(())
    }
}
