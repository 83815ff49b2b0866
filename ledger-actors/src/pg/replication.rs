//! Replicated durability (`replication: synchronous`): what makes `Committed` mean
//! "flushed on the primary and on a synchronous standby", and the replication state that
//! `health` and the metrics report.
//!
//! PostgreSQL decides per transaction whether a commit waits for a standby: it waits when
//! the session's `synchronous_commit` is `on` (or `remote_write` / `remote_apply`) *and*
//! the server's `synchronous_standby_names` is not empty. The ledger sets the first on
//! every connection it opens (a startup option, so a server default of `local` or `off`
//! cannot weaken it), and checks the second three times, because an operator can empty it
//! with `ALTER SYSTEM` + reload at any moment, and PostgreSQL then commits locally without
//! a word:
//! - at start ([`check_start`]): refused with [`LedgerError::NotReplicated`];
//! - in the records' INSERT itself (the guard in `pg::INSERT_SQL`, which reads the
//!   session's [`MODE_SETTING`]): the statement fails, so nothing is written; the writer
//!   treats it as an outage (the server does not take *our* writes) and the records wait in
//!   the outage buffer, acknowledged `Buffered`;
//! - after each commit ([`confirm`]): a reload that emptied the setting while a commit
//!   waited for the standby releases that commit locally; the next statement of any of our
//!   sessions sees the reloaded value, so the batch is answered as an outage too (its
//!   records are stored on the primary, and the drain later finds them there) instead of
//!   `Committed`.
//!
//! A standby that disconnects while the setting stays makes commits wait (PostgreSQL does
//! not cancel the wait on `statement_timeout`); appends then fail with
//! [`LedgerError::Timeout`] (outcome unknown: re-append with the same rid) until it returns
//! or is replaced: never a silent local commit.

use std::time::Duration;

use sea_orm::sqlx::{self, PgPool};
use sea_orm::{DbErr, RuntimeErr};

use crate::config::Replication;
use crate::error::LedgerError;
pub use crate::store::ReplicationState;

/// A custom setting the ledger puts on each of its sessions so that SQL can read the mode:
/// `synchronous` under `replication: synchronous`, unset otherwise.
pub const MODE_SETTING: &str = "avl.replication";

/// The setting the INSERT guard asks for when a synchronous session finds no synchronous
/// standby configured: it does not exist, so the statement fails with SQLSTATE 42704 and a
/// message naming it, which [`crate::pg::store::classify`] turns into
/// [`LedgerError::Unavailable`].
pub const GUARD_SETTING: &str = "avl.no_synchronous_standby";

/// The startup options of every ledger connection for `replication`.
pub fn session_options(replication: Replication) -> Vec<(&'static str, String)> {
    match replication {
        Replication::Local => Vec::new(),
        Replication::Synchronous => vec![
            ("synchronous_commit", "on".to_owned()),
            (MODE_SETTING, "synchronous".to_owned()),
        ],
    }
}

const START_SQL: &str = "SELECT pg_is_in_recovery(), current_setting('synchronous_standby_names'), \
     current_setting('synchronous_commit')";

/// Refuses a synchronous start on a server without a synchronous standby configured
/// ([`LedgerError::NotReplicated`]); nothing to check under `replication: local`.
pub async fn check_start(pool: &PgPool, replication: Replication) -> Result<(), LedgerError> {
    if replication == Replication::Local {
        return Ok(());
    }
    let (in_recovery, names, commit): (bool, String, String) = sqlx::query_as(START_SQL)
        .fetch_one(pool)
        .await
        .map_err(|e| {
            crate::pg::store::classify(&DbErr::Query(RuntimeErr::SqlxError(e.into())), None)
        })?;
    if in_recovery {
        return Err(LedgerError::NotReplicated(
            "the server is a standby (in recovery), not a primary".into(),
        ));
    }
    if names.trim().is_empty() {
        return Err(LedgerError::NotReplicated(
            "the server has no synchronous standby configured (synchronous_standby_names is empty): a Committed record would not survive a failover".into(),
        ));
    }
    if !matches!(commit.as_str(), "on" | "remote_write" | "remote_apply") {
        return Err(LedgerError::NotReplicated(format!(
            "the session's synchronous_commit is {commit:?} although the ledger asked for \"on\" (a pooler dropping startup options?)"
        )));
    }
    Ok(())
}

const CONFIRM_SQL: &str = "SELECT current_setting('synchronous_standby_names') <> ''";

/// After a commit under `replication: synchronous`: `Err` (a connectivity error) if the
/// server's synchronous standbys were unconfigured meanwhile, so the commit may have been
/// released without the standby.
pub async fn confirm(pool: &PgPool, replication: Replication) -> Result<(), DbErr> {
    if replication == Replication::Local {
        return Ok(());
    }
    let configured: bool = sqlx::query_scalar(CONFIRM_SQL)
        .fetch_one(pool)
        .await
        .map_err(|e| DbErr::Exec(RuntimeErr::SqlxError(e.into())))?;
    if configured {
        Ok(())
    } else {
        Err(DbErr::Conn(RuntimeErr::Internal(
            "synchronous_standby_names was emptied on the server: the last commit may not be on a standby (replication: synchronous); records wait in the outage buffer".into(),
        )))
    }
}

const STATE_SQL: &str = "SELECT current_setting('synchronous_standby_names'), \
     (SELECT CASE WHEN bool_or(state IS NULL) THEN NULL \
        ELSE (count(*) FILTER (WHERE sync_state IN ('sync', 'quorum')))::int4 END \
        FROM pg_stat_replication), \
     (SELECT extract(epoch FROM max(flush_lag))::float8 FROM pg_stat_replication \
        WHERE sync_state IN ('sync', 'quorum'))";

/// Reads the replication state within `limit`.
pub async fn state(
    pool: &PgPool,
    mode: Replication,
    limit: Duration,
) -> Result<ReplicationState, LedgerError> {
    let read = sqlx::query_as::<_, (String, Option<i32>, Option<f64>)>(STATE_SQL).fetch_one(pool);
    let (standby_names, streaming, lag) = tokio::time::timeout(limit, read)
        .await
        .map_err(|_| LedgerError::Unavailable(format!("no answer within {limit:?}")))?
        .map_err(|e| {
            crate::pg::store::classify(&DbErr::Query(RuntimeErr::SqlxError(e.into())), None)
        })?;
    // Without pg_monitor the rows are there but their state columns are NULL: unknown.
    Ok(ReplicationState {
        mode,
        standby_names,
        sync_standbys: streaming.map(|n| u32::try_from(n).unwrap_or(0)),
        flush_lag: lag
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly by design")]
mod tests {
    use super::*;

    #[test]
    fn the_insert_guard_names_the_settings_of_this_module() {
        // The guard is SQL text in `pg::INSERT_SQL` and `pg::COPY_SQL`; the names must agree with the
        // constants the session options and the error classifier use.
        // The COPY carries the same guard.
        for sql in [
            crate::pg::insert_sql_for_tests(),
            crate::pg::copy_sql_for_tests(),
        ] {
            assert!(sql.contains(&format!(
                "current_setting('{MODE_SETTING}', true) = 'synchronous'"
            )));
            assert!(sql.contains(&format!("'{GUARD_SETTING}'")));
        }
    }

    #[test]
    fn local_sessions_get_no_options_and_synchronous_ones_ask_for_the_standby() {
        assert!(session_options(Replication::Local).is_empty());
        let sync = session_options(Replication::Synchronous);
        assert!(sync.contains(&("synchronous_commit", "on".to_owned())));
        assert!(sync.contains(&(MODE_SETTING, "synchronous".to_owned())));
    }

    #[test]
    fn problems_are_named_only_under_synchronous_replication() {
        let mut st = ReplicationState {
            mode: Replication::Local,
            standby_names: String::new(),
            sync_standbys: Some(0),
            flush_lag: None,
        };
        assert_eq!(st.problem(), None);
        st.mode = Replication::Synchronous;
        assert!(
            st.problem()
                .unwrap()
                .contains("no synchronous_standby_names")
        );
        st.standby_names = "*".into();
        assert!(
            st.problem()
                .unwrap()
                .contains("no synchronous standby is streaming")
        );
        st.sync_standbys = Some(1);
        assert_eq!(st.problem(), None);
        // Unknown (no pg_monitor): not reported as a problem.
        st.sync_standbys = None;
        assert_eq!(st.problem(), None);
    }
}
