# The PyTorch image: train, evaluate, inference, ONNX export, prune and dataset tasks.
#
#   pose images build pytorch [--base-image IMG] [--wheelhouse DIR] [--ca-certs DIR]
#
# or by hand, from the repository root (the build context):
#
#   docker build -f containers/pytorch.Dockerfile -t pose-pytorch:0.1.0 \
#       --build-arg BASE_IMAGE=... --build-arg WHEELHOUSE=... --build-arg CA_CERTS=... .
#
# Build args (directories are paths inside the build context):
#   BASE_IMAGE  an image with python3 >= 3.10 and pip. NVIDIA's PyTorch image by default: its
#               torch (built for its CUDA) is kept, never replaced by a PyPI wheel.
#   WHEELHOUSE  wheels to prefer over PyPI; a torch-*.whl here is installed when the base image
#               has no torch (CI: the CPU wheel). Default: an empty directory.
#   CA_CERTS    extra CA certificates (*.crt), e.g. an HTTPS proxy's; trusted by apt, pip and
#               Python in the build and in the image. Default: an empty directory.
#   PIP_ARGS    extra `pip install` flags, e.g. "--no-index" to build offline from WHEELHOUSE.
#
# The workload starts as `python -m pose_workloads <args>` in /workspace: NGC's entrypoint (a
# banner script that wraps every command) is reset, so the command is the process and its exit
# code and signals are the task's.

ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.01-py3

# The build inputs, each in a stage of its own: their paths are often temporary (pose stages them
# under build/image-inputs/<id>/), and an ARG in scope of a RUN is part of that RUN's cache key,
# so naming them only here keeps the cache keyed on their contents.
FROM scratch AS ca_certs
ARG CA_CERTS=containers/ca-certs
COPY ${CA_CERTS}/ /

FROM scratch AS wheelhouse
ARG WHEELHOUSE=containers/wheelhouse
COPY ${WHEELHOUSE}/ /

FROM ${BASE_IMAGE} AS base
COPY --from=ca_certs / /usr/local/share/ca-certificates/pose-extra/
RUN if ls /usr/local/share/ca-certificates/pose-extra/*.crt >/dev/null 2>&1; then update-ca-certificates; fi
# A venv because Debian/Ubuntu's pip refuses system installs (PEP 668); --system-site-packages
# so that the base image's torch (and TensorRT) stay visible and are not reinstalled.
ENV VIRTUAL_ENV=/opt/pose-venv \
    PATH=/opt/pose-venv/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1

# Dependencies only: this stage holds the wheelhouse, which the final image never copies.
FROM base AS deps
ARG PIP_ARGS=
COPY --from=wheelhouse / /tmp/wheelhouse/
# Pin the torch we keep (the base image's, or the wheelhouse's) so that no requirement can
# pull another one from PyPI; pip still installs that torch's own missing dependencies.
# find_spec, not import: importing a CUDA build on a build machine without a GPU driver may fail.
RUN set -eu; \
    python3 -m venv --system-site-packages --without-pip "$VIRTUAL_ENV"; \
    python -m pip --version; \
    if ! python -c "import importlib.util as u; exit(u.find_spec('torch') is None)" && ls /tmp/wheelhouse/torch-*.whl >/dev/null 2>&1; then \
        python -m pip install --no-deps --no-index --find-links /tmp/wheelhouse torch; \
    fi; \
    python -c "from importlib.metadata import version; print('torch==' + version('torch'))" \
        >/tmp/constraints.txt 2>/dev/null || true; \
    cat /tmp/constraints.txt
# pyproject.toml alone decides the dependencies: editing the sources (or the README) does not
# re-run this layer. The project is installed here as an empty package and removed again.
COPY pyproject.toml /tmp/pose-deps/
RUN set -eu; \
    mkdir -p /tmp/pose-deps/containers; \
    touch /tmp/pose-deps/README.md; \
    pip_install="python -m pip install --find-links /tmp/wheelhouse -c /tmp/constraints.txt $PIP_ARGS"; \
    $pip_install "setuptools>=64" wheel; \
    $pip_install --no-build-isolation "/tmp/pose-deps[local]"; \
    python -m pip uninstall -y pose

FROM base
# jpegtran (libjpeg-turbo-progs) for `pose dataset index_jpegs`. Where apt cannot reach a mirror
# the image is built without it, and that task says what is missing.
RUN command -v jpegtran >/dev/null || { apt-get -o Acquire::Retries=0 -o Acquire::http::Timeout=20 update -q \
        && apt-get install -y -q --no-install-recommends libjpeg-turbo-progs && rm -rf /var/lib/apt/lists/*; } \
    || echo "warning: libjpeg-turbo-progs not installed: pose dataset index_jpegs will not run in this image"
COPY --from=deps /opt/pose-venv /opt/pose-venv
COPY pyproject.toml README.md* /opt/pose-src/
COPY launcher/ /opt/pose-src/launcher/
COPY containers/pose_workloads/ /opt/pose-src/containers/pose_workloads/
RUN python -m pip install --no-deps --no-build-isolation /opt/pose-src \
    && rm -rf /opt/pose-src/build \
    && python -c "import pose_workloads, torch, cv2, pycocotools; print('torch', torch.__version__)"
# Tasks run as the invoking user (not root) with HOME set by the launcher; any user may write here.
RUN mkdir -p /workspace && chmod 1777 /workspace
WORKDIR /workspace
ENTRYPOINT []
