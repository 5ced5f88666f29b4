"""The two images tasks run in, `pose-pytorch:<version>` and `pose-tensorrt:<version>`: their
names, building them from containers/*.Dockerfile, and listing them.

The build context is the source checkout (its .dockerignore keeps only the package sources and
the build inputs). An optional wheelhouse or CA-certificate folder is staged inside it, under
build/image-inputs/<id>/{wheelhouse,ca-certs} (removed after), and named by the build args
WHEELHOUSE and CA_CERTS; BASE_IMAGE is passed only when --base-image is given, so that the
Dockerfile's defaults (NVIDIA's images, empty input folders) apply otherwise.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pose_workloads
from pose_workloads.errors import BadInput

KINDS = ("pytorch", "tensorrt")

# Where build inputs are staged inside the context; the checkout's .dockerignore lets it through.
STAGING = Path("build") / "image-inputs"


def image_tag(kind: str) -> str:
    """`pose-<kind>:<pose_workloads version>`: the image a task of that kind runs in."""
    return f"pose-{kind}:{pose_workloads.__version__}"


def project_root() -> Path:
    """The source checkout holding containers/*.Dockerfile (this package's parent)."""
    return Path(__file__).resolve().parents[1]


def dockerfile(kind: str, root: Path | None = None) -> Path:
    if kind not in KINDS:
        raise BadInput(f"unknown image {kind!r}; valid: {', '.join(KINDS)}")
    path = (root or project_root()) / "containers" / f"{kind}.Dockerfile"
    if not path.is_file():
        raise BadInput(
            f"{path} not found; build images from a source checkout of pose (git clone), not an installed wheel")
    return path


def _check_dir(flag: str, path: Path | None) -> None:
    if path is not None and not path.is_dir():
        what = "wheels (*.whl)" if flag == "--wheelhouse" else "CA certificates (*.crt)"
        raise BadInput(f"{flag} {path}: not a directory; give a folder of {what}")


def _stage(source: Path, target: Path) -> None:
    # Hard links where possible: a wheelhouse holding torch is gigabytes.
    def link_or_copy(src: str, dst: str) -> None:
        try:
            Path(dst).hardlink_to(src)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link_or_copy, symlinks=False)


def build_args(base_image: str | None, staged: dict[str, str], extra: list[str] | None = None) -> dict[str, str]:
    """Docker build args: BASE_IMAGE when given, WHEELHOUSE / CA_CERTS for staged folders, then
    `--build-arg KEY=VALUE` ones (e.g. TENSORRT_PACKAGE= for a build without TensorRT)."""
    args = dict(staged)
    if base_image:
        args["BASE_IMAGE"] = base_image
    for item in extra or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise BadInput(f"--build-arg {item}: expected KEY=VALUE (VALUE may be empty), e.g. TENSORRT_PACKAGE=")
        args[key] = value
    return args


def build_image(kind: str, base_image: str | None = None, wheelhouse: Path | None = None,
                ca_certs: Path | None = None, tag: str | None = None, extra_args: list[str] | None = None) -> int:
    """`docker build -f containers/<kind>.Dockerfile .` through the SDK, streaming its output.
    Returns 0 on success, 1 when a build step fails."""
    from launcher.runners.docker import connect

    path = dockerfile(kind)
    build_args(None, {}, extra_args)  # a malformed --build-arg fails before the engine is asked
    _check_dir("--wheelhouse", wheelhouse)
    _check_dir("--ca-certs", ca_certs)
    tag = tag or image_tag(kind)
    client = connect()
    client.api.timeout = None  # minutes may pass between messages (pip installing torch)
    root = project_root()
    staging = root / STAGING / uuid.uuid4().hex[:12]
    staged = {}
    try:
        for arg, source, name in (("WHEELHOUSE", wheelhouse, "wheelhouse"), ("CA_CERTS", ca_certs, "ca-certs")):
            if source is not None:
                _stage(source, staging / name)
                staged[arg] = (staging / name).relative_to(root).as_posix()
        print(f"pose: building {tag} from {path.relative_to(root)}", file=sys.stderr, flush=True)
        stream = client.api.build(
            path=str(root), dockerfile=path.relative_to(root).as_posix(), tag=tag,
            buildargs=build_args(base_image, staged, extra_args), rm=True, forcerm=True, decode=True,
            labels={"pose.version": pose_workloads.__version__},
        )
        for message in stream:
            if "stream" in message:
                sys.stdout.write(message["stream"])
                sys.stdout.flush()
            elif "error" in message:
                print(f"error: building {tag}: {message['error'].strip()}", file=sys.stderr)
                return 1
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"pose: built {tag}", file=sys.stderr)
    return 0


@dataclass(frozen=True)
class ImageRow:
    tag: str
    image_id: str
    size_mb: int
    created: str
    current: bool  # the tag this version of pose runs


def list_images(client) -> list[ImageRow]:
    """Every local `pose-*` image tag, sorted by tag."""
    current = {image_tag(k) for k in KINDS}
    rows = []
    for kind in KINDS:
        for image in client.images.list(name=f"pose-{kind}"):
            for tag in image.tags:
                rows.append(ImageRow(tag, image.short_id.removeprefix("sha256:"),
                                     image.attrs.get("Size", 0) // 10**6,
                                     str(image.attrs.get("Created", ""))[:19], tag in current))
    return sorted(rows, key=lambda r: r.tag)
