# ACE Music Studio on a CUDA GPU:
#   docker build -t ace-studio .
#   docker run --gpus all -p 8501:8501 -v ace-hf:/home/studio/.cache/huggingface \
#       -v ace-data:/data ace-studio
# BASE is an argument so the image can be smoke-built on a plain Debian/Ubuntu base too.
ARG BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# pedalboard's native module links libatomic, which slim bases leave out.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv ca-certificates ffmpeg libsndfile1 libatomic1 curl \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 studio \
    && mkdir -p /data /home/studio/.cache/huggingface \
    && chown -R studio:studio /data /home/studio/.cache

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/home/studio/.cache/huggingface \
    ACE_STUDIO_DATA_DIR=/data
RUN python3.11 -m venv /opt/venv

WORKDIR /app
COPY requirements.txt .
# Both empty by default, so a plain build installs everything from PyPI. For builds behind a
# TLS-intercepting proxy or with local wheels (the CPU torch wheel of the smoke test), mount a
# folder for this step only, e.g. `podman build -v ./inputs:/mnt:ro`, and name what is in it:
# EXTRA_WHEELS is a wheel folder pip looks in first, BUILD_CA a CA bundle for pip. Mounted, not
# copied, so neither the wheels nor the CA end up in a layer.
ARG EXTRA_WHEELS=
ARG BUILD_CA=
RUN if [ -n "$EXTRA_WHEELS" ]; then export PIP_FIND_LINKS="$EXTRA_WHEELS"; fi \
    && if [ -n "$BUILD_CA" ]; then export PIP_CERT="$BUILD_CA"; fi \
    && pip install --upgrade pip && pip install -r requirements.txt

COPY --chown=studio:studio Home.py ./
COPY --chown=studio:studio pages ./pages
COPY --chown=studio:studio core ./core
COPY --chown=studio:studio vendor ./vendor
COPY --chown=studio:studio .streamlit ./.streamlit

USER studio
VOLUME ["/home/studio/.cache/huggingface", "/data"]
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8501/_stcore/health || exit 1
CMD ["streamlit", "run", "Home.py", "--server.port=8501", "--server.address=0.0.0.0"]
