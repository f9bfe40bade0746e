//! What the routing snapshot pushed to switch nodes is built from: every
//! tenant's trunks, SIP users, inbound routes, virtual numbers and
//! whitelist, and the configuration version. The version is a one-row
//! counter that triggers (migrations 0007, 0010, 0011) bump in the same transaction as any change to those
//! tables, so it names exactly one configuration and only ever grows.
//!
//! Rows are read in one transaction, so a snapshot never mixes two
//! versions. A virtual number whose `systemPrompt` is a prompt slug carries
//! the prompt's text here (see `store::prompts`). The gRPC shape is built by `switch_link::config`.

use super::numbers::number_from_row;
use super::sip_users::{sip_user_columns, sip_user_from_row};
use super::trunks::trunk_from_row;
use super::{NumberRecord, Pool, Result, SipUserRecord, Store, TrunkRecord, col};

/// An inbound route with its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRoute {
    pub tenant: String,
    pub did: String,
    /// '' when the route has no From filter.
    pub from_number: String,
    pub user: String,
}

/// Everything a snapshot holds, at one version.
#[derive(Debug, Clone, Default)]
pub struct ConfigRows {
    pub version: i64,
    pub trunks: Vec<TrunkRecord>,
    /// By name (unique across tenants).
    pub sip_users: Vec<SipUserRecord>,
    /// Per tenant in evaluation order (catchall last).
    pub routes: Vec<TenantRoute>,
    pub numbers: Vec<NumberRecord>,
    /// (tenant, E.164 number), ordered by tenant.
    pub whitelist: Vec<(String, String)>,
}

/// Replaces each number's `systemPrompt` that is a slug with the text it
/// stands for: the tenant's prompt (`named`: tenant, slug, text), else a
/// built-in; the text alone (a number has no call context to add).
fn resolve_number_prompts(
    mut numbers: Vec<NumberRecord>,
    named: &[(String, String, String)],
) -> Vec<NumberRecord> {
    for n in &mut numbers {
        if !super::prompts::is_slug(&n.system_prompt) {
            continue;
        }
        let own = named
            .iter()
            .find(|(t, slug, _)| *t == n.tenant && *slug == n.system_prompt)
            .map(|(_, _, text)| text.clone());
        if let Some(text) =
            own.or_else(|| super::prompts::builtin_prompt(&n.system_prompt).map(|b| b.text.into()))
        {
            n.system_prompt = text;
        }
    }
    numbers
}

macro_rules! read_rows {
    ($tx:expr) => {{
        let version: i64 = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&mut *$tx)
            .await?;
        let trunks = sqlx::query(
            "SELECT id, tenant, name, host, port, transport, username, password, from_user, \
             from_domain, max_concurrent_calls, calls_per_second, is_default, register, \
             created_at, updated_at FROM trunks ORDER BY tenant, created_at, id",
        )
        .fetch_all(&mut *$tx)
        .await?
        .iter()
        .map(trunk_from_row)
        .collect::<Result<Vec<_>>>()?;
        let routes = sqlx::query(
            "SELECT tenant, did, from_number, user_name FROM inbound_routes ORDER BY tenant, \
             CASE WHEN did = '*' AND from_number = '' THEN 1 ELSE 0 END, position, id",
        )
        .fetch_all(&mut *$tx)
        .await?
        .iter()
        .map(|r| {
            Ok(TenantRoute {
                tenant: col(r, "tenant")?,
                did: col(r, "did")?,
                from_number: col(r, "from_number")?,
                user: col(r, "user_name")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        let numbers = sqlx::query(
            "SELECT tenant, number, name, mode, voice, language, model, save_transcripts, \
             max_duration_sec, visibility, system_prompt, ai_api_key, created_at, updated_at \
             FROM numbers ORDER BY tenant, number",
        )
        .fetch_all(&mut *$tx)
        .await?
        .iter()
        .map(number_from_row)
        .collect::<Result<Vec<_>>>()?;
        // Tenant prompts named by a number's systemPrompt, in the same
        // snapshot, so a number's persona gets the prompt's text.
        let named: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT p.tenant, p.slug, p.text FROM prompts p JOIN numbers n \
             ON n.tenant = p.tenant AND n.system_prompt = p.slug",
        )
        .fetch_all(&mut *$tx)
        .await?;
        let numbers = resolve_number_prompts(numbers, &named);
        let whitelist = sqlx::query("SELECT tenant, phone FROM whitelist ORDER BY tenant, phone")
            .fetch_all(&mut *$tx)
            .await?
            .iter()
            .map(|r| Ok((col(r, "tenant")?, col(r, "phone")?)))
            .collect::<Result<Vec<_>>>()?;
        let sip_users = sqlx::query(concat!(
            "SELECT ",
            sip_user_columns!(),
            " FROM sip_users ORDER BY name"
        ))
        .fetch_all(&mut *$tx)
        .await?
        .iter()
        .map(sip_user_from_row)
        .collect::<Result<Vec<_>>>()?;
        ConfigRows {
            version,
            trunks,
            sip_users,
            routes,
            numbers,
            whitelist,
        }
    }};
}

impl Store {
    /// The current configuration version.
    pub async fn config_version(&self) -> Result<i64> {
        super::on_pool!(self, |pool| {
            Ok(
                sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
                    .fetch_one(pool)
                    .await?,
            )
        })
    }

    /// Raises the configuration version if the built-in prompts' texts
    /// differ from those it was last raised for (a new release changed
    /// one): snapshots carry a virtual number's built-in prompt as text,
    /// and nodes would keep the old one until some other change. True if
    /// it was raised.
    pub async fn note_builtin_prompts(&self) -> Result<bool> {
        let print = super::prompts::builtin_fingerprint();
        let raised = super::on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE config_version SET version = version + 1, builtins = $1 \
                 WHERE id = 1 AND builtins <> $1",
            )
            .bind(&print)
            .execute(pool)
            .await?
            .rows_affected()
                > 0
        });
        if raised {
            self.config_changed();
        }
        Ok(raised)
    }

    /// Raises the configuration version past `running`, a version a switch
    /// node runs that this database never reached (it was recreated, or
    /// restored from a backup): nodes ignore snapshots older than what
    /// they run, so without this they would keep the old configuration
    /// until as many changes had been made here again.
    pub async fn raise_config_version(&self, running: i64) -> Result<()> {
        let to = running.saturating_add(1);
        super::on_pool!(self, |pool| {
            sqlx::query("UPDATE config_version SET version = $1 WHERE id = 1 AND version < $1")
                .bind(to)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Every row of the routing configuration, read in one transaction
    /// (a repeatable-read snapshot on PostgreSQL).
    pub async fn config_rows(&self) -> Result<ConfigRows> {
        match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let rows = read_rows!(tx);
                tx.commit().await?;
                Ok(rows)
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                let rows = read_rows!(tx);
                tx.commit().await?;
                Ok(rows)
            }
        }
    }

    /// Wakes whoever pushes configuration to switch nodes (this process);
    /// other control planes notice the version change when they poll it.
    pub fn config_changed(&self) {
        self.config_wake.notify_one();
    }

    /// The signal `config_changed` fires.
    pub fn config_wake(&self) -> std::sync::Arc<tokio::sync::Notify> {
        self.config_wake.clone()
    }
}

#[cfg(test)]
mod tests {
    use codeb_types::UtcMillis;

    use crate::store::testing::{self, TestDb};
    use crate::store::{InboundRoute, NumberRecord, TrunkRecord};

    fn trunk(tenant: &str, id: u8) -> TrunkRecord {
        TrunkRecord {
            tenant: tenant.into(),
            ..testing::trunk(id, true)
        }
    }

    async fn every_change_bumps_the_version(db: TestDb) {
        let s = &db.store;
        let mut last = s.config_version().await.unwrap();
        let mut bumped = async |what: &str| {
            let v = s.config_version().await.unwrap();
            assert!(v > last, "{what} did not bump the version");
            last = v;
        };
        s.create_trunk(&trunk("a.test", 1)).await.unwrap();
        bumped("trunk create").await;
        let mut t = trunk("a.test", 1);
        t.host = "10.0.0.1".into();
        assert!(s.update_trunk(&t).await.unwrap());
        bumped("trunk update").await;
        s.ensure_catchall("a.test", "op", UtcMillis(1))
            .await
            .unwrap();
        bumped("catchall").await;
        let route = InboundRoute {
            did: "+15550001".into(),
            from_number: None,
            user: "1234".into(),
        };
        s.create_route("a.test", &route, UtcMillis(2))
            .await
            .unwrap()
            .unwrap();
        bumped("route").await;
        let n = NumberRecord {
            tenant: "a.test".into(),
            number: "1234".into(),
            name: "desk".into(),
            mode: "live-voice-ai".into(),
            voice: "Aoede".into(),
            language: "en-US".into(),
            model: "m".into(),
            save_transcripts: true,
            max_duration_sec: 600,
            visibility: "public".into(),
            system_prompt: "Be nice".into(),
            ai_api_key: "k".into(),
            created_at: UtcMillis(1),
            updated_at: UtcMillis(1),
        };
        assert!(s.create_number(&n).await.unwrap());
        bumped("number").await;
        assert!(s.delete_trunk("a.test", &t.id, false).await.unwrap());
        bumped("trunk delete").await;
        let rows = s.config_rows().await.unwrap();
        assert_eq!(rows.version, last);
        assert!(rows.trunks.is_empty());
        assert_eq!(rows.numbers.len(), 1);
        assert_eq!(rows.routes.len(), 2);
        assert_eq!(rows.routes[1].did, "*", "catchall is last");
    }

    /// The built-in prompts' texts raise the version once per change of
    /// them (the first start after the migration, or a release changing
    /// one), not at every start.
    async fn builtin_prompts_raise_the_version_once(db: TestDb) {
        let s = &db.store;
        let v0 = s.config_version().await.unwrap();
        assert!(s.note_builtin_prompts().await.unwrap());
        assert_eq!(s.config_version().await.unwrap(), v0 + 1);
        assert!(!s.note_builtin_prompts().await.unwrap());
        assert_eq!(s.config_version().await.unwrap(), v0 + 1);
        // Another release's texts.
        crate::store::on_pool!(s, |pool| {
            sqlx::query("UPDATE config_version SET builtins = 'older' WHERE id = 1")
                .execute(pool)
                .await
                .unwrap();
        });
        assert!(s.note_builtin_prompts().await.unwrap());
        assert_eq!(s.config_version().await.unwrap(), v0 + 2);
    }

    #[tokio::test]
    async fn builtin_prompts_sqlite() {
        builtin_prompts_raise_the_version_once(TestDb::sqlite().await).await;
    }

    #[tokio::test]
    async fn builtin_prompts_postgres() {
        if let Some(db) = TestDb::postgres().await {
            builtin_prompts_raise_the_version_once(db).await;
        }
    }

    #[tokio::test]
    async fn config_version_sqlite() {
        every_change_bumps_the_version(TestDb::sqlite().await).await;
    }

    #[tokio::test]
    async fn config_version_postgres() {
        if let Some(db) = TestDb::postgres().await {
            every_change_bumps_the_version(db).await;
        }
    }
}
