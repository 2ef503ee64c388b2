//! Push grants follow the registry (issue 15, item 4): the bundled docker
//! builder may push to the repository the registry plugin gives
//! (`repository-uri`), whatever key of its settings that came from, with no
//! grant written by hand; `plugins list` shows it. Against the engine and
//! the registry of `scripts/services.sh`, with the test plugin
//! `registry-computed` (its repository is computed from its own settings,
//! as ECR's is, and differs from `registry.uri`).

mod common;
use common::Scratch;
use common::docker::services;
use serde_json::json;

/// A config whose `registry.uri` names a registry nobody pushes to, and
/// whose registry plugin computes `<test registry>/<repo>` instead. The
/// builder's entry grants nothing.
fn config(agent: &Scratch, repo: &str) -> std::path::PathBuf {
    let s = services();
    agent.write_config(&format!(
        "queues: [default]\nbuilder:\n  type: docker\n\
         registry:\n  type: computed\n  uri: registry.invalid/not-this-one\n\
         secrets:\n  registry-password: {{ env: TEST_REGISTRY_PASSWORD }}\n\
         plugins:\n  computed:\n    path: {}\n\
         \x20   config: {{ registry: \"{}\", repository: {repo}, username: {}, password-secret: registry-password }}\n\
         \x20   grants:\n      secrets: [registry-password]\n      hosts: [\"http://{}\"]\n",
        common::test_plugin("registry-computed").display(),
        s.registry,
        s.registry_user,
        s.registry,
    ))
}

#[test]
fn a_build_is_pushed_to_the_repository_the_registry_plugin_gives() {
    let agent = Scratch::new();
    let repo = format!("computed-{}", std::process::id());
    let config = config(&agent, &repo);
    let dir = agent.path().join("code");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile.wandb"),
        format!(
            "FROM {}\nCOPY job.sh /job.sh\nENTRYPOINT [\"sh\", \"/job.sh\"]\n",
            services().base_image
        ),
    )
    .unwrap();
    std::fs::write(dir.join("job.sh"), "echo pushed-and-ran\n").unwrap();
    let id = agent.submit(
        "default",
        &json!({"resource": "local-container", "project": "push-grants", "uri": dir.display().to_string()}),
    );
    let out = agent
        .run_cmd(&config)
        .env("TEST_REGISTRY_PASSWORD", &services().registry_password)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let item = agent.item(&id);
    let job_log = agent.run_file(&id, "agent.log");
    assert_eq!(item["state"], "finished", "{item:#}\n{job_log}\n{log}");
    let pushed = format!("{}/{repo}", services().registry);
    assert!(
        job_log.contains(&format!("build: built {pushed}:")),
        "{job_log}"
    );
    assert!(
        agent.run_file(&id, "output.log").contains("pushed-and-ran"),
        "{job_log}"
    );
}

#[test]
fn plugins_list_shows_the_builders_push_grant_from_the_registry_plugin() {
    let agent = Scratch::new();
    let config = config(&agent, "listed");
    let out = agent
        .cmd()
        .args([
            "plugins",
            "list",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ])
        .env("TEST_REGISTRY_PASSWORD", &services().registry_password)
        .output()
        .unwrap();
    common::assert_success(&out);
    let plugins: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let docker = plugins
        .iter()
        .find(|p| p["name"] == "docker")
        .expect("the docker builder is listed");
    let hosts: Vec<&str> = docker["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    let registry = &services().registry;
    let port = registry.rsplit(':').next().unwrap();
    assert!(
        hosts.contains(&format!("http://127.0.0.1:{port}").as_str()),
        "{hosts:?}"
    );
    assert!(
        !hosts.iter().any(|h| h.contains("registry.invalid")),
        "registry.uri is not where the builder pushes: {hosts:?}"
    );
}
