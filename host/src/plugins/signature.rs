//! cosign-compatible signatures of plugin artifacts: checked before a
//! pulled plugin is cached or compiled ([`super::oci_source`]), made by
//! `plugins push --sign`.
//!
//! The format is cosign's own ("simple signing", as `cosign sign --key`
//! stores it), so a plugin signed with `cosign` verifies here and one signed
//! here verifies with `cosign verify --key`:
//!
//! | piece | what it is |
//! |---|---|
//! | where | tag `sha256-<hex of the artifact's manifest digest>.sig` in the artifact's repository |
//! | payload | a layer of media type `application/vnd.dev.cosign.simplesigning.v1+json`: `{"critical": {"identity": {"docker-reference": REPO}, "image": {"docker-manifest-digest": DIGEST}, "type": "cosign container image signature"}, "optional": null}` |
//! | signature | ECDSA P-256 with SHA-256 over the payload bytes, ASN.1 DER, base64, in the layer's annotation `dev.cosignproject.cosign/signature` |
//! | keys | the public key as PEM (`cosign.pub`); a signing key as unencrypted PKCS#8 PEM (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`) — cosign's own encrypted `cosign.key` is not read |
//!
//! A signature counts only when it verifies with the configured key **and**
//! its payload names the very manifest digest being loaded, so a signature
//! of another plugin (or another version) copied beside this one does not.
//! Keyless signing (Fulcio certificates, a Rekor transparency log) needs
//! those services on the internet and is not supported yet.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The media type of a cosign simple-signing payload layer.
pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The largest payload read.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// The `critical.type` of a cosign image signature.
const SIGNATURE_TYPE: &str = "cosign container image signature";

/// cosign's tag for the signatures of `digest` (`sha256:abc` → `sha256-abc.sig`).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

/// The simple-signing payload for the artifact `identity` (`REGISTRY/REPO`)
/// with manifest `digest`.
pub fn payload(identity: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": identity},
            "image": {"docker-manifest-digest": digest},
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    }))
    .expect("a JSON value serialises")
}

/// One signature as found in the registry: the payload and its signature.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignatureRecord {
    /// The payload bytes, base64.
    payload: String,
    /// The signature, base64 DER, as the annotation holds it.
    signature: String,
}

impl SignatureRecord {
    /// A record of `payload` signed by `signature` (base64, as annotated).
    pub fn new(payload: &[u8], signature: &str) -> Self {
        SignatureRecord {
            payload: BASE64.encode(payload),
            signature: signature.to_string(),
        }
    }

    /// Checks this signature with `key`, and that its payload signs
    /// `manifest_digest`.
    fn verify(&self, key: &PublicKey, manifest_digest: &str) -> Result<(), String> {
        let payload = BASE64
            .decode(&self.payload)
            .map_err(|_| "a payload is not base64".to_string())?;
        let der = BASE64
            .decode(self.signature.trim())
            .map_err(|_| "a signature is not base64".to_string())?;
        let signature = p256::ecdsa::Signature::from_der(&der)
            .map_err(|_| "a signature is not an ECDSA P-256 signature (ASN.1 DER)".to_string())?;
        key.0
            .verify(&payload, &signature)
            .map_err(|_| "the signature does not verify with this key".to_string())?;
        let payload: serde_json::Value = serde_json::from_slice(&payload)
            .map_err(|_| "a signed payload is not JSON".to_string())?;
        let critical = &payload["critical"];
        if critical["type"] != SIGNATURE_TYPE {
            return Err("a signed payload is not a cosign image signature".into());
        }
        let signed = critical["image"]["docker-manifest-digest"]
            .as_str()
            .unwrap_or("");
        if signed != manifest_digest {
            return Err(format!(
                "the signature is for {signed:?}, not this artifact's digest {manifest_digest}"
            ));
        }
        Ok(())
    }
}

/// Passes when any of `records` is a valid signature by `key` of
/// `manifest_digest`; otherwise says why each failed.
pub fn verify_any(
    records: &[SignatureRecord],
    key: &PublicKey,
    manifest_digest: &str,
) -> Result<(), String> {
    let mut reasons = Vec::new();
    for record in records {
        match record.verify(key, manifest_digest) {
            Ok(()) => return Ok(()),
            Err(reason) => {
                if !reasons.contains(&reason) {
                    reasons.push(reason)
                }
            }
        }
    }
    if reasons.is_empty() {
        return Err("it has no signature".into());
    }
    Err(reasons.join("; "))
}

/// A public key to verify with (ECDSA P-256).
pub struct PublicKey(p256::ecdsa::VerifyingKey);

impl PublicKey {
    /// Reads a PEM public key (`-----BEGIN PUBLIC KEY-----`, as `cosign.pub`).
    pub fn read(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the public key {}: {e}", path.display()))?;
        Self::from_pem(&pem).map_err(|e| format!("the public key {}: {e}", path.display()))
    }

    /// Parses a PEM public key.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        p256::ecdsa::VerifyingKey::from_public_key_pem(pem.trim())
            .map(PublicKey)
            .map_err(|_| "not an ECDSA P-256 public key in PEM (`BEGIN PUBLIC KEY`)".to_string())
    }
}

/// A signing key (ECDSA P-256, unencrypted PKCS#8 PEM).
pub struct SigningKey(p256::ecdsa::SigningKey);

impl SigningKey {
    /// Reads a PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub fn read(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the signing key {}: {e}", path.display()))?;
        p256::ecdsa::SigningKey::from_pkcs8_pem(pem.trim())
            .map(SigningKey)
            .map_err(|_| {
                format!(
                    "the signing key {} is not an unencrypted ECDSA P-256 key in PKCS#8 PEM \
                     (`BEGIN PRIVATE KEY`; cosign's encrypted `cosign.key` is not read)",
                    path.display()
                )
            })
    }

    /// Signs `payload`: base64 of the ASN.1 DER signature, as cosign
    /// annotates it.
    pub fn sign(&self, payload: &[u8]) -> String {
        let signature: p256::ecdsa::Signature = self.0.sign(payload);
        BASE64.encode(signature.to_der().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pair(seed: u8) -> (SigningKey, PublicKey) {
        let secret = p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap();
        let public = PublicKey(*secret.verifying_key());
        (SigningKey(secret), public)
    }

    const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
    const OTHER: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000002";

    #[test]
    fn a_signature_verifies_with_its_key_for_its_digest_only() {
        let (signing, public) = key_pair(7);
        let (_, stranger) = key_pair(9);
        let body = payload("r.example/plugins/x", DIGEST);
        let record = SignatureRecord::new(&body, &signing.sign(&body));
        assert!(verify_any(std::slice::from_ref(&record), &public, DIGEST).is_ok());
        let err = verify_any(std::slice::from_ref(&record), &stranger, DIGEST).unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        let err = verify_any(std::slice::from_ref(&record), &public, OTHER).unwrap_err();
        assert!(err.contains("not this artifact's digest"), "{err}");
    }

    #[test]
    fn a_tampered_payload_does_not_verify() {
        let (signing, public) = key_pair(7);
        let body = payload("r.example/plugins/x", OTHER);
        let signature = signing.sign(&body);
        let forged = payload("r.example/plugins/x", DIGEST);
        let record = SignatureRecord::new(&forged, &signature);
        assert!(verify_any(&[record], &public, DIGEST).is_err());
    }

    #[test]
    fn no_signature_is_an_error_that_says_so() {
        let (_, public) = key_pair(7);
        assert_eq!(
            verify_any(&[], &public, DIGEST).unwrap_err(),
            "it has no signature"
        );
    }
}
