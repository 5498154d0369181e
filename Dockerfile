FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY store store
COPY agents agents
COPY jobs jobs
COPY bot bot
RUN pip install --no-cache-dir .
# The app never needs root: a fixed uid owns only the data volume.
RUN useradd --system --uid 10001 --home-dir /data --no-create-home crm \
    && mkdir -p /data && chown crm:crm /data
USER crm
# HOST: listen on the container's interfaces, so the published port reaches the web app.
# CRM_CONSOLE=serve: a container's stdin is closed; end of input closes the console, not the server.
ENV CRM_DATA_DIR=/data HOST=0.0.0.0 PORT=8000 CRM_CONSOLE=serve ORT_DISABLE_TELEMETRY=1
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["crm", "run"]
