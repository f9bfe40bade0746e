//! SIP users (`/api.ashx/v1/sip-users`): the people and PBX-style peers an
//! inbound route's `user` rings, and whom the AI's `transfer_to_user` may
//! name. They reach switch nodes in the routing snapshot; every write bumps
//! the configuration version (trigger, migration 0011).
//!
//! A name is unique across tenants (a switch node's registrar knows a user
//! by name alone), so `create_sip_user` reports a name taken anywhere as a
//! conflict; every read and change is still scoped by tenant. Passwords are
//! stored as trunk passwords are: the switch needs the plain text to verify
//! digest, and the API never shows them.

use codeb_types::UtcMillis;

use super::{Page, Result, RowExt, Store, col, ms, on_pool};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUserRecord {
    pub tenant: String,
    /// The SIP user part (1–64 of `A-Za-z0-9._+-`).
    pub name: String,
    /// '' when none.
    pub display_name: String,
    /// Digest password for REGISTER; '' when the user cannot register.
    pub password: String,
    /// A fixed `sip:` contact URI; '' when none.
    pub contact: String,
    pub created_at: UtcMillis,
    pub updated_at: UtcMillis,
}

macro_rules! sip_user_columns {
    () => {
        "tenant, name, display_name, password, contact, created_at, updated_at"
    };
}
pub(super) use sip_user_columns;

pub(super) fn sip_user_from_row(row: &impl RowExt) -> Result<SipUserRecord> {
    Ok(SipUserRecord {
        tenant: col(row, "tenant")?,
        name: col(row, "name")?,
        display_name: col(row, "display_name")?,
        password: col(row, "password")?,
        contact: col(row, "contact")?,
        created_at: ms(row, "created_at")?,
        updated_at: ms(row, "updated_at")?,
    })
}

impl Store {
    /// The tenant's SIP users by name.
    pub async fn list_sip_users(
        &self,
        tenant: &str,
        limit: i64,
        offset: i64,
    ) -> Result<Page<SipUserRecord>> {
        on_pool!(self, |pool| {
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sip_users WHERE tenant = $1")
                .bind(tenant)
                .fetch_one(pool)
                .await?;
            let sql = concat!(
                "SELECT ",
                sip_user_columns!(),
                " FROM sip_users WHERE tenant = $1 ORDER BY name LIMIT $2 OFFSET $3"
            );
            let rows = sqlx::query(sql)
                .bind(tenant)
                .bind(limit)
                .bind(offset)
                .fetch_all(pool)
                .await?;
            let items = rows.iter().map(sip_user_from_row).collect::<Result<_>>()?;
            Ok(Page { items, total })
        })
    }

    pub async fn sip_user(&self, tenant: &str, name: &str) -> Result<Option<SipUserRecord>> {
        on_pool!(self, |pool| {
            let sql = concat!(
                "SELECT ",
                sip_user_columns!(),
                " FROM sip_users WHERE tenant = $1 AND name = $2"
            );
            let row = sqlx::query(sql)
                .bind(tenant)
                .bind(name)
                .fetch_optional(pool)
                .await?;
            row.as_ref().map(sip_user_from_row).transpose()
        })
    }

    /// Stores a new user; false if the name is taken (by any tenant).
    pub async fn create_sip_user(&self, u: &SipUserRecord) -> Result<bool> {
        on_pool!(self, |pool| {
            let n = sqlx::query(
                "INSERT INTO sip_users (tenant, name, display_name, password, contact, \
                 created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(&u.tenant)
            .bind(&u.name)
            .bind(&u.display_name)
            .bind(&u.password)
            .bind(&u.contact)
            .bind(u.created_at.0)
            .bind(u.updated_at.0)
            .execute(pool)
            .await?
            .rows_affected();
            if n > 0 {
                self.config_changed();
            }
            Ok(n > 0)
        })
    }

    /// Replaces a user's display name, password and contact; false if the
    /// tenant has no user of that name.
    pub async fn update_sip_user(&self, u: &SipUserRecord) -> Result<bool> {
        on_pool!(self, |pool| {
            let n = sqlx::query(
                "UPDATE sip_users SET display_name = $3, password = $4, contact = $5, \
                 updated_at = $6 WHERE tenant = $1 AND name = $2",
            )
            .bind(&u.tenant)
            .bind(&u.name)
            .bind(&u.display_name)
            .bind(&u.password)
            .bind(&u.contact)
            .bind(u.updated_at.0)
            .execute(pool)
            .await?
            .rows_affected();
            if n > 0 {
                self.config_changed();
            }
            Ok(n > 0)
        })
    }

    /// Deletes a user; false if the tenant has none of that name.
    pub async fn delete_sip_user(&self, tenant: &str, name: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let n = sqlx::query("DELETE FROM sip_users WHERE tenant = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .execute(pool)
                .await?
                .rows_affected();
            if n > 0 {
                self.config_changed();
            }
            Ok(n > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::TestDb;

    fn user(tenant: &str, name: &str) -> SipUserRecord {
        SipUserRecord {
            tenant: tenant.into(),
            name: name.into(),
            display_name: String::new(),
            password: "pw".into(),
            contact: String::new(),
            created_at: UtcMillis(1),
            updated_at: UtcMillis(1),
        }
    }

    async fn crud_and_uniqueness(db: TestDb) {
        let s = &db.store;
        let v0 = s.config_version().await.unwrap();
        assert!(s.create_sip_user(&user("a.test", "bob")).await.unwrap());
        assert!(s.create_sip_user(&user("a.test", "al")).await.unwrap());
        assert!(
            !s.create_sip_user(&user("a.test", "bob")).await.unwrap(),
            "same name, same tenant"
        );
        assert!(
            !s.create_sip_user(&user("b.test", "bob")).await.unwrap(),
            "a name is unique across tenants"
        );
        let v1 = s.config_version().await.unwrap();
        assert!(v1 > v0, "a create bumps the configuration version");
        let page = s.list_sip_users("a.test", 10, 0).await.unwrap();
        assert_eq!(page.total, 2);
        let names: Vec<_> = page.items.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["al", "bob"]);
        assert_eq!(s.list_sip_users("b.test", 10, 0).await.unwrap().total, 0);
        assert_eq!(
            s.list_sip_users("a.test", 1, 1).await.unwrap().items.len(),
            1
        );
        assert_eq!(s.sip_user("b.test", "bob").await.unwrap(), None);
        let mut u = s.sip_user("a.test", "bob").await.unwrap().unwrap();
        assert_eq!(u, user("a.test", "bob"));
        u.contact = "sip:bob@192.0.2.1:5070".into();
        u.password = String::new();
        u.display_name = "Bob".into();
        u.updated_at = UtcMillis(2);
        assert!(s.update_sip_user(&u).await.unwrap());
        assert_eq!(s.sip_user("a.test", "bob").await.unwrap(), Some(u.clone()));
        let v2 = s.config_version().await.unwrap();
        assert!(v2 > v1, "an update bumps the configuration version");
        let mut other = u.clone();
        other.tenant = "b.test".into();
        assert!(!s.update_sip_user(&other).await.unwrap(), "tenant-scoped");
        assert!(!s.delete_sip_user("b.test", "bob").await.unwrap());
        assert!(s.delete_sip_user("a.test", "bob").await.unwrap());
        assert!(!s.delete_sip_user("a.test", "bob").await.unwrap());
        assert!(s.config_version().await.unwrap() > v2, "a delete bumps it");
        assert!(s.create_sip_user(&user("b.test", "bob")).await.unwrap());
    }

    #[tokio::test]
    async fn sip_users_sqlite() {
        crud_and_uniqueness(TestDb::sqlite().await).await;
    }

    #[tokio::test]
    async fn sip_users_postgres() {
        if let Some(db) = TestDb::postgres().await {
            crud_and_uniqueness(db).await;
        }
    }
}
