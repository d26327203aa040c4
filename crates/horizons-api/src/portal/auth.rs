//! Bearer tokens: HS256 JWTs carrying the user name (`sub`), a role and an e-mail address.
//!
//! The secret comes from configuration (`auth.jwt_secret`) or, on a fresh machine, from a
//! random key generated once into the data dir, so `horizons up` is secure by default and
//! `horizons token` signs with the same key. Missing or invalid tokens answer 401; a valid
//! token with too small a role answers 403.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use horizons_comments::{Actor, Role};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::state::ApiState;

/// What a token says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User name.
    pub sub: String,
    /// `user`, `moderator` or `admin`.
    pub role: Role,
    /// Where notification e-mail goes.
    pub email: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
}

/// Signs and checks tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(..)")
    }
}

/// Longest user name accepted in a token.
pub const MAX_NAME: usize = 64;

impl TokenKeys {
    /// Keys from a shared secret (at least 32 bytes).
    pub fn new(secret: &[u8]) -> Result<Self, String> {
        if secret.len() < 32 {
            return Err(format!("the JWT secret has {} bytes; at least 32 are needed", secret.len()));
        }
        Ok(Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret) })
    }

    /// A token for `name` with `role`, valid for `ttl`.
    pub fn issue(&self, name: &str, role: Role, email: &str, ttl: std::time::Duration) -> Result<String, String> {
        check_name(name)?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let claims = Claims { sub: name.into(), role, email: email.into(), iat: now, exp: now + ttl.as_secs() };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|e| e.to_string())
    }

    /// The claims of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 5;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| e.to_string())?.claims;
        check_name(&claims.sub)?;
        Ok(claims)
    }
}

/// User names: 1–64 of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!("user name {name:?}: 1-{MAX_NAME} of letters, digits, '.', '_', '-'"))
    }
}

/// The one route that also takes its token from the query string.
pub const SSE_PATH: &str = "/api/notifications/stream";

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("access_token=")).filter(|t| !t.is_empty())
}

/// The authenticated caller of a route.
#[derive(Clone, Debug)]
pub struct Caller(pub Actor);

impl Caller {
    /// Fails with 403 unless the caller is an admin; `what` says what needs it.
    pub fn admin(&self, what: &str) -> Result<&Actor, ApiError> {
        if self.0.role == Role::Admin {
            Ok(&self.0)
        } else {
            Err(ApiError::Forbidden(format!("role {} may not {what}; admin needed", self.0.role.as_str())))
        }
    }

    /// Fails with 403 unless the caller moderates.
    pub fn moderator(&self) -> Result<&Actor, ApiError> {
        if self.0.role.moderates() {
            Ok(&self.0)
        } else {
            Err(ApiError::Forbidden(format!(
                "role {} may not do this; moderator or admin needed",
                self.0.role.as_str()
            )))
        }
    }
}

#[axum::async_trait]
impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let portal = state.portal.as_ref().ok_or_else(|| ApiError::Internal("portal not configured".into()))?;
        let token = match parts.headers.get(axum::http::header::AUTHORIZATION) {
            Some(header) => header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
                .ok_or_else(|| ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()))?,
            // A browser's EventSource cannot send headers: the stream also takes the token as
            // `?access_token=` (query strings are never logged here).
            None if parts.uri.path() == SSE_PATH => query_token(parts.uri.query())
                .ok_or_else(|| ApiError::Unauthorized("missing bearer token (header or ?access_token=)".into()))?,
            None => return Err(ApiError::Unauthorized("missing bearer token".into())),
        };
        let claims =
            portal.keys.verify(token.trim()).map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))?;
        let ip = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string());
        Ok(Caller(Actor { name: claims.sub, role: claims.role, email: claims.email, ip }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_tampering() {
        let keys = TokenKeys::new(&[7; 32]).unwrap();
        let t = keys.issue("alice", Role::Moderator, "a@example.org", std::time::Duration::from_secs(60)).unwrap();
        let c = keys.verify(&t).unwrap();
        assert_eq!((c.sub.as_str(), c.role), ("alice", Role::Moderator));
        let other = TokenKeys::new(&[8; 32]).unwrap();
        assert!(other.verify(&t).is_err());
        let mut bad = t.clone();
        bad.pop();
        assert!(keys.verify(&bad).is_err());
        assert!(TokenKeys::new(b"short").is_err());
        assert!(keys.issue("bad name", Role::User, "", std::time::Duration::from_secs(1)).is_err());
    }
}
