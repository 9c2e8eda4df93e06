//! The one error type of the demo crate.

use std::path::PathBuf;

/// What went wrong while reading a scenario or building it in the kernel.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("reading scenario {path}")]
    ReadScenario {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("scenario {source_name}")]
    ParseScenario {
        source_name: String,
        source: serde_norway::Error,
    },
    #[error("scenario: {0}")]
    InvalidScenario(String),
    #[error("scenario policies: {0}")]
    Policy(String),
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{program}` (install it: scripts/setup.sh)")]
    MissingTool {
        program: String,
        source: std::io::Error,
    },
    #[error("{op}")]
    Io { op: String, source: std::io::Error },
    #[error("{0}")]
    Prerequisite(String),
}

impl DemoError {
    pub(crate) fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> DemoError {
        let op = op.into();
        move |source| DemoError::Io { op, source }
    }
}
