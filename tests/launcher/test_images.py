"""`pose images build`: the build the CI engineer's Dockerfiles expect, checked with a stand-in
engine (the real build runs in CI through scripts/build_image.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import images
from pose_workloads.errors import BadInput


class FakeBuildEngine:
    def __init__(self, messages):
        self.messages, self.calls, self.api = messages, [], self

    def build(self, **kwargs):
        from docker.utils.build import exclude_paths

        root = Path(kwargs["path"])
        patterns = [line.strip() for line in (root / ".dockerignore").read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
        kwargs["context"] = set(exclude_paths(str(root), patterns))  # what the SDK would send
        self.calls.append(kwargs)
        yield from self.messages


@pytest.fixture
def engine(monkeypatch):
    def make(messages):
        fake = FakeBuildEngine(messages)
        monkeypatch.setattr("launcher.runners.docker.connect", lambda timeout=60: fake)
        return fake
    return make


def test_build_stages_wheelhouse_and_ca_certs_inside_the_context(tmp_path, engine, capsys):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "torch-2.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "proxy.crt").write_text("cert")
    fake = engine([{"stream": "Step 1/9 : FROM base\n"}, {"stream": "Successfully built abc\n"}])
    assert images.build_image("pytorch", "pose-base:bookworm", tmp_path / "wheels", tmp_path / "certs") == 0
    (call,) = fake.calls
    assert call["dockerfile"] == "containers/pytorch.Dockerfile" and call["tag"] == images.image_tag("pytorch")
    args = call["buildargs"]
    assert args["BASE_IMAGE"] == "pose-base:bookworm"
    assert f"{args['WHEELHOUSE']}/torch-2.0-py3-none-any.whl" in call["context"]
    assert f"{args['CA_CERTS']}/proxy.crt" in call["context"]
    assert not (images.project_root() / args["WHEELHOUSE"]).exists()  # staging removed after
    assert "Successfully built abc" in capsys.readouterr().out


def test_build_without_inputs_keeps_the_dockerfile_defaults(engine):
    fake = engine([{"stream": "ok\n"}])
    assert images.build_image("pytorch") == 0
    assert fake.calls[0]["buildargs"] == {}


def test_failed_build_step_exits_1_with_the_engine_error(engine, capsys):
    engine([{"stream": "Step 3/9 : RUN pip install\n"}, {"error": "pip: no matching distribution for torch"}])
    assert images.build_image("pytorch") == 1
    assert "error: building pose-pytorch:" in capsys.readouterr().err


def test_unknown_image_kind_lists_the_valid_ones():
    with pytest.raises(BadInput, match="valid: pytorch, tensorrt"):
        images.dockerfile("jax")


def test_build_args_pass_through_and_may_be_empty(engine):
    fake = engine([{"stream": "ok\n"}])
    assert images.build_image("tensorrt", extra_args=["TENSORRT_PACKAGE=", "PIP_ARGS=--no-index"]) == 0
    assert fake.calls[0]["buildargs"] == {"TENSORRT_PACKAGE": "", "PIP_ARGS": "--no-index"}


def test_a_build_arg_without_a_value_is_refused_before_the_engine_is_asked(engine):
    fake = engine([{"stream": "ok\n"}])
    with pytest.raises(BadInput, match="KEY=VALUE"):
        images.build_image("tensorrt", extra_args=["TENSORRT_PACKAGE"])
    assert fake.calls == []


@pytest.mark.parametrize("kind", images.KINDS)
def test_both_dockerfiles_reset_ngcs_entrypoint(kind):
    lines = images.dockerfile(kind).read_text().splitlines()
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")):]
    assert "ENTRYPOINT []" in final_stage


def test_the_image_extra_is_bounded_and_admits_what_this_venv_runs():
    """NGC's constraints file pins the base image's packages; an unbounded requirement lets pip
    chase a new major against those pins. Every `local` requirement has an upper bound, and the
    versions tested here satisfy it."""
    from importlib.metadata import version

    import tomllib
    from packaging.requirements import Requirement

    pyproject = tomllib.loads((images.project_root() / "pyproject.toml").read_text())
    for text in pyproject["project"]["optional-dependencies"]["local"]:
        requirement = Requirement(text)
        assert any(spec.operator == "<" for spec in requirement.specifier), f"{text}: no upper bound"
        assert requirement.specifier.contains(version(requirement.name).split("+")[0]), text
