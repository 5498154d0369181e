FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY store store
COPY agents agents
COPY jobs jobs
COPY bot bot
RUN pip install --no-cache-dir .
ENV CRM_DATA_DIR=/data
VOLUME ["/data"]
CMD ["crm", "run"]
