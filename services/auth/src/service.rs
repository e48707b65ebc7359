//! [`Auth`]: the operations behind `register`, `login` and token upgrades.

use std::{
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use argon2::{Argon2, password_hash::PasswordHasher};
use dialtone_proto::{ErrorCode, Name, codes::Failure};
use dialtone_store::{Store, StoreError};

use crate::{
    HashPool, Jwt, PoolError,
    jwt::TokenError,
    pool::{Job, Outcome},
};
use supervisor::Faults;

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub jwt_secret: Vec<u8>,
    /// Lifetime of tokens this node issues.
    pub token_ttl: Duration,
    /// Threads hashing passwords; more than the core count only adds latency.
    pub hash_workers: usize,
    /// Hash jobs that may wait for a thread; past that, `overloaded`.
    pub hash_queue: usize,
}

/// A successful login: what the `ok` reply carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub user: Name,
    pub token: String,
    pub expires_at: u64,
}

/// The auth role. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    store: Arc<dyn Store>,
    jwt: Jwt,
    pool: HashPool,
    ttl: Duration,
}

/// Retry hint when the hash pool is full: about one hash time per queued job
/// per thread, rounded up to something a client will not spin on.
const POOL_FULL_RETRY_MS: u64 = 250;

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn pool_failure(e: PoolError) -> Failure {
    match e {
        PoolError::Full => Failure::retry(
            ErrorCode::Overloaded,
            "password hashing is at capacity",
            POOL_FULL_RETRY_MS,
        ),
        PoolError::Panicked => Failure::internal(),
        PoolError::Unavailable => Failure::retry(
            ErrorCode::Unavailable,
            "password hashing is restarting",
            1000,
        ),
    }
}

/// A real hash of a random password: logins for unknown users verify against
/// it so that they cost the same time as real ones (no user enumeration by timing).
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        let pw: [u8; 16] = rand::random();
        Argon2::default()
            .hash_password(&pw)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

impl Auth {
    /// Builds the role; start [`HashPool::child_specs`] of [`Auth::pool`]
    /// under a supervisor before logging anyone in.
    pub fn new(store: Arc<dyn Store>, cfg: &AuthConfig, faults: Faults) -> Self {
        Auth {
            store,
            jwt: Jwt::new(&cfg.jwt_secret),
            pool: HashPool::new(cfg.hash_workers, cfg.hash_queue, faults),
            ttl: cfg.token_ttl,
        }
    }

    pub fn jwt(&self) -> &Jwt {
        &self.jwt
    }

    pub fn pool(&self) -> &HashPool {
        &self.pool
    }

    fn issue(&self, user: Name) -> Issued {
        let expires_at = now_secs() + self.ttl.as_secs();
        Issued {
            token: self.jwt.mint(&user, expires_at),
            user,
            expires_at,
        }
    }

    /// Creates a user with an argon2id hash of `password` and logs it in.
    ///
    /// # Errors
    /// `user_exists`, `overloaded` when the hash pool is full, `unavailable`
    /// when the store is down.
    pub async fn register(&self, user: Name, password: String) -> Result<Issued, Failure> {
        // Cheap check first so that a taken name costs no hash.
        if self
            .store
            .password_hash(&user)
            .await
            .map_err(Failure::from)?
            .is_some()
        {
            return Err(StoreError::UserExists.into());
        }
        let Outcome::Hashed(hash) = self
            .pool
            .run(Job::Hash { password })
            .await
            .map_err(pool_failure)?
        else {
            return Err(Failure::internal());
        };
        self.store
            .create_user(&user, hash)
            .await
            .map_err(Failure::from)?;
        Ok(self.issue(user))
    }

    /// Checks a password and logs the user in.
    ///
    /// # Errors
    /// `bad_credentials` for an unknown user or a wrong password (the same
    /// answer and the same cost for both), `overloaded`, `unavailable`.
    pub async fn login_password(&self, user: Name, password: String) -> Result<Issued, Failure> {
        let stored = self
            .store
            .password_hash(&user)
            .await
            .map_err(Failure::from)?;
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| decoy_hash().to_owned());
        let outcome = self
            .pool
            .run(Job::Verify { password, hash })
            .await
            .map_err(pool_failure)?;
        if outcome == Outcome::Verified(true) && known {
            Ok(self.issue(user))
        } else {
            Err(Failure::new(
                ErrorCode::BadCredentials,
                "unknown user or wrong password",
            ))
        }
    }

    /// Logs in with a token minted by anyone holding the secret, and issues a
    /// fresh one (a refresh). A user never registered is recorded as known,
    /// with no password.
    ///
    /// # Errors
    /// `unauthorized` for a bad or expired token, `unavailable`.
    pub async fn login_token(&self, token: &str) -> Result<Issued, Failure> {
        let user = self.verify(token)?;
        self.store.touch_user(&user).await.map_err(Failure::from)?;
        Ok(self.issue(user))
    }

    /// Verifies a token without touching the store (the upgrade path).
    ///
    /// # Errors
    /// `unauthorized` with the reason.
    pub fn verify(&self, token: &str) -> Result<Name, Failure> {
        self.jwt.verify(token).map(|(user, _)| user).map_err(|e| {
            let msg = match e {
                TokenError::Expired => "token expired".to_owned(),
                TokenError::BadSubject => "token subject is not a valid user name".to_owned(),
                TokenError::Invalid(_) => "token invalid".to_owned(),
            };
            Failure::new(ErrorCode::Unauthorized, msg)
        })
    }

    /// Records a user who arrived with a token at upgrade.
    ///
    /// # Errors
    /// `unavailable` when the store is down.
    pub async fn touch(&self, user: &Name) -> Result<(), Failure> {
        self.store.touch_user(user).await.map_err(Failure::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialtone_store::MemoryStore;

    fn auth() -> Auth {
        let a = Auth::new(
            Arc::new(MemoryStore::new()),
            &AuthConfig {
                jwt_secret: b"k".to_vec(),
                token_ttl: Duration::from_secs(60),
                hash_workers: 2,
                hash_queue: 8,
            },
            Faults::default(),
        );
        let mut tree = supervisor::SupervisorSpec::new("auth");
        for c in a.pool().child_specs() {
            tree = tree.child(c);
        }
        // Dropping the handle leaves the tree running for the test's runtime.
        drop(tree.start());
        a
    }

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    #[tokio::test]
    async fn register_then_login_with_the_password() {
        let a = auth();
        let issued = a.register(n("alice"), "pw".into()).await.unwrap();
        assert_eq!(a.verify(&issued.token).unwrap(), n("alice"));
        assert!(a.login_password(n("alice"), "pw".into()).await.is_ok());
    }

    #[tokio::test]
    async fn wrong_password_and_unknown_user_are_both_bad_credentials() {
        let a = auth();
        a.register(n("alice"), "pw".into()).await.unwrap();
        let wrong = a
            .login_password(n("alice"), "nope".into())
            .await
            .unwrap_err();
        let unknown = a.login_password(n("bob"), "pw".into()).await.unwrap_err();
        assert_eq!(wrong.code, ErrorCode::BadCredentials);
        assert_eq!(unknown, wrong);
    }

    #[tokio::test]
    async fn registering_a_taken_name_is_user_exists() {
        let a = auth();
        a.register(n("alice"), "pw".into()).await.unwrap();
        let e = a.register(n("alice"), "other".into()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::UserExists);
    }

    #[tokio::test]
    async fn token_login_needs_no_registration_and_creates_no_password() {
        let a = auth();
        let t = a.jwt().mint(&n("tok"), now_secs() + 60);
        let issued = a.login_token(&t).await.unwrap();
        assert_eq!(issued.user, n("tok"));
        let e = a
            .login_password(n("tok"), "anything".into())
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadCredentials);
    }

    #[tokio::test]
    async fn bad_token_is_unauthorized() {
        let e = auth().login_token("x.y.z").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
    }
}
