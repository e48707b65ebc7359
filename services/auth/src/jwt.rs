//! HS256 JWTs: claims `sub` (user name) and `exp` (unix seconds). Any party
//! holding the secret may mint them (an app backend, a load generator).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};

use dialtone_proto::Name;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
}

/// Why a token was refused. All map to `unauthorized` / HTTP 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("token invalid: {0}")]
    Invalid(String),
    #[error("token subject is not a valid user name")]
    BadSubject,
}

/// Signs and verifies tokens with one secret.
#[derive(Clone)]
pub struct Jwt {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Jwt {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // PROTOCOL.md: an expired token is refused; no grace period.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Jwt {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Mints a token for `user` expiring at `exp` (unix seconds).
    pub fn mint(&self, user: &Name, exp: u64) -> String {
        let claims = Claims {
            sub: user.as_str().to_owned(),
            exp,
        };
        // HMAC signing of a serialisable struct has no failure mode.
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    /// Verifies signature, algorithm and expiry; returns the user.
    ///
    /// # Errors
    /// [`TokenError`] for a bad signature, an expired token, a malformed one
    /// or a subject that breaks the name rules.
    pub fn verify(&self, token: &str) -> Result<(Name, u64), TokenError> {
        let data =
            decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| {
                match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                    kind => TokenError::Invalid(format!("{kind:?}")),
                }
            })?;
        let user = Name::parse(&data.claims.sub).map_err(|_| TokenError::BadSubject)?;
        Ok((user, data.claims.exp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    #[test]
    fn minted_token_verifies_to_its_user() {
        let jwt = Jwt::new(b"s3cret");
        let alice = Name::parse("alice").unwrap();
        let t = jwt.mint(&alice, now() + 60);
        assert_eq!(jwt.verify(&t).unwrap().0, alice);
    }

    #[test]
    fn expired_token_is_refused() {
        let jwt = Jwt::new(b"s3cret");
        let t = jwt.mint(&Name::parse("a").unwrap(), now() - 1);
        assert_eq!(jwt.verify(&t), Err(TokenError::Expired));
    }

    #[test]
    fn token_signed_with_another_secret_is_refused() {
        let t = Jwt::new(b"other").mint(&Name::parse("a").unwrap(), now() + 60);
        assert!(matches!(
            Jwt::new(b"s3cret").verify(&t),
            Err(TokenError::Invalid(_))
        ));
    }

    #[test]
    fn garbage_and_bad_subjects_are_refused() {
        let jwt = Jwt::new(b"k");
        assert!(jwt.verify("not.a.jwt").is_err());
        assert!(jwt.verify("").is_err());
        let bad_sub = encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "no spaces allowed".into(),
                exp: now() + 60,
            },
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(jwt.verify(&bad_sub), Err(TokenError::BadSubject));
    }

    #[test]
    fn token_without_exp_is_refused() {
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let t = encode(
            &Header::new(Algorithm::HS256),
            &NoExp { sub: "a".into() },
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert!(Jwt::new(b"k").verify(&t).is_err());
    }
}
