//! What the state test binaries share: running one check against both backends.

use bridgehead_state::testing::TestPostgres;

/// Declares each check of the invoking file's `checks` module once per backend: `sqlite::…` on a
/// fresh SQLite file, `postgres::…` on a fresh throwaway PostgreSQL server.
macro_rules! each_backend {
    ($($check:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let dir = tempfile::tempdir().unwrap();
                    let url = format!("sqlite://{}/state.db", dir.path().display());
                    super::checks::$check(&url, bridgehead_state::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some(pg) = crate::common::start_postgres() else { return };
                    super::checks::$check(&pg.url(), bridgehead_state::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// A throwaway PostgreSQL server, or `None` when BRIDGEHEAD_SKIP_POSTGRES=1 says to skip.
pub fn start_postgres() -> Option<TestPostgres> {
    let pg = TestPostgres::start().unwrap_or_else(|e| panic!("{e}"));
    if pg.is_none() {
        eprintln!("skipped: BRIDGEHEAD_SKIP_POSTGRES=1");
    }
    pg
}
