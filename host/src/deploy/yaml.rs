//! `deploy --dry-run`: the objects as YAML documents for `kubectl apply -f -`
//! or a GitOps repository.
//!
//! The API key never appears: the key's Secret is left out, and a comment
//! at the top says what the Deployment expects (the Secret's name and key)
//! and how to make it, with `kubectl` or a GitOps tool (sealed-secrets,
//! external-secrets) that keeps the key out of the repository.

use super::{API_KEY_KEY, Rendered};
use anyhow::Context as _;

/// The YAML `kubectl apply -f -` takes, with the header.
pub fn dry_run(rendered: &Rendered, command: &str) -> anyhow::Result<String> {
    let (secret, made_by_us) = &rendered.api_key_secret;
    let ns = &rendered.ownership.namespace;
    let mut out = format!("# Rendered by `{command}`.\n");
    if *made_by_us {
        out.push_str(&format!(
            "# Not printed: the Secret `{secret}` in namespace `{ns}` with the W&B API key under `{API_KEY_KEY}`,\n\
             # which the Deployment reads. Make it before applying, e.g.\n\
             #   kubectl create namespace {ns} --dry-run=client -o yaml | kubectl apply -f -\n\
             #   kubectl -n {ns} create secret generic {secret} --from-literal={API_KEY_KEY}=\"$WANDB_API_KEY\"\n\
             # or with a GitOps secret tool (sealed-secrets, external-secrets) under that name and key.\n"
        ));
    } else {
        out.push_str(&format!(
            "# The Deployment reads the W&B API key from the existing Secret `{secret}` (key `{API_KEY_KEY}`) in namespace `{ns}`.\n"
        ));
    }
    for object in &rendered.objects {
        let doc = serde_saphyr::to_string(object).context("writing the objects as YAML")?;
        out.push_str("---\n");
        out.push_str(&doc);
        if !doc.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}
