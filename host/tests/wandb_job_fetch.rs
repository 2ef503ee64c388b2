//! The W&B job-artifact source (`JobArtifacts::fetch`) against the fake W&B server of
//! `tests/wandb_fake/` (started per test on 127.0.0.1, killed by its PID at
//! the end), with a code job created by the REAL `wandb` client
//! (`create_job_with_wandb.sh`, which needs the venv of
//! `tests/wandb_fake/setup.sh`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::wandb_fake::{FakeWandbServer, fake_dir, wandb_venv};
use launch_agent::sources::JobArtifacts;
use launch_agent::wandb::{Client, RetryPolicy};
use serde_json::{Value, json};

const ENTITY: &str = "team";
const PROJECT: &str = "proj";

/// A 40-character key, as W&B's are.
fn api_key() -> String {
    "j0bk".repeat(10)
}

/// The fake server, killed when dropped.
struct Fake(FakeWandbServer);

impl std::ops::Deref for Fake {
    type Target = FakeWandbServer;
    fn deref(&self) -> &FakeWandbServer {
        &self.0
    }
}

impl Fake {
    fn start() -> Fake {
        Fake(FakeWandbServer::start(&api_key(), ENTITY, &[]))
    }

    /// Creates a code job `name` from `code_dir` with the real client.
    fn create_job(&self, name: &str, code_dir: &Path, entry_point: &str) {
        let code_dir = code_dir.to_str().unwrap();
        self.run_script(
            "create_job_with_wandb.sh",
            name,
            &["--code-dir", code_dir, "--entry-point", entry_point],
        );
    }

    /// Logs job artifact `name` made of `files` with the real client, as a
    /// run that saves a job does.
    fn log_job(&self, name: &str, files: &[&Path]) {
        let files: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
        self.run_script("log_job_with_wandb.sh", name, &files);
    }

    /// Runs `script` of `tests/wandb_fake/` against this fake for job
    /// `name` of [`ENTITY`]/[`PROJECT`], with `args`.
    fn run_script(&self, script: &str, name: &str, args: &[&str]) {
        let output = Command::new("bash")
            .arg(fake_dir().join(script))
            .args(["--port", &self.port.to_string(), "--api-key", &api_key()])
            .args(["--entity", ENTITY, "--project", PROJECT, "--name", name])
            .args(args)
            .env("LAUNCH_AGENT_WANDB_VENV", wandb_venv())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("bash runs {script}: {e}"));
        assert!(
            output.status.success(),
            "{script} failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// The job-artifact source with a W&B API client of `fake`.
fn job_artifacts(fake: &Fake) -> JobArtifacts {
    let api = fake.api_settings(
        &api_key(),
        RetryPolicy {
            retries: 2,
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(100),
        },
    );
    JobArtifacts::new(Client::new(&api).unwrap())
}

/// A code directory with `train.py` and a nested file.
fn code_dir(root: &Path) -> PathBuf {
    let code = root.join("code");
    std::fs::create_dir_all(code.join("pkg/data")).unwrap();
    std::fs::write(code.join("train.py"), "import pkg.util\nprint('train')\n").unwrap();
    std::fs::write(code.join("pkg/util.py"), "X = 1\n").unwrap();
    std::fs::write(code.join("pkg/data/blob.bin"), [0u8, 1, 2, 255, 254, 10]).unwrap();
    code
}

#[tokio::test]
async fn a_code_job_is_fetched_byte_for_byte() {
    let fake = Fake::start();
    let root = tempfile::tempdir().unwrap();
    let code = code_dir(root.path());
    fake.create_job("my-job", &code, "python train.py --epochs 2");
    let jobs = job_artifacts(&fake);

    let dest = root.path().join("dest");
    let fetched = jobs
        .fetch(&format!("{ENTITY}/{PROJECT}/my-job:latest"), &dest)
        .await
        .unwrap();
    assert_eq!(fetched.source_id, format!("{ENTITY}/{PROJECT}/my-job:v0"));
    assert!(fetched.source_id.ends_with(":v0"));
    assert_eq!(fetched.source_type, "artifact");
    assert_eq!(fetched.dir.as_deref(), Some(dest.as_path()));
    assert_eq!(fetched.git, None);
    assert_eq!(fetched.image, None);
    assert_eq!(
        fetched.entrypoint,
        ["python", "train.py", "--epochs", "2"].map(String::from)
    );
    for file in ["train.py", "pkg/util.py", "pkg/data/blob.bin"] {
        assert_eq!(
            std::fs::read(dest.join(file)).unwrap(),
            std::fs::read(code.join(file)).unwrap(),
            "{file}"
        );
    }
    assert!(dest.join("requirements.frozen.txt").is_file());

    // The same job by version, and without an alias (`latest`).
    for name in ["my-job:v0", "my-job"] {
        let again = root
            .path()
            .join(format!("again-{}", name.replace(':', "-")));
        let fetched = jobs
            .fetch(&format!("{ENTITY}/{PROJECT}/{name}"), &again)
            .await
            .unwrap();
        assert_eq!(fetched.source_id, format!("{ENTITY}/{PROJECT}/my-job:v0"));
        assert!(again.join("pkg/util.py").is_file());
    }

    // The fetch made the calls the W&B agent makes, and the files came
    // from the direct (pre-signed) URLs, not the authenticated fallback.
    let events = fake.events();
    let operations: Vec<&str> = events
        .iter()
        .filter_map(|e| e["operation"].as_str())
        .collect();
    for operation in [
        "ArtifactMembershipByName",
        "FetchArtifactManifest",
        "GetArtifactMembershipFileUrls",
        "ArtifactByID",
    ] {
        assert!(
            operations.contains(&operation),
            "{operation}: {operations:?}"
        );
    }
    assert!(
        !events.iter().any(|e| e["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/artifactsV2/"))),
        "the fallback path was used"
    );
}

#[tokio::test]
async fn unknown_jobs_bad_names_and_wrong_types_are_clear_errors() {
    let fake = Fake::start();
    let root = tempfile::tempdir().unwrap();
    fake.create_job("my-job", &code_dir(root.path()), "python train.py");
    let jobs = job_artifacts(&fake);
    let dest = root.path().join("dest");

    let cases = [
        (
            format!("{ENTITY}/{PROJECT}/no-such-job:latest"),
            "no-such-job",
        ),
        (format!("{ENTITY}/{PROJECT}/my-job:v7"), "my-job:v7"),
        (
            format!("{ENTITY}/no-such-project/my-job:latest"),
            "no-such-project",
        ),
        (
            format!("{ENTITY}/{PROJECT}/code-my-job:latest"),
            "not \"job\"",
        ),
        ("just-a-name:latest".to_string(), "is not valid"),
        (format!("{ENTITY}/{PROJECT}/:latest"), "is not valid"),
    ];
    for (job, expected) in cases {
        let error = jobs.fetch(&job, &dest).await.unwrap_err().to_string();
        assert!(error.contains(&job), "{job}: {error}");
        assert!(error.contains(expected), "{job}: {error}");
        assert!(!error.contains(&api_key()), "{error}");
    }
    assert!(!dest.join("train.py").exists());
}

#[tokio::test]
async fn files_that_do_not_match_the_manifest_are_refused() {
    let fake = Fake::start();
    let root = tempfile::tempdir().unwrap();
    fake.create_job("my-job", &code_dir(root.path()), "python train.py");
    let jobs = job_artifacts(&fake);

    // The fake checks the MD5 of stored file bytes and derives each file's
    // storage key from the manifest, so storage that serves other bytes is
    // staged by replacing the code artifact's manifest (uploaded first)
    // and storing the other bytes where it points.
    let manifest_path = fake
        .events()
        .iter()
        .filter_map(|e| e["path"].as_str())
        .find(|p| p.starts_with("/_fake/storage/wandb_manifests/"))
        .expect("the code artifact's manifest upload")
        .to_string();
    let (status, body) = fake.request("GET", &manifest_path, b"");
    assert_eq!(status, 200);
    let original: Value = serde_json::from_slice(&body).unwrap();
    let size = original["contents"]["train.py"]["size"].as_u64().unwrap();
    let job = format!("{ENTITY}/{PROJECT}/my-job:latest");

    // 1. Other bytes of another size (stored under their own MD5).
    // 2. Other bytes of the same size under a digest they do not have (a
    //    17-byte "digest": the fake stores such keys unchecked).
    let same_size = vec![b'#'; usize::try_from(size).unwrap()];
    let cases: [(&str, &str, &[u8], &str); 2] = [
        (
            "B7IYuSQSDUmnJcNrBlVgAA==",
            "07b218b924120d49a725c36b06556000",
            b"tampered",
            "the manifest says",
        ),
        (
            "AAECAwQFBgcICQoLDA0ODxA=",
            "000102030405060708090a0b0c0d0e0f10",
            &same_size,
            "does not match the manifest",
        ),
    ];
    for (digest, hex, bytes, expected) in cases {
        let (status, _) = fake.request(
            "PUT",
            &format!("/_fake/storage/wandb_artifacts/{hex}"),
            bytes,
        );
        let mut manifest = original.clone();
        manifest["contents"]["train.py"]["digest"] = json!(digest);
        let (put, _) = fake.request("PUT", &manifest_path, manifest.to_string().as_bytes());
        if status != 200 || put != 200 {
            eprintln!("the fake does not let storage be replaced ({status}, {put}); skipped");
            return;
        }
        let dest = root.path().join(format!("dest-{hex}"));
        let error = jobs.fetch(&job, &dest).await.unwrap_err().to_string();
        assert!(error.contains("train.py"), "{error}");
        assert!(error.contains(expected), "{error}");
        assert!(error.contains("refused"), "{error}");
        assert!(!error.contains(&api_key()), "{error}");
        assert!(!dest.join("train.py").exists());
    }
}

/// Runs git in `dir` with a throw-away identity; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A repository with `train.sh` committed, and what a run of it saved for a
/// repo job: `wandb-job.json`, `requirements.frozen.txt` and, as
/// `diff.patch`, the run's uncommitted change to `train.sh` (or `patch`
/// instead, when given). The files and the commit.
fn repo_job_files(root: &Path, patch: Option<&str>) -> (Vec<PathBuf>, String) {
    let repo = root.join("repo");
    std::fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "--quiet"]);
    std::fs::write(repo.join("train.sh"), "echo lr=0.1\n").unwrap();
    git(&repo, &["add", "train.sh"]);
    git(&repo, &["commit", "--quiet", "-m", "first"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    std::fs::write(repo.join("train.sh"), "echo lr=0.01\n").unwrap();
    let diff = git(&repo, &["diff"]);
    git(&repo, &["checkout", "--quiet", "train.sh"]);
    let saved = root.join("saved");
    std::fs::create_dir(&saved).unwrap();
    std::fs::write(saved.join("diff.patch"), patch.unwrap_or(&diff)).unwrap();
    std::fs::write(saved.join("requirements.frozen.txt"), "numpy==2.1.0\n").unwrap();
    let job_json = json!({
        "_version": "v0",
        "source_type": "repo",
        "source": {
            "git": {"remote": repo.display().to_string(), "commit": commit},
            "entrypoint": ["sh", "train.sh"],
            "notebook": false,
        },
        "input_types": {},
        "output_types": {},
        "runtime": "3.11",
    });
    std::fs::write(saved.join("wandb-job.json"), job_json.to_string()).unwrap();
    let files = ["wandb-job.json", "diff.patch", "requirements.frozen.txt"]
        .map(|f| saved.join(f))
        .to_vec();
    (files, commit)
}

/// Logs `files` as job `repo-job`, fetches it and its source into `root`.
async fn fetch_repo_job(
    fake: &Fake,
    root: &Path,
    files: &[PathBuf],
) -> (
    launch_agent::sources::FetchedJob,
    anyhow::Result<launch_agent::sources::Source>,
) {
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    fake.log_job("repo-job", &files);
    let jobs = job_artifacts(fake);
    let job = format!("{ENTITY}/{PROJECT}/repo-job:latest");
    let fetched = jobs.fetch(&job, &root.join("unused")).await.unwrap();
    let spec = launch_agent::spec::LaunchSpec::from_value(json!({"job": job})).unwrap();
    let work = root.join("run");
    std::fs::create_dir(&work).unwrap();
    let source = launch_agent::sources::fetch(&spec, Some(&fetched), &work).await;
    (fetched, source)
}

#[tokio::test]
async fn a_repo_job_is_cloned_at_its_commit_with_its_diff_patch_applied() {
    let fake = Fake::start();
    let root = tempfile::tempdir().unwrap();
    let (files, commit) = repo_job_files(root.path(), None);
    let (fetched, source) = fetch_repo_job(&fake, root.path(), &files).await;
    assert_eq!(fetched.source_type, "repo");
    assert_eq!(
        fetched.git.as_ref().map(|(_, c)| c.as_str()),
        Some(commit.as_str())
    );
    assert_eq!(fetched.entrypoint, ["sh", "train.sh"].map(String::from));
    let source = source.unwrap();
    let clone = source.dir.unwrap();
    assert_eq!(
        std::fs::read_to_string(clone.join("train.sh")).unwrap(),
        "echo lr=0.01\n",
        "the run's change is applied to its commit"
    );
    assert_eq!(
        std::fs::read_to_string(clone.join("requirements.frozen.txt")).unwrap(),
        "numpy==2.1.0\n"
    );
    assert!(
        !clone.join("diff.patch").exists(),
        "the patch stays out of the build context"
    );
    assert_eq!(
        source.id,
        format!("{ENTITY}/{PROJECT}/repo-job:v0@{commit}")
    );
}

#[tokio::test]
async fn a_diff_patch_that_does_not_apply_to_the_commit_fails_saying_so() {
    let fake = Fake::start();
    let root = tempfile::tempdir().unwrap();
    let patch = "diff --git a/train.sh b/train.sh\n--- a/train.sh\n+++ b/train.sh\n@@ -1 +1 @@\n-echo epochs=3\n+echo epochs=5\n";
    let (files, _) = repo_job_files(root.path(), Some(patch));
    let (_, source) = fetch_repo_job(&fake, root.path(), &files).await;
    let message = format!("{:#}", source.unwrap_err());
    assert!(message.contains("diff.patch"), "{message}");
    assert!(message.contains("do not apply to its commit"), "{message}");
}
