#!/usr/bin/env python3
"""Fetch a job artifact from the FAKE W&B server exactly as the REAL Python launch agent does.

Run with the venv's python (setup.sh) and WANDB_BASE_URL / WANDB_API_KEY pointing at the fake:

    WANDB_BASE_URL=http://127.0.0.1:PORT WANDB_API_KEY=KEY "$VENV/bin/python" \
        tests/wandb_fake/fetch_job_with_wandb.py ENTITY/PROJECT/NAME:ALIAS OUT_DIR

Does what wandb/sdk/launch/_project_spec.py LaunchProject._fetch_job does:
`wandb.apis.public.Api().job(name, path=tmp)` (downloads the job artifact) and then
`job.configure_launch_project(project)`, which for source_type "artifact" fetches the code
artifact named in wandb-job.json and downloads it into project.project_dir. A stub stands
in for LaunchProject (only the setters the Job calls). Prints one JSON object: the job
dir, the project dir, wandb-job.json, and what configure_launch_project set.
"""

from __future__ import annotations

import json
import os
import sys

import wandb


class StubLaunchProject:
    def __init__(self, project_dir: str) -> None:
        self.project_dir = project_dir
        self.python_version = None
        self.docker_image = None
        self.calls: dict = {}

    def __getattr__(self, name: str):
        if name.startswith("set_"):
            return lambda v: self.calls.__setitem__(name[4:], v)
        raise AttributeError(name)


def main() -> int:
    name, out = sys.argv[1], sys.argv[2]
    job_dir = os.path.join(out, "job")
    project_dir = os.path.join(out, "project")
    os.makedirs(job_dir, exist_ok=True)
    os.makedirs(project_dir, exist_ok=True)
    job = wandb.apis.public.Api().job(name, path=job_dir)
    proj = StubLaunchProject(project_dir)
    job.configure_launch_project(proj)
    json.dump({"job_dir": job_dir, "project_dir": project_dir,
               "wandb_job": json.load(open(os.path.join(job_dir, "wandb-job.json"))),
               "job_artifact": job._job_artifact.qualified_name,
               "python_version": proj.python_version, "docker_image": proj.docker_image,
               "set": proj.calls}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
