FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml requirements.lock README.md ./
RUN pip install --no-cache-dir uv==0.13.9 && uv pip install --system --no-cache -r requirements.lock
COPY . .
RUN uv pip install --system --no-deps -e .
ENV SHIRONZI_HOME=/var/lib/shironzi
ENTRYPOINT []
