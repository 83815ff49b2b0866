//! `migration`: the sea-orm-migration command line for the AVL schema
//! (`migration up`, `down`, `status`, `fresh`, ...). It reads `DATABASE_URL` (or `-u`).

use sea_orm_migration::prelude::*;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    cli::run_cli(migration::Migrator).await;
}
