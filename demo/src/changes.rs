//! The scenario's `changes` applied while the demo runs: the cluster file
//! the collector watches is replaced whole (written aside, then renamed, so
//! the collector never reads half a file), and the demo reloads its
//! nftables ruleset from the new cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::DemoError;
use crate::scenario::{Placed, Stage};

/// The file the collector's `--cluster DIR` holds.
pub const CLUSTER_FILE: &str = "cluster.yaml";

/// Replaces `dir/cluster.yaml` with `yaml` in one rename. The temporary
/// file's `.tmp` extension keeps the collector from reading it.
pub fn write_cluster(dir: &Path, yaml: &str) -> Result<(), DemoError> {
    let path = dir.join(CLUSTER_FILE);
    let tmp = dir.join(format!("{CLUSTER_FILE}.tmp"));
    std::fs::write(&tmp, yaml).map_err(DemoError::io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &path).map_err(DemoError::io(format!(
        "replacing {} with {}",
        path.display(),
        tmp.display()
    )))
}

/// Which of the scenario's stages are applied so far.
#[derive(Debug)]
pub struct Schedule {
    cluster_dir: PathBuf,
    applied: usize,
}

impl Schedule {
    pub fn new(cluster_dir: PathBuf) -> Schedule {
        Schedule {
            cluster_dir,
            applied: 0,
        }
    }

    /// Writes, in order, the cluster of every stage due at `elapsed` since
    /// the start and not applied yet; returns those stages.
    pub fn apply_due<'a>(
        &mut self,
        placed: &'a Placed,
        elapsed: Duration,
    ) -> Result<Vec<&'a Stage>, DemoError> {
        let mut out = Vec::new();
        for stage in &placed.stages[self.applied..] {
            if stage.after > elapsed {
                break;
            }
            write_cluster(&self.cluster_dir, &stage.cluster_yaml)?;
            tracing::info!(change = %stage.description, "scenario change applied");
            self.applied += 1;
            out.push(stage);
        }
        Ok(out)
    }

    /// Whether every stage has been applied.
    pub fn done(&self, placed: &Placed) -> bool {
        self.applied >= placed.stages.len()
    }
}
