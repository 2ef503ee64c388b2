//! The RS256 JWT of Google's service-account flow (RFC 7523 §2.1, as
//! `google-auth` builds it): `iss` = the key's `client_email`, `aud` = the
//! token endpoint, `scope`, `iat`, `exp` one hour later, signed with the
//! key's PKCS#8 private key.

use base64::Engine as _;
use rsa::PrivateKey as RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha2::Sha256;

/// The scope asked for: all of Google Cloud, as gcloud and W&B's client do.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The signed assertion for `client_email` at `audience`, issued at `now`.
/// The error says what is wrong with the key, never the key.
pub fn assertion(
    private_key_pem: &str,
    client_email: &str,
    audience: &str,
    now: u64,
) -> Result<String, String> {
    let key = RsaPrivateKey::from_pkcs8_pem(private_key_pem)
        .map_err(|e| format!("its private_key is not a PKCS#8 RSA key in PEM ({e})"))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": client_email,
        "scope": SCOPE,
        "aud": audience,
        "iat": now,
        "exp": now + 3600,
    });
    let claims = b64.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let signature = SigningKey::<Sha256>::new(key).sign(signing_input.as_bytes());
    Ok(format!(
        "{signing_input}.{}",
        b64.encode(signature.to_bytes())
    ))
}
