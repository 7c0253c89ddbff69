//! Google service-account authentication for Vertex AI, the pure part: reading the key file,
//! the JWT to be signed (RS256), the token request and response, and when a cached token must
//! be renewed. The RSA signature itself is WebCrypto's, in the edge.

use serde::Deserialize;
use serde_json::json;

use crate::support::base64;

pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Tokens are renewed this long before Google says they expire, so none is used stale.
pub const RENEW_BEFORE_MS: i64 = 5 * 60 * 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccount {
    pub client_email: String,
    /// PKCS#8 DER of the private key, for WebCrypto's `importKey("pkcs8", …)`.
    pub private_key_der: Vec<u8>,
    pub token_uri: String,
    pub project_id: Option<String>,
}

#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    token_uri: Option<String>,
    project_id: Option<String>,
}

/// Reads a service-account key file (the JSON Google Cloud hands out). The error names what
/// is wrong without echoing the key.
pub fn parse_service_account(json: &str) -> Result<ServiceAccount, String> {
    let file: KeyFile = serde_json::from_str(json)
        .map_err(|_| "is not a service-account JSON key file".to_string())?;
    if file.kind.as_deref().is_some_and(|k| k != "service_account") {
        return Err("is not a service account key (type must be \"service_account\")".into());
    }
    let client_email = file
        .client_email
        .filter(|e| e.contains('@'))
        .ok_or("has no client_email")?;
    let pem = file.private_key.ok_or("has no private_key")?;
    let private_key_der =
        pem_to_der(&pem, "PRIVATE KEY").ok_or("has a private_key that is not a PKCS#8 PEM key")?;
    let token_uri = file
        .token_uri
        .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_string());
    if !(token_uri.starts_with("https://")
        || token_uri.starts_with("http://127.0.0.1")
        || token_uri.starts_with("http://localhost"))
    {
        return Err("has a token_uri that is not https".into());
    }
    Ok(ServiceAccount {
        client_email,
        private_key_der,
        token_uri,
        project_id: file.project_id,
    })
}

fn pem_to_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = pem[start..].find(&end)? + start;
    // Key files store the PEM with literal "\n" escapes already decoded by JSON; tolerate both.
    let body = pem[start..stop].replace("\\n", "");
    base64::decode(&body).filter(|der| !der.is_empty())
}

/// `base64url(header).base64url(claims)`: what RS256 signs.
pub fn jwt_signing_input(sa: &ServiceAccount, now_s: i64) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT"});
    let claims = json!({
        "iss": sa.client_email,
        "scope": SCOPE,
        "aud": sa.token_uri,
        "iat": now_s,
        "exp": now_s + 3600,
    });
    format!(
        "{}.{}",
        base64::encode_url(header.to_string().as_bytes()),
        base64::encode_url(claims.to_string().as_bytes())
    )
}

pub fn jwt(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", base64::encode_url(signature))
}

/// The form body of the token request (JWT bearer grant, RFC 7523).
pub fn token_request_body(jwt: &str) -> String {
    format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={jwt}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub token: String,
    pub expires_at_ms: i64,
}

impl AccessToken {
    /// Still good for a request starting now.
    pub fn fresh(&self, now_ms: i64) -> bool {
        now_ms < self.expires_at_ms - RENEW_BEFORE_MS
    }
}

pub fn parse_token_response(bytes: &[u8], now_ms: i64) -> Result<AccessToken, String> {
    #[derive(Deserialize)]
    struct Wire {
        access_token: Option<String>,
        expires_in: Option<i64>,
        error: Option<String>,
    }
    let wire: Wire = serde_json::from_slice(bytes)
        .map_err(|_| "token endpoint answered with something that is not JSON".to_string())?;
    match (wire.access_token, wire.error) {
        (Some(token), _) if !token.is_empty() => {
            let expires_in_s = wire.expires_in.unwrap_or(3600).clamp(0, 24 * 3600);
            Ok(AccessToken {
                token,
                expires_at_ms: now_ms + expires_in_s * 1000,
            })
        }
        (_, Some(error)) => Err(format!(
            "token endpoint refused the service account: {error}"
        )),
        _ => Err("token endpoint sent no access_token".into()),
    }
}

/// Vertex AI's host for a region (`global` has no regional prefix).
pub fn vertex_base_url(region: &str) -> String {
    if region == "global" {
        "https://aiplatform.googleapis.com/v1".to_string()
    } else {
        format!("https://{region}-aiplatform.googleapis.com/v1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A syntactically valid PKCS#8 header is all parsing needs; the key is never used here.
    const KEY_FILE: &str = r#"{"type":"service_account","project_id":"p1","client_email":"relay@p1.iam.gserviceaccount.com",
        "private_key":"-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n",
        "token_uri":"https://oauth2.googleapis.com/token"}"#;

    #[test]
    fn reads_a_key_file() {
        let sa = parse_service_account(KEY_FILE).unwrap();
        assert_eq!(sa.client_email, "relay@p1.iam.gserviceaccount.com");
        assert_eq!(sa.project_id.as_deref(), Some("p1"));
        assert_eq!(&sa.private_key_der[..2], &[0x30, 0x82]);
        assert!(parse_service_account("{}").is_err());
        assert!(parse_service_account("not json")
            .unwrap_err()
            .contains("not a service-account"));
        let bad_uri = KEY_FILE.replace(
            "https://oauth2.googleapis.com/token",
            "http://evil.example/token",
        );
        assert!(parse_service_account(&bad_uri).is_err());
        let local = KEY_FILE.replace(
            "https://oauth2.googleapis.com/token",
            "http://127.0.0.1:9/token",
        );
        assert!(parse_service_account(&local).is_ok());
    }

    #[test]
    fn jwt_claims_are_what_google_expects() {
        let sa = parse_service_account(KEY_FILE).unwrap();
        let input = jwt_signing_input(&sa, 1_700_000_000);
        let (header, claims) = input.split_once('.').unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&base64::decode(header).unwrap()).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&base64::decode(claims).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(claims["iss"], sa.client_email);
        assert_eq!(claims["aud"], sa.token_uri);
        assert_eq!(claims["scope"], SCOPE);
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            3600
        );
        let token = jwt(&input, &[1, 2, 3]);
        assert_eq!(token.matches('.').count(), 2);
        assert!(token_request_body(&token).starts_with(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="
        ));
    }

    #[test]
    fn token_responses_and_renewal() {
        let t = parse_token_response(
            br#"{"access_token":"ya29.x","expires_in":3599,"token_type":"Bearer"}"#,
            1000,
        )
        .unwrap();
        assert_eq!(t.expires_at_ms, 1000 + 3_599_000);
        assert!(t.fresh(1000));
        assert!(!t.fresh(t.expires_at_ms - RENEW_BEFORE_MS));
        assert!(parse_token_response(br#"{"error":"invalid_grant"}"#, 0)
            .unwrap_err()
            .contains("invalid_grant"));
        assert!(parse_token_response(b"<html>", 0).is_err());
    }

    #[test]
    fn regional_hosts() {
        assert_eq!(
            vertex_base_url("us-east5"),
            "https://us-east5-aiplatform.googleapis.com/v1"
        );
        assert_eq!(
            vertex_base_url("global"),
            "https://aiplatform.googleapis.com/v1"
        );
    }
}
