//! A hostile builder, for the host's tests: given the registry password as
//! a secret handle (which it may only pass on to `docker.push`), it misuses
//! it as its settings (the `builder:` block) order, and reports what
//! happened in its error, so a test can show the host refused and nothing
//! leaked:
//!
//! | `mode` | other keys | does | result |
//! |---|---|---|---|
//! | `reveal` (the default) | | reads the password | Err `LEAKED <value>` or `reveal refused: ...` |
//! | `push` | `image` | pushes `image` (any registry, any repository) with the handle | Err `push <image>: ok`, or `push <image>: denied=<bool> unauthorized=<bool>: <message>` |
//! | `tag-poison` | `tag` | builds the plan's Dockerfile tagged with the planned image and `tag` (another job's image) | Ok, or Err `tag-poison: <docker error>` |
//! | `build-network` | | builds the plan's Dockerfile (the test's, e.g. `RUN ls /sys/class/net`) tagged with the planned image | Ok, or Err `build-network: <docker error>` |
//! | `probe` | `image` | asks `image-exists` about `image` | Err `probe: <answer or docker error>` |
//! | `build-flood` | `count`, `tags` | builds the plan's Dockerfile `count` times, each tagged with the planned image and `tags` more tags in its repository | Err `build-flood: <n> built[, then: <docker error>]` |
//! | `blob` | `op` (`upload`, `delete`, `exists`), `url`, `dockerfile` | calls `blob.upload-context` (with `dockerfile`, or the plan's), `.delete` or `.exists-store` on `url` | Err `blob <op> <url>: ok[ bytes=<n> sha256=<hex>]` or `blob <op> <url>: denied=<bool> missing=<bool>: <message>` |
//! | `dockerfile` | `dockerfile`, `args` (an object), `platform` | builds `dockerfile` (base images, `COPY --from`, `ADD <url>`, `# syntax=` of its choosing) with those build arguments, tagged with the planned image | Ok, or Err `dockerfile: <docker error>` |
//! | `post-form` | `lent-origin`, `url` | asks the environment's token for `lent-origin` (`lent.bearer-token`) and has the host post it as the form field `access_token` to `url` (`lent.post-form`, asking for `refresh_token` back) | Err `post-form <url>: status=<n> secrets=<n>` or `post-form <url>: refused: <error>` |

use launch_plugin_sdk::builder::docker;
use launch_plugin_sdk::builder::{BuildOutcome, BuildPlan, BuildRequest, Builder};
use launch_plugin_sdk::{Plugin, PluginError, PluginInfo, Secret};

/// The plugin.
struct HostileBuilder;

impl Plugin for HostileBuilder {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "hostile-builder".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Tries to read the registry password it was handed".into(),
        }
    }
}

impl Builder for HostileBuilder {
    fn plan(request: BuildRequest) -> Result<BuildPlan, PluginError> {
        Ok(BuildPlan {
            image_uri: format!("hostile/{}:latest", request.job.id),
            dockerfile: "FROM scratch\n".into(),
            dockerfile_origin: "generated".into(),
        })
    }

    fn build(
        request: BuildRequest,
        plan: BuildPlan,
        username: Option<String>,
        password: Option<&Secret>,
    ) -> Result<BuildOutcome, PluginError> {
        let settings: serde_json::Value =
            serde_json::from_str(&request.settings).unwrap_or_default();
        let text = |key: &str| settings.get(key).and_then(|v| v.as_str()).unwrap_or("");
        let build_args: Vec<(String, String)> = settings
            .get("args")
            .and_then(|a| a.as_object())
            .map(|args| {
                args.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let dockerfile = match text("mode") {
            "dockerfile" => text("dockerfile").to_string(),
            _ => plan.dockerfile.clone(),
        };
        let platform = Some(text("platform").to_string()).filter(|p| !p.is_empty());
        let build_with = |mode: &str, mut tags: Vec<String>| {
            tags.insert(0, plan.image_uri.clone());
            let spec = docker::BuildSpec {
                dockerfile: dockerfile.clone(),
                tags,
                platform: platform.clone(),
                build_args: build_args.clone(),
            };
            docker::build(&spec)
                .map(|_| BuildOutcome {
                    image_uri: plan.image_uri.clone(),
                    built: true,
                })
                .map_err(|e| PluginError::build(format!("{mode}: {}", e.message)))
        };
        match text("mode") {
            "tag-poison" => return build_with("tag-poison", vec![text("tag").to_string()]),
            "build-network" => return build_with("build-network", Vec::new()),
            "dockerfile" => return build_with("dockerfile", Vec::new()),
            "build-flood" => {
                let number = |key: &str| settings.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
                let repository = plan
                    .image_uri
                    .rsplit_once(':')
                    .map_or(plan.image_uri.as_str(), |(repo, _)| repo);
                let tags: Vec<String> = (0..number("tags"))
                    .map(|i| format!("{repository}:flood-{i}"))
                    .collect();
                let mut built = 0;
                for _ in 0..number("count") {
                    if let Err(e) = build_with("build-flood", tags.clone()) {
                        return Err(PluginError::build(format!(
                            "build-flood: {built} built, then: {}",
                            e.message
                        )));
                    }
                    built += 1;
                }
                return Err(PluginError::build(format!("build-flood: {built} built")));
            }
            "blob" => {
                use launch_plugin_sdk::builder::blob;
                let url = text("url");
                let said = match text("op") {
                    "upload" => {
                        let dockerfile = match text("dockerfile") {
                            "" => plan.dockerfile.as_str(),
                            d => d,
                        };
                        blob::upload_context(dockerfile, url)
                            .map(|u| format!("ok bytes={} sha256={}", u.bytes, u.sha256))
                    }
                    "delete" => blob::delete(url).map(|()| "ok".to_string()),
                    _ => blob::exists_store(url).map(|()| "ok".to_string()),
                };
                return Err(PluginError::build(format!(
                    "blob {} {url}: {}",
                    text("op"),
                    said.unwrap_or_else(|e| format!(
                        "denied={} missing={}: {}",
                        e.denied, e.missing, e.message
                    ))
                )));
            }
            "post-form" => {
                use launch_plugin_sdk::builder::lent;
                let url = text("url");
                let said = lent::bearer_token(text("lent-origin"))
                    .and_then(|token| {
                        lent::post_form(
                            url,
                            vec![("access_token".into(), lent::FormValue::Secret(token))],
                            &["refresh_token".to_string()],
                        )
                    })
                    .map(|answer| {
                        format!("status={} secrets={}", answer.status, answer.secrets.len())
                    })
                    .unwrap_or_else(|e| format!("refused: {e:?}"));
                return Err(PluginError::build(format!("post-form {url}: {said}")));
            }
            "probe" => {
                let answer = docker::image_exists(text("image"));
                return Err(PluginError::build(match answer {
                    Ok(found) => format!("probe: answered {found}"),
                    Err(e) => format!("probe: {}", e.message),
                }));
            }
            _ => {}
        }
        let Some(password) = password else {
            return Err(PluginError::build(
                "no password was handed over".to_string(),
            ));
        };
        if text("mode") == "push" {
            let image = text("image");
            let said = match docker::push(image, username.as_deref(), Some(password)) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!(
                    "denied={} unauthorized={}: {}",
                    e.denied, e.unauthorized, e.message
                ),
            };
            return Err(PluginError::build(format!("push {image}: {said}")));
        }
        match password.reveal() {
            // A leak: the test looks for the value in this message.
            Ok(value) => Err(PluginError::build(format!("LEAKED {value}"))),
            Err(e) => Err(PluginError::build(format!("reveal refused: {e:?}"))),
        }
    }
}

launch_plugin_sdk::export_builder!(HostileBuilder);
