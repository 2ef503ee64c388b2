//! The AWS stand-ins `scripts/services-moto.sh start` brings up (moto for
//! STS/IAM/ECR's API with SigV4 checked, and a registry behind ECR's
//! token), as the tests see them. A test that needs them fails with a
//! message saying to start them, never skips.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// What `scripts/services-moto.sh start` wrote.
#[derive(Clone, Debug)]
pub struct Moto {
    /// `http://127.0.0.1:PORT`: STS, IAM and ECR's API.
    pub url: String,
    /// The IAM user's access key.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// Temporary credentials of role `launch-role` (STS `AssumeRole`):
    /// key id, secret, session token.
    pub session: (String, String, String),
    /// The account (`123456789012`).
    pub account: String,
    /// The region (`us-east-1`).
    pub region: String,
    /// `127.0.0.1:PORT` of the registry that takes ECR's token.
    pub ecr_registry: String,
    /// The file with one line per `GetAuthorizationToken`.
    pub token_count_file: PathBuf,
}

impl Moto {
    /// How many `GetAuthorizationToken` calls moto has answered.
    pub fn token_count(&self) -> usize {
        std::fs::read_to_string(&self.token_count_file)
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// The registry URI of the repository `launch`, as W&B writes it.
    pub fn ecr_uri(&self) -> String {
        format!(
            "{}.dkr.ecr.{}.amazonaws.com/launch",
            self.account, self.region
        )
    }
}

/// The stand-ins, read once; panics (saying what to do) when they are not up.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let path = super::services_env::path("LAUNCH_AGENT_MOTO_ENV", "launch-agent-moto.env");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}): these tests need the AWS stand-ins; run \
                 `scripts/services-moto.sh start` first (scripts/test.sh does)",
                path.display()
            )
        });
        let values: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |key: &str| {
            values
                .get(key)
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| panic!("{} has no {key}", path.display()))
                .to_string()
        };
        Moto {
            url: get("LAUNCH_AGENT_MOTO_URL"),
            access_key_id: get("LAUNCH_AGENT_MOTO_ACCESS_KEY_ID"),
            secret_access_key: get("LAUNCH_AGENT_MOTO_SECRET_ACCESS_KEY"),
            session: (
                get("LAUNCH_AGENT_MOTO_SESSION_KEY_ID"),
                get("LAUNCH_AGENT_MOTO_SESSION_SECRET"),
                get("LAUNCH_AGENT_MOTO_SESSION_TOKEN"),
            ),
            account: get("LAUNCH_AGENT_MOTO_ACCOUNT"),
            region: get("LAUNCH_AGENT_MOTO_REGION"),
            ecr_registry: get("LAUNCH_AGENT_ECR_REGISTRY"),
            token_count_file: PathBuf::from(get("LAUNCH_AGENT_MOTO_ECR_TOKEN_COUNT")),
        }
    })
}
