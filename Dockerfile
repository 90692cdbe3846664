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

RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv ca-certificates ffmpeg libsndfile1 curl \
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
RUN pip install --upgrade pip && pip install -r requirements.txt

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
