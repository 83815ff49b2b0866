//! `--partition N`: the commands that work on one transparency log (`checkpoint`, `prove`,
//! `serve`, `tail`) pick one partition of a partitioned ledger; each partition has its
//! own log, key and origin.

use anyhow::Context as _;
use ledger_actors::LedgerConfig;
use ledger_actors::partition::{partition_config, partition_count};

/// The `--partition` option.
#[derive(clap::Args, Clone, Copy)]
pub struct PartitionArg {
    /// With `partitions:` configured: the partition (0-based index in the list) whose log
    /// this command uses. Required when there are several.
    #[arg(long, value_name = "N")]
    pub partition: Option<usize>,
}

impl PartitionArg {
    /// The configuration of the chosen partition (the configuration itself when it is not
    /// partitioned and no partition, or partition 0, is asked for).
    pub fn config(&self, config: &LedgerConfig) -> anyhow::Result<LedgerConfig> {
        let count = partition_count(config);
        let index = match self.partition {
            Some(i) => i,
            None if count == 1 => 0,
            None => anyhow::bail!(
                "this ledger has {count} partitions, each with its own log: add --partition N (0..={})",
                count - 1
            ),
        };
        partition_config(config, index).with_context(|| format!("--partition {index}"))
    }
}
